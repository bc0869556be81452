"""The syscall layer where the sensor really runs: a container with the
engine's default seccomp profile, root without CAP_SYS_PTRACE, the app as
root, as the image's non-root USER, or dropping privileges itself."""

from __future__ import annotations

from pathlib import Path

from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.trace import Lookup, PathAction, Trace
from slimmer.tracer import TraceOptions, trace_image
from tests.helpers.slimrun import run_slim


def traced(engine: Engine, image: str, **options) -> Trace:
    return trace_image(engine, image, TraceOptions(echo_app=False, **options), default_cache_dir())


def named(trace: Trace) -> set[tuple[str, PathAction, bool]]:
    return {(lookup.path, lookup.action, lookup.existed) for lookup in trace.lookups}


def test_root_app_lookups_and_failed_ones(engine: Engine, fixture_image) -> None:
    trace = traced(
        engine,
        fixture_image("batch"),
        until_exit=True,
        cmd=["sh", "-c", "ls -l /etc/passwd >/dev/null; test -e /nonexistent || true"],
    )
    assert trace.syscalls is not None and trace.syscalls.observed, trace.syscalls
    seen = named(trace)
    assert ("/etc/passwd", PathAction.STAT, True) in seen  # ls -l: a stat, no open
    assert any(p == "/nonexistent" and not existed for p, _, existed in seen)


def test_a_non_root_user_is_observed(engine: Engine, fixture_image) -> None:
    trace = traced(engine, fixture_image("nonroot"), until_exit=True)
    assert trace.syscalls is not None and trace.syscalls.observed, trace.syscalls
    assert trace.user == "app"
    assert any(lookup.path == "/srv/data.txt" for lookup in trace.lookups)


def test_workers_that_drop_privileges_are_observed(engine: Engine, fat_nginx: str) -> None:
    """nginx's master runs as root, its workers as nobody: what the workers
    look up when they serve the probe is seen too."""
    trace = traced(engine, fat_nginx)
    assert trace.syscalls is not None and trace.syscalls.observed, trace.syscalls
    assert Lookup("/opt/nginx/html/index.html", PathAction.OPEN, True, True) in trace.lookups
    assert trace.syscalls.dropped == 0


def test_no_syscalls_says_so_and_traces_with_inotify(engine: Engine, fixture_image) -> None:
    trace = traced(engine, fixture_image("batch"), until_exit=True, syscalls=False)
    assert trace.syscalls is not None and not trace.syscalls.observed
    assert trace.lookups == () and trace.files


# An app that supervises its child with a seccomp filter of its own that
# sends openat to its tracer (SECCOMP_RET_TRACE, as `strace --seccomp-bpf`
# does), installed once with seccomp(2) and once with prctl. It prints how
# many of the children's openat calls its tracer heard of; exit 0: all.
OWN_TRACER_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CALLS 3

static void child(int with_prctl) {
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {sizeof code / sizeof code[0], code};
    ptrace(PTRACE_TRACEME, 0, 0, 0);
    raise(SIGSTOP);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (with_prctl ? prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0)
                   : syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program))
        _exit(2);
    for (int i = 0; i < CALLS; i++) {
        int fd = syscall(SYS_openat, AT_FDCWD, "/etc/passwd", O_RDONLY);
        if (fd >= 0) close(fd);
    }
    _exit(0);
}

static int heard(int with_prctl) {
    int status, count = 0;
    pid_t pid = fork();
    if (pid == 0) child(with_prctl);
    waitpid(pid, &status, 0);
    ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL);
    ptrace(PTRACE_CONT, pid, 0, 0);
    while (waitpid(pid, &status, 0) == pid && WIFSTOPPED(status)) {
        int sig = 0;
        if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) count++;
        else if (WSTOPSIG(status) != SIGTRAP) sig = WSTOPSIG(status);
        ptrace(PTRACE_CONT, pid, 0, sig);
    }
    return count;
}

int main(void) {
    int count = heard(0) + heard(1);
    printf("its own tracer heard %d of %d calls\n", count, 2 * CALLS);
    return count == 2 * CALLS ? 0 : 1;
}
"""


def test_an_apps_own_trace_filters_are_reported(
    engine: Engine, static_program_image, tmp_path: Path
) -> None:
    """The sensor's filter comes first, and its USER_NOTIF outranks the
    app's TRACE on the calls it holds: the app's own tracer hears of none.
    Untraced it hears of every call; traced, the trace counts the app's
    filters and slim warns, naming --no-syscalls."""
    image = static_program_image("owntracer", OWN_TRACER_C)
    untraced = traced(engine, image, until_exit=True, syscalls=False)
    assert untraced.exit_status == 0  # a real RET_TRACE user: its tracer heard all 6
    out = tmp_path / "trace.json"
    run = run_slim("trace", image, "--until-exit", "--expect-exit", "1", "-o", str(out))
    assert run.exit_code == 0, run.describe()
    trace = Trace.load(out)
    assert trace.syscalls is not None and trace.syscalls.observed
    assert trace.syscalls.app_trace_filters == 2
    assert "SECCOMP_RET_TRACE" in run.stderr and "--no-syscalls" in run.stderr, run.describe()
