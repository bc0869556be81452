"""Benchmark: what the syscall layer of the sensor costs. Runs a
process-heavy job (a shell loop of short processes) and an import-heavy
interpreter start three ways on this host: plain; under inotify alone (the
sensor's TreeWatcher on /usr and /etc with its reader thread, as in a
trace); and under inotify plus slimmer.sensor.syscalls' tracer. Prints the
best wall time of --repeat interleaved runs of each (the best, not the mean:
other load on the machine only ever adds time) and the ratio of the last two.

Target (issue 12): the syscall layer costs at most 1.5x inotify alone.

    python benchmarks/syscalls.py [--processes 2000] [--starts 20] [--repeat 3]

As root it also runs the jobs as uid 65534 under a tracer without
CAP_SYS_PTRACE (`setpriv`), as in a container: the tracer then opens
/proc/<tid>/mem and the cwd links with its fs uid switched. The same in a
real trace, in a container: benchmarks/syscall_trace.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from slimmer.sensor.syscalls import LaunchRequest, PathLog, SyscallTracer
from slimmer.sensor.watch import TreeWatcher

WATCHED = ("/usr", "/etc")

IMPORTS = (
    "import json, email.parser, email.message, http.client, urllib.request, "
    "xml.etree.ElementTree, asyncio, decimal, logging, argparse, unittest, "
    "sqlite3, csv, zipfile, tarfile, pathlib, dataclasses, typing"
)


def jobs(processes: int, starts: int) -> dict[str, list[str]]:
    # a real interpreter binary (a version manager's shim is a shell script)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return {
        f"{processes} short processes": [
            "/bin/sh",
            "-c",
            f"i=0; while [ $i -lt {processes} ]; do /bin/true || exit 1; i=$((i+1)); done",
        ],
        f"{starts} import-heavy python starts": [
            "/bin/sh",
            "-c",
            f'i=0; while [ $i -lt {starts} ]; do {python} -c "{IMPORTS}" || exit 1;'
            " i=$((i+1)); done",
        ],
    }


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # user + system of this process (tracer, inotify reader) and the job


def cpu_now() -> float:
    times = os.times()  # this process and its waited-for children
    return times.user + times.system + times.children_user + times.children_system


def watching() -> TreeWatcher:
    watcher = TreeWatcher(("/proc", "/sys", "/dev"))
    for root in WATCHED:
        watcher.watch_tree(root)
    watcher.drain()
    watcher.start()
    return watcher


def run_plain(argv: list[str], uid: int | None, inotify: bool) -> Timing:
    watcher = watching() if inotify else None
    started, cpu = time.perf_counter(), cpu_now()
    subprocess.run(argv, check=True, user=uid, group=uid, extra_groups=[] if uid else None)
    timing = Timing(time.perf_counter() - started, cpu_now() - cpu)
    if watcher is not None:
        watcher.stop()
    return timing


def run_traced(argv: list[str], uid: int | None) -> tuple[Timing, int, int, float]:
    watcher = watching()
    tracer = SyscallTracer(PathLog())
    groups = () if uid is not None else None
    request = LaunchRequest.of(argv[0], argv, dict(os.environ), "/", uid, uid, groups)
    started, cpu = time.perf_counter(), cpu_now()
    pid = tracer.launch(request)
    launch_seconds = time.perf_counter() - started  # the launcher's own start, once
    while True:
        ended = tracer.wait_any()
        if ended is not None and ended[0] == pid:
            break
    timing = Timing(time.perf_counter() - started, cpu_now() - cpu)
    watcher.stop()
    if not (os.WIFEXITED(ended[1]) and os.WEXITSTATUS(ended[1]) == 0):
        raise SystemExit(f"traced job failed: status {ended[1]:#x}")
    stats = tracer.stats
    tracer.close()
    return timing, stats.stops + stats.notifications, len(tracer.log.first), launch_seconds


def measure(argv: list[str], uid: int | None, repeat: int) -> None:
    plain: list[Timing] = []
    inotify: list[Timing] = []
    traced: list[Timing] = []
    launch_seconds: list[float] = []
    for _ in range(repeat):  # interleaved, so a noisy neighbour hits all three
        plain.append(run_plain(argv, uid, inotify=False))
        inotify.append(run_plain(argv, uid, inotify=True))
        traced_run = run_traced(argv, uid)
        traced.append(traced_run[0])
        launch_seconds.append(traced_run[3])
    stops, paths = traced_run[1], traced_run[2]
    launch = min(launch_seconds)
    for what in ("wall", "cpu"):
        plain_s, inotify_s, traced_s = (
            min(getattr(t, what) for t in x) for x in (plain, inotify, traced)
        )
        print(
            f"    {what:4}  plain {plain_s:6.2f} s   inotify {inotify_s:6.2f} s"
            f"   inotify+syscalls {traced_s:6.2f} s   ratio {traced_s / inotify_s:4.2f}x"
        )
    print(
        f"          {stops} traced calls, {paths} distinct paths;"
        f" the launcher's start ({launch:.2f} s) is in the traced time",
        flush=True,
    )


def run_jobs(processes: int, starts: int, repeat: int, uid: int | None, title: str) -> None:
    for name, argv in jobs(processes, starts).items():
        print(f"  {name}, {title}:", flush=True)
        measure(argv, uid, repeat)


def main() -> None:
    import argparse
    import shutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--uid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.uid is not None:  # the re-run under setpriv
        title = f"uid {args.uid}, tracer without CAP_SYS_PTRACE"
        run_jobs(args.processes, args.starts, args.repeat, args.uid, title)
        return
    print(f"python {sys.version.split()[0]}, kernel {os.uname().release}, {os.cpu_count()} cpus")
    run_jobs(args.processes, args.starts, args.repeat, None, f"as uid {os.getuid()}")
    if os.getuid() == 0 and shutil.which("setpriv"):
        sys.stdout.flush()
        subprocess.run(
            [
                "setpriv",
                "--bounding-set",
                "-sys_ptrace",
                sys.executable,
                __file__,
                "--uid",
                "65534",
                "--processes",
                str(args.processes),
                "--starts",
                str(args.starts),
                "--repeat",
                str(args.repeat),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
