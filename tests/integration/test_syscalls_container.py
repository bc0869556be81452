"""The syscall observer where the sensor really runs: in a container of the
engine's default seccomp profile, as root without CAP_SYS_PTRACE or any
added capability, from the sensor bundle copied in with put_archive, the
app dropping to uid 65534 (or dropping privileges itself)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

from slimmer.bundle import sensor_bundle
from slimmer.cli import default_cache_dir
from slimmer.engine import Engine
from slimmer.sensor.protocol import SENSOR_DIR, SENSOR_LIBDIR, SENSOR_LOADER, SENSOR_PYTHON

IMAGE = "debian:bookworm"
CHECK_SCRIPT = f"{SENSOR_DIR}/check-syscalls.py"
DROPPER = "/usr/local/bin/slim-test-dropper"

# Runs inside the container with the bundle's interpreter.
CHECK = f"""
import json, signal
from slimmer.sensor.init import TracedSupervisor
from slimmer.sensor.syscalls import PathLog, SyscallTracer, probe_support
from slimmer.sensor.users import AppUser

JOB = (
    "cd /etc && cat hostname >/dev/null; ls -ld /var/run/ >/dev/null; "
    "ls -l /var/run >/dev/null; test -e /nonexistent-in-container; exit 7"
)
report = {{"probe": [vars(probe_support(uid, uid)) for uid in (0, 65534)]}}
for name, argv, uid in (
    ("root", ["sh", "-c", JOB], 0),
    ("nobody", ["sh", "-c", JOB], 65534),
    ("dropper", ["{DROPPER}", "/etc"], 0),
):
    tracer = SyscallTracer(PathLog())
    supervisor = TracedSupervisor(signal.SIGTERM, 5.0, tracer)
    program = "/bin/sh" if argv[0] == "sh" else argv[0]
    user = AppUser(uid, uid, (), None, "/")
    supervisor.start(program, argv, {{"PATH": "/usr/bin:/bin"}}, "/", user)
    app_exit = supervisor.wait()
    supervisor.reap_orphans()
    report[name] = {{
        "status": app_exit.status,
        "paths": tracer.log.to_json()["paths"],
        "stats": vars(tracer.stats),
    }}
print(json.dumps(report, default=str))
"""

DROPPER_SOURCE = """
    #include <fcntl.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        struct stat st;
        if (setgid(65534) || setuid(65534)) { perror("drop"); return 2; }
        if (chdir(argv[1])) return 3;
        stat("hostname", &st);
        stat("/nonexistent-after-drop", &st);
        return 0;
    }
"""


def files_tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (data, mode) in files.items():
            member = tarfile.TarInfo(path.lstrip("/"))
            member.size, member.mode = len(data), mode
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def records(run: dict[str, object]) -> set[tuple[str, str, bool, bool]]:
    return {
        (p["path"], p["action"], p["follow"], p["existed"])
        for p in run["paths"]  # type: ignore[attr-defined]
    }


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_ptrace_and_seccomp_work_in_a_default_container(
    engine: Engine, run_id: str, tmp_path: Path
) -> None:
    if not engine.image_exists(IMAGE):
        pytest.skip(f"{IMAGE} is not on the engine (scripts/base-images.sh makes it)")
    (tmp_path / "dropper.c").write_text(textwrap.dedent(DROPPER_SOURCE))
    subprocess.run(
        ["gcc", "-static", "-O1", "-o", str(tmp_path / "dropper"), str(tmp_path / "dropper.c")],
        check=True,
        capture_output=True,
    )
    bundle = sensor_bundle(default_cache_dir())
    entrypoint = [SENSOR_LOADER, "--library-path", SENSOR_LIBDIR, SENSOR_PYTHON, "-I", "-S", "-B"]
    with engine.container(
        IMAGE, run_id, entrypoint=[*entrypoint, CHECK_SCRIPT], command=[], user="0", detach=True
    ) as container:
        with bundle.open("rb") as handle:
            engine.put_archive(container, handle)
        engine.put_archive(
            container,
            files_tar(
                {
                    CHECK_SCRIPT: (CHECK.encode(), 0o644),
                    DROPPER: ((tmp_path / "dropper").read_bytes(), 0o755),
                }
            ),
        )
        container.start()
        status = engine.wait(container, 120)
        output = container.logs(stdout=True, stderr=False).decode()
        errors = container.logs(stdout=False, stderr=True).decode()
    assert status == 0, errors
    report = json.loads(output.strip().splitlines()[-1])
    assert [probe["available"] for probe in report["probe"]] == [True, True], report["probe"]
    for name in ("root", "nobody"):
        run = report[name]
        assert run["status"] == 7
        seen = records(run)
        assert ("/bin/sh", "exec", True, True) in seen
        assert ("/etc", "chdir", True, True) in seen
        assert ("/etc/hostname", "open", True, True) in seen  # relative to the cwd
        assert ("/var/run", "stat", True, True) in seen  # "/var/run/": through the link
        assert ("/var/run", "stat", False, True) in seen  # the link itself
        assert any(r[0] == "/nonexistent-in-container" and not r[3] for r in seen)
    # another uid: /proc/<tid>/mem and cwd opened with the tracee's fs uid
    assert report["nobody"]["stats"]["mem_opens"] > 0
    assert report["nobody"]["stats"]["fsuid_switches"] > 0
    dropper = report["dropper"]
    assert dropper["status"] == 0
    assert {
        (DROPPER, "exec", True, True),
        ("/etc/hostname", "stat", True, True),
        ("/nonexistent-after-drop", "stat", True, False),
    } <= records(dropper)
