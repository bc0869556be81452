"""The syscall layer where the sensor really runs: a container with the
engine's default seccomp profile, root without CAP_SYS_PTRACE, the app as
root, as the image's non-root USER, or dropping privileges itself."""

from __future__ import annotations

from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.trace import Lookup, PathAction, Trace
from slimmer.tracer import TraceOptions, trace_image


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
