"""The sensor's entry point inside the container (PID 1 in trace mode)."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from typing import Any

from slimmer.context import write_rootfs_tar
from slimmer.depsreport import closure_to_json, render_tree
from slimmer.errors import SlimError
from slimmer.fileset import SelectionRequest, mount_points, select_files, walk
from slimmer.loader import Loader
from slimmer.rootfs import RootFS
from slimmer.sensor.init import CommandNotFound, Supervisor, find_command
from slimmer.sensor.protocol import (
    APP_EXITED,
    EXIT_COMMAND_NOT_FOUND,
    EXIT_SENSOR_ERROR,
    EXIT_WATCH_LIMIT,
    MESSAGE_PREFIX,
    OUTPUT_TAR,
    READY_MESSAGE,
    RESULT_PATH,
    SENSOR_DIR,
    SKIPPED_TREES,
    Mode,
    RunConfig,
)
from slimmer.sensor.users import AppUser, resolve_user
from slimmer.sensor.watch import Access, TreeWatcher, WatchLimitError, file_kind

PROC_SAMPLE_SECONDS = 0.05


def say(message: str) -> None:
    sys.stderr.write(f"{MESSAGE_PREFIX}{message}\n")
    sys.stderr.flush()


def write_result(result: dict[str, Any]) -> None:
    tmp = RESULT_PATH + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle)  # ensure_ascii keeps surrogate escapes intact
    os.replace(tmp, RESULT_PATH)


def app_environment(config: RunConfig, user: AppUser) -> dict[str, str]:
    """The image's ENV, as Docker gives it to the app: HOSTNAME from the
    container, HOME from the user's passwd entry unless the image sets it."""
    env = dict(config.env)
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if "HOSTNAME" in os.environ:
        env.setdefault("HOSTNAME", os.environ["HOSTNAME"])
    env.setdefault("HOME", user.home)
    return env


class ExecSampler:
    """Samples /proc/*/exe: inotify cannot tell an exec from a read."""

    def __init__(self, watcher: TreeWatcher) -> None:
        self.watcher = watcher
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="exec-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(PROC_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                exe = os.readlink(f"/proc/{name}/exe")
            except OSError:
                continue
            exe = exe.removesuffix(" (deleted)")
            if exe not in self.seen and not exe.startswith(SENSOR_DIR + "/"):
                self.seen.add(exe)
                self.watcher.mark(exe, Access.EXECUTED | Access.OPENED)


def trace(config: RunConfig) -> int:
    started = time.monotonic()
    fs = RootFS("/")
    try:
        user = resolve_user(config.user, fs)
        env = app_environment(config, user)
        program = find_command(config.argv[0], env, config.workdir)
    except CommandNotFound as exc:
        say(f"error: command not found in the image: {exc}")
        write_result({"error": "command-not-found", "command": str(exc)})
        return EXIT_COMMAND_NOT_FOUND
    except SlimError as exc:
        say(f"error: {exc.message}")
        write_result({"error": "user", "message": exc.message})
        return EXIT_SENSOR_ERROR

    try:
        watcher = TreeWatcher(SKIPPED_TREES)
        watches = watcher.watch_tree("/")
    except WatchLimitError as exc:
        say(f"error: {exc}")
        write_result({"error": "watch-limit", "message": str(exc), "sysctl": exc.sysctl})
        return EXIT_WATCH_LIMIT
    watcher.drain()
    setup_seconds = time.monotonic() - started
    watcher.start()
    sampler = ExecSampler(watcher)
    sampler.start()
    say(f"{READY_MESSAGE} {watches} directories in {setup_seconds:.2f}s")

    supervisor = Supervisor(config.stop_signal, config.stop_timeout)
    app_started = time.monotonic()
    supervisor.start(program, config.argv, env, config.workdir, user)
    watcher.mark(fs.resolve(program).path, Access.EXECUTED | Access.OPENED)
    app_exit = supervisor.wait()
    say(f"{APP_EXITED} {app_exit.status}")
    supervisor.reap_orphans()
    sampler.stop()
    stats = watcher.stop()

    files = [
        {"path": path, "access": access.names(), "kind": file_kind(path)}
        for path, access in sorted(watcher.seen.items())
        if not any(path == t or path.startswith(t + "/") for t in SKIPPED_TREES)
    ]
    write_result(
        {
            "program": program,
            "user": {"uid": user.uid, "gid": user.gid, "groups": list(user.groups)},
            "exit": {"status": app_exit.status, "signal": app_exit.signal},
            "watches": stats.watches,
            "events": stats.events,
            "overflow": stats.overflow,
            "setup_seconds": round(setup_seconds, 3),
            "app_seconds": round(time.monotonic() - app_started, 3),
            "files": files,
        }
    )
    return app_exit.status


def deps(config: RunConfig) -> int:
    fs = RootFS("/")
    loader = Loader(
        fs,
        env=config.env,
        cwd=config.workdir,
        use_ld_cache=config.use_ld_cache,
        as_if_ldconfig=config.as_if_ldconfig,
    )
    closure = loader.closure(config.paths, runtime_extras=config.runtime_extras, gconv=config.gconv)
    result = closure_to_json(closure, "/")
    result["not_found"] = [p for p in config.paths if not fs.exists(p, cwd=config.workdir)]
    result["tree"] = [line for link_map in closure.link_maps for line in render_tree(link_map)]
    write_result(result)
    return 0


def collect(config: RunConfig) -> int:
    """Select the micro image's files here, where they are, and tar them."""
    fs = RootFS("/")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        mounts = mount_points(handle.read())
    request = SelectionRequest(**{**config.selection, "mount_points": mounts})
    selection = select_files(fs, request)
    with open(OUTPUT_TAR, "wb") as out:
        write_rootfs_tar(fs, selection, out)
    write_result({"selection": selection.to_json()})
    return 0


def inventory(config: RunConfig) -> int:
    """How many entries and bytes the image holds (without the sensor)."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "other": 0, "bytes": 0}
    dirs = []
    for path, info in walk(RootFS("/")):
        if stat.S_ISREG(info.st_mode):
            counts["files"] += 1
            counts["bytes"] += info.st_size
        elif stat.S_ISDIR(info.st_mode):
            counts["dirs"] += 1
            dirs.append(path)
        elif stat.S_ISLNK(info.st_mode):
            counts["symlinks"] += 1
        else:
            counts["other"] += 1
    write_result({**counts, "dir_paths": sorted(dirs)})
    return 0


def main(config_path: str) -> int:
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = RunConfig.from_json(handle.read())
        mode = Mode(config.mode)
        if mode is Mode.TRACE:
            return trace(config)
        if mode is Mode.DEPS:
            return deps(config)
        if mode is Mode.INVENTORY:
            return inventory(config)
        return collect(config)
    except Exception as exc:  # the host needs a line, not a silent exit
        say(f"error: sensor failed: {type(exc).__name__}: {exc}")
        return EXIT_SENSOR_ERROR
