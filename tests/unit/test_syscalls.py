"""The syscall-level path observer on real processes of this host: tiny C
programs compiled with gcc, a shell and python3, run under
slimmer.sensor.syscalls' tracer through init.TracedSupervisor.

Each traced run happens in a driver process that behaves like the sensor:
it is the reaper of orphans (PR_SET_CHILD_SUBREAPER, as PID 1 is), it has
busy Python threads (as the sensor's inotify reader and sampler), and it
reports the exit status, the recorded paths and any child left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slimmer.sensor import syscalls
from slimmer.sensor.budget import RECORD_BYTES, ByteBudget, path_cost
from slimmer.sensor.syscalls import (
    AUDIT_ARCH_AARCH64,
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    MACHINES,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRACE,
    SECCOMP_RET_USER_NOTIF,
    SPEC_INDEX,
    SPECS,
    SYSCALL_NUMBERS,
    X32_SYSCALL_BIT,
    Abi,
    PathAction,
    PathLog,
    Refusal,
    call_codes,
    clean_absolute,
    join_physical,
    may_return,
    notify_supported,
    probe_support,
    seccomp_filter,
)
from tests.conftest import REPO

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IS_ROOT = os.geteuid() == 0
X86_64 = os.uname().machine == "x86_64"
NOBODY = 65534

needs_root = pytest.mark.skipif(not IS_ROOT, reason="drops privileges: run as root")
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="x86_64 machine code")


@pytest.fixture(scope="module", autouse=True)
def _tracing_works() -> None:
    if not shutil.which("gcc"):
        pytest.skip("needs gcc")
    support = probe_support()
    if not support.available:
        message = f"ptrace + seccomp unavailable here: {support.refusal} {support.detail}"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture
def base() -> Iterator[Path]:
    """A world-readable scratch dir (pytest's tmp_path is 0700, and some
    apps here run as uid 65534)."""
    directory = Path(tempfile.mkdtemp(prefix="slim-syscalls-", dir="/tmp"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def compile_c(base: Path, name: str, source: str, *flags: str) -> Path:
    (base / f"{name}.c").write_text(textwrap.dedent(source))
    binary = base / name
    subprocess.run(
        ["gcc", "-O1", "-o", str(binary), str(base / f"{name}.c"), *flags],
        check=True,
        capture_output=True,
    )
    binary.chmod(0o755)
    return binary


# --- the driver: a sensor-like process around TracedSupervisor -----------------

DRIVER = """
import ctypes, json, os, signal, sys, threading, time
from slimmer.sensor.init import TracedSupervisor
from slimmer.sensor.seal import make_undumpable
from slimmer.sensor.syscalls import PathLog, SyscallTracer
from slimmer.sensor.users import AppUser

request = json.loads(sys.argv[1])
make_undumpable()  # as the sensor is
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come here

stop = threading.Event()
def busy():  # the sensor's reader and sampler threads take the GIL too
    while not stop.wait(0.002):
        sum(range(2000))
for _ in range(2):
    threading.Thread(target=busy, daemon=True).start()

class Tracer(SyscallTracer):
    \"\"\"With "hold": once the app names that path, a signal reaches it while
    the tracer holds the received call, which it answers 0.2 s later.\"\"\"

    held = False

    def _on_notification(self, tid, number, arch, args):
        let_run = super()._on_notification(tid, number, arch, args)
        hold = request.get("hold")
        if hold and not self.held and any(k[0] == hold.encode() for k in self.log.first):
            self.held = True
            os.kill(tid, signal.SIGALRM)
            time.sleep(0.2)
        return let_run

options = {"killable_waits": False} if not request["killable"] else {}
tracer = Tracer(
    PathLog(),
    use_syscall_info=request["syscall_info"],
    use_proc_mem=request["proc_mem"],
    use_notify=request["notify"],
    **options,
)
supervisor = TracedSupervisor(signal.SIGTERM, 5.0, tracer)
user = AppUser(request["uid"], request["gid"], (), None, "/")
argv = request["argv"]
pid = supervisor.start(argv[0], argv, request["env"], request["cwd"], user)
print(json.dumps({"app_pid": pid}), flush=True)
app_exit = supervisor.wait()
supervisor.reap_orphans(request["linger"])
stop.set()
me = str(os.getpid())
left = []
for name in os.listdir("/proc"):
    try:
        with open(f"/proc/{name}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if fields[1] == me:
        left.append({"pid": int(name), "state": fields[0]})
print(json.dumps({
    "status": app_exit.status,
    "signal": app_exit.signal,
    "left": left,
    "log": tracer.log.to_json(),
    "stats": vars(tracer.stats),
}), flush=True)
"""


@dataclass(frozen=True)
class TracedRun:
    status: int
    signal: int | None
    left: list[dict[str, object]]
    records: set[tuple[str, str, bool, bool]]  # path, action, follow, existed
    log: dict[str, object]
    stats: dict[str, int]
    output: str

    def under(self, directory: Path) -> set[tuple[str, str, bool, bool]]:
        prefix = f"{directory}/"
        return {r for r in self.records if r[0].startswith(prefix) or r[0] == str(directory)}

    def paths(self, action: str) -> set[str]:
        return {r[0] for r in self.records if r[1] == action}


def traced(
    argv: list[str],
    *,
    cwd: str = "/",
    uid: int = 0,
    linger: float = 0.3,
    syscall_info: bool = True,
    proc_mem: bool = True,
    notify: bool = True,
    killable: bool = True,
    without_ptrace_capability: bool = False,
    own_pid_namespace: bool = False,
    env: dict[str, str] | None = None,
    hold: str | None = None,
) -> TracedRun:
    if not IS_ROOT:
        pytest.skip("the driver starts apps as a given user: run as root")
    request = {
        "argv": argv,
        "cwd": cwd,
        "uid": uid,
        "gid": uid,
        "linger": linger,
        "syscall_info": syscall_info,
        "proc_mem": proc_mem,
        "notify": notify,
        "killable": killable,
        "hold": hold,
        "env": env if env is not None else {"PATH": "/usr/bin:/bin"},
    }
    command = [sys.executable, "-c", DRIVER, json.dumps(request)]
    if without_ptrace_capability:
        # as in a container: root, but no CAP_SYS_PTRACE
        command = ["setpriv", "--bounding-set", "-sys_ptrace", *command]
    if own_pid_namespace:
        # as in a container: the driver is PID 1, and no other process takes pids
        command = ["unshare", "--pid", "--fork", "--mount-proc", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=str(REPO), check=False
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and len(lines) >= 2, result.stdout + result.stderr
    report = json.loads(lines[-1])
    records = {(p["path"], p["action"], p["follow"], p["existed"]) for p in report["log"]["paths"]}
    other = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("{"))
    return TracedRun(
        report["status"],
        report["signal"],
        report["left"],
        records,
        report["log"],
        report["stats"],
        other,
    )


# --- what an app names -------------------------------------------------------------

PATHS_PROGRAM = """
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <pthread.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/stat.h>
    #include <sys/wait.h>
    #include <unistd.h>

    static char base[2048];

    static void at(char *out, const char *name) { snprintf(out, 4096, "%s/%s", base, name); }

    static void *thread_main(void *number) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/thread-%ld", base, (long)number);
        stat(path, &st);
        return NULL;
    }

    int main(int argc, char **argv) {
        char path[4096], other[4096], buffer[256];
        struct stat st;
        int fd;
        strcpy(base, argv[1]);
        if (argc > 2) {  /* the exec'd child */
            at(path, "child-missing");
            stat(path, &st);
            at(path, "present");
            access(path, R_OK);
            return 0;
        }
        stat("/etc/passwd", &st);
        access("/nonexistent-slim-syscalls", F_OK);
        at(path, "link");
        readlink(path, buffer, sizeof buffer);
        at(path, "dirlink/inside");
        fd = open(path, O_RDONLY);
        if (fd >= 0) close(fd);
        stat("relative-missing", &st);  /* the cwd is base */
        fd = open(base, O_RDONLY | O_DIRECTORY);
        fstatat(fd, "present", &st, AT_SYMLINK_NOFOLLOW);
        fstatat(fd, "", &st, AT_EMPTY_PATH);  /* fstat: names no path */
        close(fd);
        at(path, "new");
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        close(fd);
        at(other, "old");
        rename(path, other);  /* a new file replaces an old one */
        pthread_t threads[4];
        for (long i = 0; i < 4; i++) pthread_create(&threads[i], NULL, thread_main, (void *)i);
        for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
        pid_t pid = fork();
        if (pid == 0) {
            execl(argv[0], argv[0], base, "child", (char *)NULL);
            _exit(127);
        }
        int status;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 7 : 1;
    }
"""


def paths_program(base: Path) -> Path:
    binary = compile_c(base, "paths", PATHS_PROGRAM, "-pthread")
    (base / "present").write_text("here\n")
    (base / "old").write_text("old\n")
    (base / "link").symlink_to("present")
    (base / "realdir").mkdir()
    (base / "realdir/inside").write_text("inside\n")
    (base / "dirlink").symlink_to("realdir")
    return binary


def expected_paths(base: Path, binary: Path) -> set[tuple[str, str, bool, bool]]:
    b = str(base)
    return {
        (str(binary), "exec", True, True),
        (f"{b}/link", "readlink", False, True),
        (f"{b}/dirlink/inside", "open", True, True),  # through the directory symlink
        (f"{b}/relative-missing", "stat", True, False),
        (b, "open", True, True),  # the dirfd for fstatat
        (f"{b}/present", "stat", False, True),
        (f"{b}/new", "create", True, False),
        (f"{b}/new", "rename-from", False, True),
        (f"{b}/old", "rename-to", False, True),
        *((f"{b}/thread-{i}", "stat", True, False) for i in range(4)),
        (f"{b}/child-missing", "stat", True, False),
        (f"{b}/present", "access", True, True),
    }


def assert_paths_program(run: TracedRun, base: Path, binary: Path) -> None:
    assert (run.status, run.signal) == (7, None)
    assert run.under(base) == expected_paths(base, binary)
    assert ("/etc/passwd", "stat", True, True) in run.records
    assert ("/nonexistent-slim-syscalls", "access", True, False) in run.records
    assert run.left == []
    assert run.log["complete"] and run.log["unresolved"] == 0


def test_stat_access_readlink_symlinked_dir_threads_fork_exec_rename(base: Path) -> None:
    binary = paths_program(base)
    run = traced([str(binary), str(base)], cwd=str(base))
    assert_paths_program(run, base, binary)
    # the dynamic loader's lookups are seen too
    assert any(r[0] == "/etc/ld.so.cache" and r[1] == "open" for r in run.records)
    if notify_supported(os.uname().release):
        # path calls came on the listener; chdir and set*id still stop
        assert run.stats["notifications"] > 0


@needs_x86_64
def test_ptrace_stops_alone_record_the_same(base: Path) -> None:
    """Kernels before 5.5, or no seccomp(2): every path call is a ptrace stop."""
    binary = paths_program(base)
    run = traced([str(binary), str(base)], cwd=str(base), notify=False)
    assert_paths_program(run, base, binary)
    assert run.stats["notifications"] == 0 and run.stats["stops"] > 0


@needs_x86_64
def test_the_registers_fallback_records_the_same(base: Path) -> None:
    """Kernels before 5.3 lack PTRACE_GET_SYSCALL_INFO: GETREGS instead."""
    binary = paths_program(base)
    run = traced([str(binary), str(base)], cwd=str(base), syscall_info=False, notify=False)
    assert_paths_program(run, base, binary)


def test_reading_memory_word_by_word_records_the_same(base: Path) -> None:
    """Where /proc/<tid>/mem is refused: PTRACE_PEEKDATA."""
    binary = paths_program(base)
    run = traced([str(binary), str(base)], cwd=str(base), proc_mem=False, notify=False)
    assert_paths_program(run, base, binary)
    assert run.stats["peek_reads"] > 0 and run.stats["mem_opens"] == 0


@needs_root
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
def test_as_nobody_under_a_tracer_without_cap_sys_ptrace(base: Path) -> None:
    """As in a container: the tracer is root without CAP_SYS_PTRACE and the
    app runs as 65534, so /proc/<tid>/mem and the cwd are opened with the
    tracee's fs uid."""
    binary = paths_program(base)
    base.chmod(0o777)
    run = traced(
        [str(binary), str(base)], cwd=str(base), uid=NOBODY, without_ptrace_capability=True
    )
    assert_paths_program(run, base, binary)
    assert run.stats["mem_opens"] > 0 and run.stats["fsuid_switches"] > 0
    assert (base / "old").stat().st_uid == NOBODY  # it really ran as nobody


CWD_PROGRAM = """
    #include <pthread.h>
    #include <sys/stat.h>
    #include <sys/wait.h>
    #include <unistd.h>
    static void *move(void *where) { chdir((const char *)where); return NULL; }
    int main(int argc, char **argv) {
        struct stat st;
        stat("before", &st);                   /* in base, the start cwd */
        if (fork() == 0) {                      /* a child's chdir is its own */
            chdir(argv[1]);
            stat("in-child", &st);
            _exit(0);
        }
        wait(NULL);
        stat("after-child", &st);               /* still in base */
        pthread_t thread;
        pthread_create(&thread, NULL, move, argv[1]);
        pthread_join(thread, NULL);
        stat("after-thread", &st);              /* threads share the cwd */
        int fd = open(argv[2], 0);
        fchdir(fd);
        stat("after-fchdir", &st);
        chdir("..");
        stat("after-dotdot", &st);
        return 0;
    }
"""


def test_the_cwd_follows_chdir_fchdir_threads_and_forks(base: Path) -> None:
    binary = compile_c(base, "cwd", CWD_PROGRAM, "-pthread")
    (base / "sub").mkdir()
    (base / "other").mkdir()
    run = traced([str(binary), f"{base}/sub", f"{base}/other"], cwd=str(base))
    assert run.status == 0
    stats = {r[0] for r in run.records if r[1] == "stat"}
    assert {
        f"{base}/before",
        f"{base}/sub/in-child",
        f"{base}/after-child",
        f"{base}/sub/after-thread",
        f"{base}/other/after-fchdir",
        f"{base}/after-dotdot",
    } == {p for p in stats if p.startswith(str(base))}
    assert (f"{base}/sub", "chdir", True, True) in run.records


DROPPER_PROGRAM = """
    #include <fcntl.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        struct stat st;
        if (setgid(65534) || setuid(65534)) { perror("drop"); return 2; }
        if (chdir(argv[1])) return 3;
        stat("after-drop-relative", &st);
        stat("/nonexistent-slim-after-drop", &st);
        int fd = open(argv[1], O_RDONLY | O_DIRECTORY);
        fstatat(fd, "present", &st, 0);
        return 0;
    }
"""


@needs_root
@needs_x86_64
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
@pytest.mark.parametrize(
    ("notify", "killable"),
    [(True, True), (True, False), (False, True)],
    ids=["listener", "listener-interruptible", "ptrace-stops"],
)
def test_a_server_dropping_privileges_stays_observable(
    base: Path, notify: bool, killable: bool
) -> None:
    """A root process that setuid()s (a server's workers) turns
    non-dumpable; the tracer makes it dumpable again to read its paths.
    On a listener it seizes the process at its set*id for that."""
    binary = compile_c(base, "dropper", DROPPER_PROGRAM)
    (base / "present").write_text("x")
    run = traced(
        [str(binary), str(base)], without_ptrace_capability=True, notify=notify, killable=killable
    )
    assert run.status == 0
    assert run.log["unresolved"] == 0
    if notify and notify_supported(os.uname().release):
        assert run.stats["attaches"] == 1 and run.stats["stops"] == 0
    assert run.under(base) == {
        (str(binary), "exec", True, True),
        (str(base), "chdir", True, True),
        (str(base), "open", True, True),
        (f"{base}/after-drop-relative", "stat", True, False),
        (f"{base}/present", "stat", True, True),
    }
    assert ("/nonexistent-slim-after-drop", "stat", True, False) in run.records


WORKERS_PROGRAM = """
    #define _GNU_SOURCE
    #include <pthread.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <sys/wait.h>
    #include <unistd.h>
    static pthread_barrier_t dropped;
    static void *helper(void *worker) {    /* glibc makes it setuid() too */
        struct stat st;
        char name[64];
        pthread_barrier_wait(&dropped);
        snprintf(name, sizeof name, "thread-after-drop-%d", *(int *)worker);
        stat(name, &st);
        return NULL;
    }
    static int worker(int n) {
        struct stat st;
        char name[64];
        pthread_t thread;
        pthread_barrier_init(&dropped, NULL, 2);
        pthread_create(&thread, NULL, helper, &n);
        if (setgid(65534) || setuid(65534)) { perror("drop"); return 2; }
        pthread_barrier_wait(&dropped);
        pthread_join(thread, NULL);
        snprintf(name, sizeof name, "worker-after-drop-%d", n);
        stat(name, &st);
        pid_t child = fork();                   /* a dropped worker's child */
        if (child == 0) {
            snprintf(name, sizeof name, "grandchild-%d", n);
            stat(name, &st);
            execl("/bin/true", "true", (char *)NULL);
            _exit(3);
        }
        int status;
        waitpid(child, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 4;
    }
    int main(int argc, char **argv) {
        if (chdir(argv[1])) return 5;
        for (int n = 0; n < 2; n++)
            if (fork() == 0) _exit(worker(n));
        int status, failed = 0;
        while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status);
        struct stat st;
        stat("parent-after-workers", &st);
        return failed;
    }
"""


@needs_root
@needs_x86_64
@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
@pytest.mark.parametrize("killable", [True, False], ids=["killable", "interruptible"])
def test_workers_with_threads_that_drop_privileges_and_fork(base: Path, killable: bool) -> None:
    """nginx-like: a root parent forks workers that setuid(); glibc has
    every thread make the call; a worker then forks. Every relative name
    of every one of them resolves."""
    binary = compile_c(base, "workers", WORKERS_PROGRAM, "-pthread")
    base.chmod(0o755)
    run = traced([str(binary), str(base)], without_ptrace_capability=True, killable=killable)
    assert run.status == 0
    stats = {r[0] for r in run.records if r[1] == "stat" and r[0].startswith(f"{base}/")}
    assert stats == {
        f"{base}/{name}"
        for name in (
            "worker-after-drop-0",
            "worker-after-drop-1",
            "grandchild-0",
            "grandchild-1",
            "parent-after-workers",
            "thread-after-drop-0",
            "thread-after-drop-1",
        )
    }
    assert "/bin/true" in run.paths("exec")
    assert run.log["unresolved"] == 0
    if notify_supported(os.uname().release):
        assert run.stats["attaches"] >= 2  # a worker's threads, each at its own call


REUSE_PROGRAM = """
    #define _GNU_SOURCE
    #include <fcntl.h>
    #include <pthread.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/stat.h>
    #include <sys/wait.h>
    #include <unistd.h>
    static char name[64];
    static pid_t thread_tid;
    static void *look(void *unused) {
        struct stat st;
        strcpy(name, "/slim-reuse-the-old-view");
        stat(name, &st);                  /* the tracer opens this tid's memory */
        thread_tid = gettid();
        return NULL;
    }
    int main(void) {
        pthread_t thread;
        pthread_create(&thread, NULL, look, NULL);
        pthread_join(thread, NULL);       /* the tid is free; this memory lives on */
        for (int i = 0; i < 3; i++) {     /* others take the next pids */
            if (fork() == 0) _exit(0);
            wait(NULL);
        }
        /* the tid is free once its task is released (a busy tracer may reap
           it late): wait for that, at most 10 s */
        char entry[64];
        snprintf(entry, sizeof entry, "/proc/%d", thread_tid);
        for (int i = 0; i < 10000 && access(entry, F_OK) == 0; i++) usleep(1000);
        /* then the pids wrap, at once here: the next pid is the tid */
        char last[32];
        int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
        int size = snprintf(last, sizeof last, "%d", thread_tid - 1);
        if (fd < 0 || write(fd, last, size) != size) return 8;
        close(fd);
        pid_t pid = fork();
        if (pid == 0) {
            struct stat st;
            strcpy(name, "/slim-reuse-the-new-view");
            stat(name, &st);
            _exit(getpid() == thread_tid ? 0 : 9);
        }
        int status;
        waitpid(pid, &status, 0);
        return WEXITSTATUS(status);
    }
"""


@needs_root
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare")
@pytest.mark.skipif(
    not Path("/proc/sys/kernel/ns_last_pid").exists(), reason="no ns_last_pid in this kernel"
)
def test_a_reused_tid_is_read_afresh(base: Path) -> None:
    """On a listener the tracer hears of no exits: a thread's tid, reused
    by a new process once the pids wrapped, must not be read through the
    memory file the tracer opened for the thread. (The app sets the pid
    cursor back, in a pid namespace of its own, as a wrap would.)"""
    binary = compile_c(base, "reuse", REUSE_PROGRAM, "-pthread")
    run = traced([str(binary)], own_pid_namespace=True)
    assert run.status == 0  # the child got the thread's tid
    assert "/slim-reuse-the-new-view" in run.paths("stat")
    assert "/proc/sys/kernel/ns_last_pid" in run.paths("write")


def test_a_shell_job(base: Path) -> None:
    run = traced(["/bin/sh", "-c", "ls -l /etc/passwd >/dev/null; test -x /nonexistent"])
    assert (run.status, run.signal) == (1, None)  # test -x failed
    assert ("/etc/passwd", "stat", False, True) in run.records  # ls -l: lstat
    assert any(r[0] == "/nonexistent" and not r[3] for r in run.records)
    assert "/bin/sh" in run.paths("exec")
    assert any(p.endswith("/ls") for p in run.paths("exec"))
    assert run.left == []


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs /usr/bin/python3")
def test_python_path_exists(base: Path) -> None:
    (base / "there").write_text("x")
    code = f"import os; os.path.exists('{base}/missing'); os.path.exists('{base}/there')"
    run = traced(["/usr/bin/python3", "-c", code])
    assert run.status == 0
    assert run.under(base) == {
        (f"{base}/missing", "stat", True, False),
        (f"{base}/there", "stat", True, True),
    }
    assert "/usr/bin/python3" in run.paths("exec")


# --- signals, statuses, orphans ------------------------------------------------------------

JOBS_PROGRAM = """
    #include <signal.h>
    #include <stdio.h>
    #include <sys/wait.h>
    #include <unistd.h>
    static volatile sig_atomic_t usr1, chld;
    static void on_usr1(int n) { (void)n; usr1++; }
    static void on_chld(int n) { (void)n; chld++; }
    int main(void) {
        signal(SIGUSR1, on_usr1);
        signal(SIGCHLD, on_chld);
        setvbuf(stdout, NULL, _IONBF, 0);
        pid_t pid = fork();
        if (pid == 0) {
            raise(SIGSTOP);
            usleep(200000);  /* so that the parent sees it continued before it exits */
            _exit(3);
        }
        int status;
        waitpid(pid, &status, WUNTRACED);
        printf("child stopped=%d sig=%d\\n", WIFSTOPPED(status), WSTOPSIG(status));
        usleep(100000);
        if (waitpid(pid, &status, WNOHANG) == 0) printf("still stopped\\n");
        kill(pid, SIGCONT);
        waitpid(pid, &status, WCONTINUED);
        printf("child continued=%d\\n", WIFCONTINUED(status));
        waitpid(pid, &status, 0);
        printf("child exited=%d\\n", WEXITSTATUS(status));
        raise(SIGUSR1);
        printf("usr1=%d chld>0=%d\\n", (int)usr1, chld > 0);
        kill(getpid(), SIGTERM);
        return 0;
    }
"""


def test_job_control_and_signals_behave_as_untraced(base: Path) -> None:
    binary = compile_c(base, "jobs", JOBS_PROGRAM)
    plain = subprocess.run([str(binary)], capture_output=True, text=True, timeout=30)
    run = traced([str(binary)])
    assert plain.returncode == -signal.SIGTERM
    assert plain.stdout == (
        "child stopped=1 sig=19\nstill stopped\nchild continued=1\n"
        "child exited=3\nusr1=1 chld>0=1\n"
    )
    assert run.output + "\n" == plain.stdout
    assert (run.status, run.signal) == (128 + signal.SIGTERM, signal.SIGTERM)
    assert run.left == []


ORPHAN_PROGRAM = """
    #include <stdlib.h>
    #include <sys/stat.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        if (fork() == 0) {  /* outlives its parent: PID 1 (here the driver) inherits it */
            struct stat st;
            usleep(300000);
            stat(argv[1], &st);
            _exit(0);
        }
        return 5;
    }
"""


def test_orphans_stay_traced_and_are_reaped(base: Path) -> None:
    binary = compile_c(base, "orphan", ORPHAN_PROGRAM)
    run = traced([str(binary), f"{base}/orphan-stat"], linger=1.5)
    assert run.status == 5
    assert (f"{base}/orphan-stat", "stat", True, False) in run.records
    assert run.left == []  # no zombie, nothing running


def test_a_killed_app_reports_128_plus_the_signal(base: Path) -> None:
    binary = compile_c(
        base,
        "segv",
        "#include <signal.h>\nint main(void) { raise(SIGSEGV); return 0; }\n",
    )
    run = traced([str(binary)])
    assert (run.status, run.signal) == (128 + signal.SIGSEGV, signal.SIGSEGV)
    assert run.left == []


def test_the_app_dies_with_its_tracer(base: Path) -> None:
    """PTRACE_O_EXITKILL: a traced app must not hang (or run on with a
    filter that fails its path calls) once the tracer is gone."""
    binary = compile_c(
        base,
        "sleeper",
        '#include <unistd.h>\nint main(void) { for (;;) { access("/", 0); usleep(10000); } }\n',
    )
    request = {
        "argv": [str(binary)],
        "cwd": "/",
        "uid": os.geteuid(),
        "gid": os.getegid(),
        "linger": 0,
        "syscall_info": True,
        "proc_mem": True,
        "notify": True,
        "killable": True,
        "env": {},
    }
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(request)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    assert driver.stdout is not None
    app_pid = json.loads(driver.stdout.readline())["app_pid"]
    time.sleep(0.5)  # well into its loop (its loader's calls would fail without a tracer)
    assert _alive(app_pid)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(app_pid):
        time.sleep(0.05)
    assert not _alive(app_pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- signals while a call waits ---------------------------------------------------

INTERRUPTED_PROGRAM = """
    #include <errno.h>
    #include <signal.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/stat.h>

    static void on_alarm(int number) { (void)number; }

    int main(int argc, char **argv) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = on_alarm;  /* no SA_RESTART */
        sigaction(SIGALRM, &action, NULL);
        struct stat st;
        int failed = stat(argv[1], &st);
        printf("%s\\n", !failed ? "ok" : errno == EINTR ? "EINTR" : strerror(errno));
        return failed;
    }
"""


@pytest.mark.skipif(
    not notify_supported(os.uname().release), reason="no seccomp listener on this kernel"
)
@pytest.mark.parametrize("killable", [True, False], ids=["killable", "interruptible"])
def test_a_signal_while_the_sensor_holds_a_call(base: Path, killable: bool) -> None:
    """A signal for a handler without SA_RESTART reaches the app while the
    tracer holds its received call: where the listener's received calls
    wait killable (Linux >= 5.19, what the launcher asks for) the call
    completes as untraced; an interruptible wait fails it with EINTR."""
    binary = compile_c(base, "interrupted", INTERRUPTED_PROGRAM)
    (base / "held").write_text("x")
    run = traced([str(binary), str(base / "held")], killable=killable, hold=str(base / "held"))
    if killable:
        assert (run.status, run.output.strip()) == (0, "ok")
    else:
        assert run.output.strip() == "EINTR"


# --- the app's own seccomp filters --------------------------------------------------

OWN_FILTERS_PROGRAM = """
    #define _GNU_SOURCE
    #include <linux/filter.h>
    #include <linux/seccomp.h>
    #include <stddef.h>
    #include <stdio.h>
    #include <sys/prctl.h>
    #include <sys/syscall.h>
    #include <unistd.h>

    /* uname(2) returns `action`, everything else is allowed */
    static int install(int with_prctl, unsigned action) {
        struct sock_filter code[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, action),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog program = {sizeof code / sizeof code[0], code};
        if (with_prctl)
            return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0);
        return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
    }

    int main(void) {
        int failed = 0;
        failed |= install(0, SECCOMP_RET_TRACE) != 0;                /* counted */
        failed |= install(1, SECCOMP_RET_TRACE | 7) != 0;            /* counted */
        failed |= install(0, SECCOMP_RET_ERRNO | 1) != 0;            /* not: ERRNO outranks */
        failed |= prctl(PR_SET_NAME, "own-filters", 0, 0, 0) != 0;   /* no filter */
        printf("%d\\n", failed);
        return failed;
    }
"""


@pytest.mark.parametrize("notify", [True, False], ids=["listener", "ptrace-stops"])
def test_the_apps_own_trace_filters_are_counted(base: Path, notify: bool) -> None:
    """Under the sensor's filter a TRACE of the app's own filter is
    outranked on the calls the sensor holds: the log counts the filters
    that may return TRACE (installed with seccomp(2) or prctl), not the
    others."""
    binary = compile_c(base, "own-filters", OWN_FILTERS_PROGRAM)
    run = traced([str(binary)], notify=notify)
    assert run.status == 0, run.output
    assert run.log["trace_filters"] == 2


def test_which_programs_may_return_trace() -> None:
    def program(*insns: tuple[int, int]) -> bytes:
        return b"".join(struct.pack("<HBBI", code, 0, 0, k) for code, k in insns)

    load, ret_k, ret_a = (0x20, 0), 0x06, 0x16
    assert may_return(program(load, (ret_k, SECCOMP_RET_TRACE | 5)), SECCOMP_RET_TRACE)
    assert not may_return(program(load, (ret_k, SECCOMP_RET_ALLOW)), SECCOMP_RET_TRACE)
    assert not may_return(program((ret_k, 0x00050001)), SECCOMP_RET_TRACE)  # ERRNO
    assert may_return(program(load, (ret_a, 0)), SECCOMP_RET_TRACE)  # not known: may


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_sends_filter_installs_only(machine: str) -> None:
    """seccomp(2) and prctl go to the tracer only when they install a
    filter: prctl has many other uses."""
    program = seccomp_filter(machine, notify=True)
    abi = MACHINES[machine].abis[0]
    arch = AUDIT_ARCH_X86_64 if abi is Abi.X86_64 else AUDIT_ARCH_AARCH64
    seccomp, prctl = (SYSCALL_NUMBERS[abi][name] for name in ("seccomp", "prctl"))
    notified = SECCOMP_RET_USER_NOTIF | (abi << 8)
    assert run_filter(program, arch, seccomp, (1, 0, 1, 0, 0, 0)) == (
        notified | SPEC_INDEX["seccomp"]
    )
    assert run_filter(program, arch, seccomp, (0, 0, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW  # strict
    assert run_filter(program, arch, seccomp, (2, 0, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW  # action?
    assert run_filter(program, arch, prctl, (22, 2, 1, 0, 0, 0)) == notified | SPEC_INDEX["prctl"]
    assert run_filter(program, arch, prctl, (22, 1, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW  # strict
    assert run_filter(program, arch, prctl, (15, 2, 1, 0, 0, 0)) == SECCOMP_RET_ALLOW  # SET_NAME


# --- other ABIs --------------------------------------------------------------------

INT80_PROGRAM = """
    #define _GNU_SOURCE
    #include <stdio.h>
    #include <unistd.h>
    static const char i386_path[] = "/nonexistent-slim-i386";
    static const char x32_path[] = "/nonexistent-slim-x32";
    int main(void) {
        long ret;
        /* an i386 access(2) from a 64-bit program */
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(33L), "b"(i386_path), "c"(0L) : "memory");
        syscall(0x40000000L | 21, x32_path, 0);  /* x32 access(2), ENOSYS where x32 is off */
        printf("%ld\\n", ret);
        return 0;
    }
"""


@needs_x86_64
def test_i386_and_x32_calls_are_traced(base: Path) -> None:
    binary = compile_c(base, "int80", INT80_PROGRAM, "-no-pie")
    run = traced([str(binary)])
    assert run.status == 0
    assert ("/nonexistent-slim-x32", "access", True, False) in run.records
    if run.output.strip() == "-2":  # the kernel runs i386 calls (ENOENT)
        assert ("/nonexistent-slim-i386", "access", True, False) in run.records


# --- starting ---------------------------------------------------------------------------


def test_probe_says_yes_here() -> None:
    assert probe_support().available
    if IS_ROOT:
        assert probe_support(NOBODY, NOBODY).available


REFUSING = """
import ctypes, json, struct, sys
from slimmer.sensor.syscalls import probe_support, SyscallTracer, PathLog
# a hardened profile: EPERM for some calls (with this first argument, if >= 0)
deny, allow = (0x06, 0, 0, 0x00050000 | 1), (0x06, 0, 0, 0x7FFF0000)
insns = []
for number, arg0 in json.loads(sys.argv[1]):
    if arg0 < 0:
        insns += [(0x20, 0, 0, 0), (0x15, 0, 1, number), deny]
    else:
        insns += [(0x20, 0, 0, 0), (0x15, 0, 3, number), (0x20, 0, 0, 16), (0x15, 0, 1, arg0)]
        insns += [deny]
insns += [allow]
code = b"".join(struct.pack("<HBBI", *i) for i in insns)
buffer = ctypes.create_string_buffer(code, len(code))
class Prog(ctypes.Structure):
    _fields_ = (("length", ctypes.c_ushort), ("filter", ctypes.c_void_p))
prog = Prog(len(insns), ctypes.addressof(buffer))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = (ctypes.c_int, *(ctypes.c_ulong,) * 4)
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.addressof(prog), 0, 0) == 0
support = probe_support()
tracer = SyscallTracer(PathLog())
if support.available:
    tracer.probe()
print(support.available, support.refusal.value if support.refusal else None,
      tracer.stats.notifications > 0, tracer.stats.stops > 0)
"""

SECCOMP_CALL = (317, -1)  # seccomp(2): how a listener is asked for
PR_SET_SECCOMP_CALL = (157, 22)  # prctl(PR_SET_SECCOMP): the ptrace-only filter


@needs_x86_64
@pytest.mark.parametrize(
    ("denied", "outcome"),
    [
        ([(101, -1)], "False ptrace-refused False False"),  # ptrace(2) forbidden
        # no seccomp(2): path calls come as ptrace stops
        ([SECCOMP_CALL], "True None False True"),
        # no prctl(PR_SET_SECCOMP): seccomp(2) and its listener are enough
        ([PR_SET_SECCOMP_CALL], "True None True False"),
        ([SECCOMP_CALL, PR_SET_SECCOMP_CALL], "False seccomp-refused False False"),
    ],
)
def test_probe_names_what_is_refused(denied: list[tuple[int, int]], outcome: str) -> None:
    if not syscalls.notify_supported(os.uname().release):
        pytest.skip("no seccomp listener before Linux 5.5")
    result = subprocess.run(
        [sys.executable, "-c", REFUSING, json.dumps(denied)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == outcome.split()


def test_an_app_that_cannot_be_executed_is_an_oserror(base: Path) -> None:
    script = base / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    tracer = syscalls.SyscallTracer(PathLog())
    request = syscalls.LaunchRequest.of(str(script), [str(script)], {}, "/")
    with pytest.raises(PermissionError):
        tracer.launch(request)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # nothing left behind


def test_where_calls_cannot_be_decoded_the_app_does_not_start_traced(base: Path) -> None:
    """An aarch64 kernel before 5.3 (no PTRACE_GET_SYSCALL_INFO, no register
    fallback here): the launcher is killed before the app runs, so the
    sensor can start it untraced."""
    marker = base / "ran"
    tracer = syscalls.SyscallTracer(PathLog(), use_syscall_info=False, use_notify=False)
    tracer.support = dataclasses.replace(tracer.support, regs_fallback=False)
    request = syscalls.LaunchRequest.of("/bin/sh", ["sh", "-c", f"touch {marker}"], {}, "/")
    with pytest.raises(syscalls.TracingUnavailable) as refused:
        tracer.launch(request)
    assert refused.value.refusal is Refusal.OLD_KERNEL
    time.sleep(0.2)
    assert not marker.exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


# --- the pure parts ---------------------------------------------------------------------


def run_filter(program: bytes, arch: int, number: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    data = struct.pack("<iIQ6Q", number, arch, 0, *args)
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    pc, accumulator = 0, 0
    for _ in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            accumulator = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == 0x35:
            pc += 1 + (jt if accumulator >= k else jf)
        elif code == 0x45:
            pc += 1 + (jt if accumulator & k else jf)
        elif code == 0x05:
            pc += 1 + k
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("the filter loops")


ONES = (1, 1, 1, 1, 1, 1)  # non-NULL paths, no AT_EMPTY_PATH


def sent_args(name: str) -> tuple[int, ...]:
    """Arguments with which the filter sends the call: non-NULL paths, no
    AT_EMPTY_PATH, and the values a conditional call (prctl) needs."""
    args = list(ONES)
    for index, value in SPECS[SPEC_INDEX[name]].when:
        args[index] = value
    return tuple(args)


def trace_code(abi: Abi, name: str) -> int:
    return SECCOMP_RET_TRACE | (abi << 8) | SPEC_INDEX[name]


def test_the_x86_64_filter() -> None:
    program = seccomp_filter("x86_64")
    assert len(program) // 8 < 4096  # BPF_MAXINSNS
    for name, number in SYSCALL_NUMBERS[Abi.X86_64].items():
        returned = run_filter(program, AUDIT_ARCH_X86_64, number, sent_args(name))
        assert returned == trace_code(Abi.X86_64, name)
    for name, number in SYSCALL_NUMBERS[Abi.I386].items():
        returned = run_filter(program, AUDIT_ARCH_I386, number, sent_args(name))
        assert returned == trace_code(Abi.I386, name)
    for name, number in SYSCALL_NUMBERS[Abi.X32].items():
        returned = run_filter(program, AUDIT_ARCH_X86_64, number, sent_args(name))
        assert returned == trace_code(Abi.X32, name)
    traced_numbers = set(SYSCALL_NUMBERS[Abi.X86_64].values())
    for number in range(600):
        if number not in traced_numbers:
            assert run_filter(program, AUDIT_ARCH_X86_64, number) == SECCOMP_RET_ALLOW
    # what names no path is let through: fstat, futimens, fexecve
    newfstatat, statx, utimensat = (
        SYSCALL_NUMBERS[Abi.X86_64][n] for n in ("newfstatat", "statx", "utimensat")
    )
    assert run_filter(program, AUDIT_ARCH_X86_64, newfstatat, (3, 1, 2, 0x1000, 0, 0)) == (
        SECCOMP_RET_ALLOW
    )
    assert run_filter(program, AUDIT_ARCH_X86_64, newfstatat, (3, 1, 2, 0x100, 0, 0)) == (
        trace_code(Abi.X86_64, "newfstatat")
    )
    assert run_filter(program, AUDIT_ARCH_X86_64, statx, (3, 1, 0x1000, 0, 0, 0)) == (
        SECCOMP_RET_ALLOW
    )
    assert run_filter(program, AUDIT_ARCH_X86_64, utimensat, (3, 0, 0, 0, 0, 0)) == (
        SECCOMP_RET_ALLOW
    )
    assert run_filter(program, AUDIT_ARCH_X86_64, utimensat, (3, 1 << 32, 0, 0, 0, 0)) == (
        trace_code(Abi.X86_64, "utimensat")
    )
    # an architecture the filter has no table for runs untraced
    assert run_filter(program, AUDIT_ARCH_AARCH64, 56) == SECCOMP_RET_ALLOW


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_with_a_listener_every_call_notifies_and_none_is_a_ptrace_stop(machine: str) -> None:
    """The processes are not traced on a listener: a TRACE would fail the
    call with ENOSYS, chdir and set*id included."""
    program = seccomp_filter(machine, notify=True)
    codes = call_codes(machine)
    assert codes  # every traced (arch, number) has a code
    for (arch, number), code in codes.items():
        spec = SPECS[code & 0xFF]
        returned = run_filter(program, arch, number, sent_args(spec.name))
        assert returned & 0xFF == code & 0xFF  # the same call, as the notification says
        assert returned & 0xFFFF0000 == SECCOMP_RET_USER_NOTIF, spec.name


@pytest.mark.parametrize(
    ("release", "supported"),
    [
        ("6.18.44-fc-v595", True),
        ("5.5.0", True),
        ("5.4.0-150-generic", False),
        ("4.19.0", False),
        ("5.10.0-28-cloud-amd64", True),
        ("6.1.0-rc7+", True),
        ("garbage", False),
    ],
)
def test_which_kernels_can_let_a_notified_call_through(release: str, supported: bool) -> None:
    assert notify_supported(release) is supported


def test_the_aarch64_filter() -> None:
    program = seccomp_filter("aarch64")
    for name, number in SYSCALL_NUMBERS[Abi.AARCH64].items():
        assert run_filter(program, AUDIT_ARCH_AARCH64, number, sent_args(name)) == trace_code(
            Abi.AARCH64, name
        )
    assert run_filter(program, AUDIT_ARCH_AARCH64, 63) == SECCOMP_RET_ALLOW  # read
    assert run_filter(program, 0x40000028, 5) == SECCOMP_RET_ALLOW  # 32-bit ARM: untraced
    with pytest.raises(ValueError):
        seccomp_filter("riscv64")


HEADERS = {
    Abi.X86_64: ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h"],
    Abi.I386: ["/usr/include/x86_64-linux-gnu/asm/unistd_32.h"],
    Abi.AARCH64: ["/usr/include/asm-generic/unistd.h"],
}


@pytest.mark.parametrize("abi", sorted(HEADERS))
def test_syscall_numbers_match_the_kernel_headers(abi: Abi) -> None:
    header = next((Path(h) for h in HEADERS[abi] if Path(h).exists()), None)
    if header is None:
        pytest.skip("no kernel headers for this ABI here")
    defined: dict[str, int] = {}
    for line in header.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#define" and parts[2].isdigit():
            name = parts[1].removeprefix("__NR3264_").removeprefix("__NR_")
            defined.setdefault(name, int(parts[2]))
    checked = 0
    for name, number in SYSCALL_NUMBERS[abi].items():
        if name in defined:  # newer calls may be missing from older headers
            assert defined[name] == number, name
            checked += 1
    assert checked >= len(SYSCALL_NUMBERS[abi]) - 3
    if abi is Abi.X86_64:
        x32 = SYSCALL_NUMBERS[Abi.X32]
        assert x32["open"] == X32_SYSCALL_BIT | defined["open"]


def test_paths_are_cleaned_without_resolving_links() -> None:
    assert clean_absolute(b"/etc/passwd") == b"/etc/passwd"
    assert clean_absolute(b"//etc/./x/") == b"/etc/x"
    assert clean_absolute(b"/../etc") == b"/etc"
    assert clean_absolute(b"/a/link/../b") == b"/a/link/../b"  # link/.. is not a
    assert clean_absolute(b"/") == b"/"
    assert join_physical(b"/work/dir", b"../../etc/x") == b"/etc/x"
    assert join_physical(b"/work/dir", b"../x") == b"/work/x"  # the cwd is physical
    assert join_physical(b"/work/dir", b"./a/../b") == b"/work/dir/a/../b"
    assert join_physical(b"/", b"../../x") == b"/x"
    assert join_physical(b"/", b"x") == b"/x"


def test_the_log_is_bounded_in_bytes_and_keeps_first_observations() -> None:
    log = PathLog(limit_bytes=path_cost(b"/a") + path_cost(b"/b"))
    log.add((b"/a", PathAction.STAT, True), False)
    log.add((b"/b", PathAction.OPEN, True), True)
    log.add((b"/c", PathAction.OPEN, True), True)
    assert not log.complete and log.dropped == 1
    assert [r.path for r in log.records()] == ["/a", "/b"]
    # a byte that is not UTF-8 costs its escape in the result (\\udcff: 6)
    long_name = b"/" + b"\xff" * 4000
    assert path_cost(long_name) == len(json.dumps(os.fsdecode(long_name))) + RECORD_BYTES
    assert path_cost(long_name) > 6 * 4000
    shared = ByteBudget(1 << 20)
    flooded = PathLog(budget=shared)
    for number in range(100):
        flooded.add((long_name + str(number).encode(), PathAction.STAT, True), False)
    assert len(flooded.first) == (1 << 20) // path_cost(long_name + b"10")
    assert flooded.dropped == 100 - len(flooded.first)
    assert not shared.take(path_cost(long_name + b"999"))  # nor for what else shares it
    undecodable = PathLog()
    undecodable.add((b"/caf\xe9", PathAction.STAT, True), True)
    assert undecodable.records()[0].path == "/caf\udce9"


def test_a_program_that_is_not_elf_has_no_machine(base: Path) -> None:
    script = base / "script"
    script.write_text("#!/bin/sh\n")
    assert syscalls.program_machine(bytes(script)) == syscalls.program_machine(b"/bin/sh")
    (base / "data").write_bytes(b"plain")
    assert syscalls.program_machine(bytes(base / "data")) is None
