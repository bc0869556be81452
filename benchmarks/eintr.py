"""Benchmark: how often a signal makes a path call fail with EINTR under the
syscall layer, in a real trace.

A path call waits on the sensor's seccomp listener; a signal that arrives
while it waits, for a handler installed without SA_RESTART, can make it
fail with EINTR, which it never does untraced. The app here (a static C
program in a busybox image, built here) makes N stat(2) calls under a
SIGALRM timer of F Hz whose handler has no SA_RESTART, and counts the
calls that failed with EINTR. Each run is a real `slim trace --until-exit`
(its own process), with the syscall layer and without it (--no-syscalls).

    python benchmarks/eintr.py [--calls 50000] [--hz 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from slimmer.engine import Engine

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # one way to run slim as a user does, shared with the tests
from tests.helpers.slimrun import run_slim  # noqa: E402

IMAGE = "slim-bench-eintr:latest"
PROGRAM = r"""
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

static volatile sig_atomic_t signals;
static void on_alarm(int number) { (void)number; signals++; }

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 50000;
    long hz = argc > 2 ? atol(argv[2]) : 5000;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_alarm;  /* no SA_RESTART */
    sigaction(SIGALRM, &action, NULL);
    struct itimerval timer = {{0, 1000000 / hz}, {0, 1000000 / hz}};
    setitimer(ITIMER_REAL, &timer, NULL);
    long eintr = 0, failed = 0;
    struct stat st;
    for (long i = 0; i < calls; i++) {
        if (stat("/etc/passwd", &st) != 0) {
            if (errno == EINTR) eintr++;
            else failed++;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("EINTR %ld of %ld stat calls, other failures %ld, signals %d\n",
           eintr, calls, failed, (int)signals);
    return failed != 0;
}
"""
RESULT = re.compile(r"EINTR (\d+) of (\d+) stat calls, other failures (\d+), signals (\d+)")


def build_image(engine: Engine) -> None:
    with tempfile.TemporaryDirectory() as work:
        source, binary = Path(work, "eintr.c"), Path(work, "eintr")
        source.write_text(PROGRAM)
        subprocess.run(["gcc", "-static", "-O1", "-o", str(binary), str(source)], check=True)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(binary, arcname="eintr")
            dockerfile = b'FROM busybox:latest\nCOPY eintr /eintr\nENTRYPOINT ["/eintr"]\n'
            member = tarfile.TarInfo("Dockerfile")
            member.size = len(dockerfile)
            tar.addfile(member, io.BytesIO(dockerfile))
        context.seek(0)
        engine.build(context, IMAGE)


def run(calls: int, hz: int, syscalls: bool) -> tuple[int, int, int]:
    """EINTR count, calls, signals of one traced run."""
    with tempfile.TemporaryDirectory() as work:
        argv = ["trace", IMAGE, "--until-exit", "-o", str(Path(work, "t.json"))]
        if not syscalls:
            argv.append("--no-syscalls")
        result = run_slim(*argv, "--", str(calls), str(hz))  # after the ENTRYPOINT
    found = RESULT.search(result.stderr)
    if result.exit_code != 0 or found is None:
        raise SystemExit(f"the run failed:\n{result.describe()}")
    eintr, total, failed, signals = (int(group) for group in found.groups())
    if failed:
        raise SystemExit(f"{failed} calls failed otherwise")
    return eintr, total, signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50000)
    parser.add_argument("--hz", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with Engine.from_environment(os.environ) as engine:
        build_image(engine)
    for syscalls in (False, True):
        label = "inotify+syscalls" if syscalls else "inotify alone   "
        shares = []
        for _ in range(args.repeat):
            eintr, total, signals = run(args.calls, args.hz, syscalls)
            shares.append(100 * eintr / total)
            print(
                f"{label} EINTR {eintr:6d} of {total} stat calls ({shares[-1]:.2f}%), "
                f"{signals} signals"
            )
        print(
            f"{label} EINTR {min(shares):.2f}% to {max(shares):.2f}% "
            f"(a {args.hz} Hz SIGALRM without SA_RESTART)"
        )


if __name__ == "__main__":
    main()
