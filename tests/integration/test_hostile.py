"""Hostile images: nothing an image ships or its app does may take over
the sensor or forge what it reports. Each image is built here, from a
directory the test writes, and removed afterwards."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from slimmer.cli import cli, default_cache_dir
from slimmer.engine import Engine
from slimmer.trace import HostProbe, NoAnswer, ProbeResult, Trace, TraceStatus
from slimmer.tracer import TraceOptions, trace_image

# A library that, when loaded into slim's sensor (whose process runs the
# bundled loader from /.slim...), kills it with status 66 and says so.
TAKEOVER_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void take_over(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        if (strstr(exe, "/.slim")) {
            fprintf(stderr, "SENSOR-TAKEN-OVER\n");
            _exit(66);
        }
    }
}
"""


@pytest.fixture
def takeover_library(tmp_path: Path) -> bytes:
    source = tmp_path / "takeover.c"
    source.write_text(TAKEOVER_C)
    library = tmp_path / "takeover.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library.read_bytes()


def test_preload_in_the_image_never_reaches_the_sensor(
    engine: Engine, image_from, takeover_library: bytes, tmp_path: Path, caplog
) -> None:
    """/etc/ld.so.preload and LD_PRELOAD / LD_AUDIT in ENV load code into
    every dynamically linked process of the image; the sensor is one, run
    by its own loader, in every mode."""
    image = image_from(
        {
            "takeover.so": takeover_library,
            "Dockerfile": "FROM debian:bookworm\n"
            "COPY takeover.so /usr/lib/takeover.so\n"
            "RUN echo /usr/lib/takeover.so > /etc/ld.so.preload\n"
            "ENV LD_PRELOAD=/usr/lib/takeover.so LD_AUDIT=/usr/lib/takeover.so\n"
            'CMD ["cat", "/etc/debian_version"]\n',
        }
    )
    caplog.set_level("INFO")
    trace = trace_image(engine, image, TraceOptions(until_exit=True), default_cache_dir())
    assert "SENSOR-TAKEN-OVER" not in caplog.text
    assert trace.exit_status == 0 and "/etc/debian_version" in {f.path for f in trace.files}
    runner = CliRunner()
    deps = runner.invoke(cli, ["deps", "--image", image, "/usr/bin/cat"])
    assert deps.exit_code == 0, deps.output
    out = tmp_path / "trace.json"
    trace.save(out)
    built = runner.invoke(
        cli, ["build", image, "--trace", str(out), "--context-only", str(tmp_path / "c.tar")]
    )
    assert built.exit_code == 0, built.output
    compared = runner.invoke(cli, ["compare", image])
    assert compared.exit_code == 0, compared.output


def _fake_sensor_zip() -> bytes:
    """A zip of a fake `slimmer` package, as python3X.zip: CPython puts that
    zip on sys.path before its own stdlib directory."""
    forged = '{"files": [{"path": "/forged", "kind": "file", "access": ["opened"]}]}'
    fake_main = (
        "import os, sys\n"
        "def main(config_path):\n"
        "    run = os.path.dirname(config_path)\n"
        f"    open(os.path.join(run, 'result.json'), 'w').write({forged!r})\n"
        "    print('FAKE SENSOR', file=sys.stderr)\n"
        "    return 0\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("slimmer/__init__.py", "")
        archive.writestr("slimmer/sensor/__init__.py", "")
        archive.writestr("slimmer/sensor/main.py", fake_main)
    return buffer.getvalue()


def test_files_at_the_sensors_path_cannot_stand_in_for_it(
    engine: Engine, image_from, caplog
) -> None:
    """The sensor's directory is new and random for each run: an image that
    ships a sensor of its own where slim's used to go (a zip that CPython
    would import before its own modules, a fake script, a link for the run
    dir) changes nothing."""
    zip_name = f"python{sys.version_info.major}{sys.version_info.minor}.zip"
    image = image_from(
        {
            "fake.zip": _fake_sensor_zip(),
            "Dockerfile": "FROM busybox:latest\n"
            f"COPY fake.zip /.slim/lib/{zip_name}\n"
            "RUN ln -s /tmp /.slim/run\n"
            'CMD ["cat", "/etc/passwd"]\n',
        }
    )
    caplog.set_level("DEBUG")
    trace = trace_image(engine, image, TraceOptions(until_exit=True), default_cache_dir())
    assert "FAKE SENSOR" not in caplog.text
    paths = {f.path for f in trace.files}
    assert "/forged" not in paths and "/etc/passwd" in paths
    assert not [path for path in paths if path.startswith("/.slim-")]


def test_a_leftover_child_cannot_forge_the_result(
    engine: Engine, image_from, tmp_path: Path
) -> None:
    """The app leaves a child that keeps writing a forged result into every
    run dir it can find; the sensor ends every process before it writes
    the result, so the trace is the real one."""
    forged = (
        '{"schema":"slim.sensor/1","result":{"kind":"trace","program":"/forged","user":'
        '{"uid":0,"gid":0,"groups":[]},"exit":{"status":0,"signal":null},"watches":1,'
        '"events":1,"overflow":false,"setup_seconds":0,"app_seconds":0,'
        '"files":[{"path":"/forged","kind":"file","access":["opened"]}]},'
        '"files":[{"path":"/forged","kind":"file","access":["opened"]}],"exit":{"status":0}}'
    )
    script = (
        "#!/bin/sh\n"
        "cat /etc/passwd >/dev/null\n"
        "( while true; do for d in /.slim*/run; do\n"
        f"    printf '%s' '{forged}' > \"$d/result.json\" 2>/dev/null\n"
        f"    printf '%s' '{forged}' > \"$d/result.json.tmp\" 2>/dev/null\n"
        "  done; done ) &\n"
        "sleep 0.5\n"
        "exit 0\n"
    )
    image = image_from(
        {
            "app.sh": script,
            "Dockerfile": 'FROM busybox:latest\nCOPY app.sh /app.sh\nCMD ["/app.sh"]\n',
        }
    )
    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli, ["trace", image, "--until-exit", "-o", str(out)])
    assert result.exit_code == 0, result.output
    paths = {f.path for f in Trace.load(out).files}
    assert "/forged" not in paths and "/etc/passwd" in paths


def test_garbage_the_app_leaves_at_the_result_path_is_replaced(
    engine: Engine, image_from, tmp_path: Path
) -> None:
    """The app writes garbage (and a directory) where results go and tries
    to kill the sensor: the sensor survives (PID 1 ignores what it does not
    handle), replaces both and the trace is the real one."""
    image = image_from(
        {
            "app.sh": "#!/bin/sh\nfor d in /.slim*/run; do echo '[[[' > \"$d/result.json\";"
            ' mkdir "$d/result.json.tmp"; done\nkill -9 1\ncat /etc/group >/dev/null\n',
            "Dockerfile": 'FROM busybox:latest\nCOPY app.sh /app.sh\nCMD ["/app.sh"]\n',
        }
    )
    out = tmp_path / "t.json"
    result = CliRunner().invoke(cli, ["trace", image, "--until-exit", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "/etc/group" in {f.path for f in Trace.load(out).files}


# A root app (the default capabilities: no CAP_SYS_PTRACE) that goes after
# the sensor, PID 1: its memory, ptrace, its environment, its descriptors.
# Its exit status has a bit for each attack that worked.
SENSOR_PREY_C = r"""
/* A root app (default capabilities, no CAP_SYS_PTRACE) that goes after
   the sensor, PID 1. Its exit status says which attacks worked (a bit each);
   0: none. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum {
    MEM_WRITE = 1, SEIZE = 2, ATTACH = 4, ENVIRON = 8, FDS = 16, GETFD = 32, MAPS = 64,
    FORGED = 128,
};

static int forge(int mem, const char *marker, const char *forged) {
    FILE *maps = fopen("/proc/1/maps", "r");
    if (!maps) return 0;
    char line[512];
    size_t length = strlen(marker);
    int replaced = 0;
    static char chunk[1 << 20];
    while (fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) != 3 || perms[1] != 'w') continue;
        for (unsigned long at = start; at < end; at += sizeof chunk - length) {
            size_t want = end - at < sizeof chunk ? end - at : sizeof chunk;
            ssize_t got = pread(mem, chunk, want, (off_t)at);
            if (got <= 0) break;
            for (char *hit = memmem(chunk, got, marker, length); hit;
                 hit = memmem(hit + 1, got - (hit + 1 - chunk), marker, length)) {
                if (pwrite(mem, forged, length, (off_t)(at + (hit - chunk))) == (ssize_t)length)
                    replaced++;
            }
            if ((size_t)got < want) break;
        }
    }
    fclose(maps);
    return replaced;
}

int main(int argc, char **argv) {
    const char *marker = argc > 2 ? argv[1] : "/slim-marker";
    const char *forged = argc > 2 ? argv[2] : "/slim-forged";
    int worked = 0;
    struct stat st;
    stat(marker, &st);  /* a name the sensor records */

    int mem = open("/proc/1/mem", O_RDWR);
    if (mem >= 0) {
        worked |= MEM_WRITE;
        if (forge(mem, marker, forged) > 0) worked |= FORGED;
        close(mem);
    }
    int maps = open("/proc/1/maps", O_RDONLY);
    char buffer[4096];
    if (maps >= 0 && read(maps, buffer, sizeof buffer) > 0) worked |= MAPS;
    if (maps >= 0) close(maps);

    int status;
    if (ptrace(PTRACE_SEIZE, 1, 0, 0) == 0) {
        worked |= SEIZE;
        ptrace(PTRACE_INTERRUPT, 1, 0, 0);
        waitpid(1, &status, __WALL);
        ptrace(PTRACE_DETACH, 1, 0, 0);
    }
    if (ptrace(PTRACE_ATTACH, 1, 0, 0) == 0) {
        worked |= ATTACH;
        waitpid(1, &status, __WALL);
        ptrace(PTRACE_DETACH, 1, 0, 0);
        kill(1, SIGCONT);  /* the attach's SIGSTOP */
    }
    int environ_fd = open("/proc/1/environ", O_RDONLY);
    if (environ_fd >= 0 && read(environ_fd, buffer, sizeof buffer) > 0) worked |= ENVIRON;
    if (environ_fd >= 0) close(environ_fd);

    DIR *fds = opendir("/proc/1/fd");
    if (fds) {
        struct dirent *entry;
        char path[300], target[4096];
        while ((entry = readdir(fds))) {
            if (entry->d_name[0] == '.') continue;
            snprintf(path, sizeof path, "/proc/1/fd/%s", entry->d_name);
            if (readlink(path, target, sizeof target) >= 0) worked |= FDS;
            int fd = open(path, O_RDONLY | O_NONBLOCK);
            if (fd >= 0) { worked |= FDS; close(fd); }
        }
        closedir(fds);
    }
    int pidfd = syscall(SYS_pidfd_open, 1, 0);
    if (pidfd >= 0) {
        for (int n = 0; n < 64; n++) {
            int stolen = syscall(SYS_pidfd_getfd, pidfd, n, 0);
            if (stolen >= 0) { worked |= GETFD; close(stolen); }
        }
        close(pidfd);
    }
    stat("/etc/passwd", &st);  /* what it really did, after the attacks */
    printf("attacks that worked: %d\n", worked);
    return worked;
}
"""
ATTACKS = {
    1: "opened /proc/1/mem for writing",
    2: "PTRACE_SEIZE of pid 1",
    4: "PTRACE_ATTACH of pid 1",
    8: "read /proc/1/environ",
    16: "read a link or opened a file of /proc/1/fd",
    32: "took a descriptor of pid 1 with pidfd_getfd",
    64: "read /proc/1/maps",
    128: "rewrote a name in the sensor's memory",
}


def test_a_root_app_cannot_reach_into_the_sensor(engine: Engine, static_program_image) -> None:
    """The sensor is PID 1 and root, like an app that runs as root with the
    engine's default capabilities: the kernel's ptrace access check would
    let that app write the sensor's memory, trace it, read its environment
    and take its descriptors (the seccomp listener among them), unless the
    sensor is not dumpable. Every attack fails, and the trace holds what
    the app named and nothing it forged."""
    token = uuid.uuid4().hex[:12]
    marker, forged = f"/slim-marker-{token}", f"/slim-forged-{token}"
    image = static_program_image("prey", SENSOR_PREY_C, marker, forged)
    trace = trace_image(
        engine, image, TraceOptions(until_exit=True, exit_timeout=60), default_cache_dir()
    )
    worked = [what for bit, what in ATTACKS.items() if (trace.exit_status or 0) & bit]
    assert trace.exit_status == 0, f"the app {', '.join(worked)}"
    assert trace.status is TraceStatus.COMPLETE, trace.problems
    assert trace.syscalls is not None and trace.syscalls.observed, trace.syscalls
    assert trace.syscalls.unresolved == 0
    named = {lookup.path for lookup in trace.lookups}
    assert {marker, "/etc/passwd", "/prey"} <= named
    assert not [path for path in named if "slim-forged" in path]


def test_a_trace_file_never_runs_host_commands(
    engine: Engine, fat_nginx: str, tmp_path: Path
) -> None:
    """verify replays a trace's probes, but a host command in a trace file
    is data: it runs only when the user gives it with --probe-host."""
    marker = tmp_path / "ran-on-the-host"
    trace = trace_image(engine, fat_nginx, TraceOptions(echo_app=False), default_cache_dir())
    forged = replace(
        trace,
        probes=(
            *trace.probes,
            ProbeResult(HostProbe(f"touch {marker}"), NoAnswer("never ran"), True),
        ),
    )
    path = tmp_path / "forged.json"
    forged.save(path)
    result = CliRunner().invoke(cli, ["verify", fat_nginx, fat_nginx, "--trace", str(path)])
    assert result.exit_code == 0, result.output
    assert not marker.exists()
    assert "does not run from a trace file" in result.output
    given = CliRunner().invoke(
        cli,
        ["verify", fat_nginx, fat_nginx, "--trace", str(path), "--probe-host", f"touch {marker}"],
    )
    assert given.exit_code == 0, given.output
    assert marker.exists()  # the same command, given by the user, runs
