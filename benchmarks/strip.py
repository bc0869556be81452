"""Benchmark: what stripping could take off the nginx micro image (issue
14: from about 13.6 MB to under 10 MB), and that the stripped nginx answers
the same.

Builds the micro context of nginx-build (`slim build --context-only
--no-layers`), strips every kept file with slimmer.strip (pure Python, no
binutils), protected or not: the upper bound (`slim build --strip` leaves
the files a package lists with a digest alone; benchmarks/production.py
measures it), prints each ELF file's outcome and the totals, then runs the
stripped nginx in a container of nginx-build and compares its answers with
the original's.

    python benchmarks/strip.py [--image nginx-build]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from slimmer.engine import Engine
from slimmer.strip import StripOutcome, strip_elf

NGINX = "/opt/nginx/sbin/nginx"
CHECK = (
    f"{NGINX} -t -q && {NGINX} && sleep 0.5 && curl -s localhost/ | sha256sum"
    " && curl -s -o /dev/null -w '%{http_code}\\n' localhost/missing"
)


def rootfs_of(image: str, scratch: Path) -> bytes:
    slim = Path(sys.executable).with_name("slim")
    context = scratch / "ctx.tar"
    subprocess.run(
        [
            str(slim),
            "build",
            image,
            "--quiet-app",
            "--context-only",
            str(context),
            "--no-layers",
            "--report",
            str(scratch / "report.json"),
            "--sbom",
            str(scratch / "sbom.json"),
        ],
        check=True,
        capture_output=True,
    )
    with tarfile.open(context) as outer:
        member = outer.extractfile("rootfs.tar")
        assert member is not None
        return member.read()


def answers(engine: Engine, image: str, binary: bytes | None) -> tuple[int, bytes]:
    with engine.container(
        image, engine.new_run_id(), entrypoint=["sh", "-c", CHECK], command=[]
    ) as container:
        if binary is not None:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                info = tarfile.TarInfo(NGINX.lstrip("/"))
                info.size, info.mode = len(binary), 0o755
                tar.addfile(info, io.BytesIO(binary))
            engine.put_archive(container, buffer.getvalue())
        engine.start(container)
        status = engine.wait(container, 60)
        return (-1 if status is None else status), engine.logs(container)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="nginx-build")
    args = parser.parse_args()
    with Engine.from_environment(os.environ) as engine:
        measure(engine, args.image)


def measure(engine: Engine, image: str) -> None:
    with tempfile.TemporaryDirectory(prefix="slim-strip-") as scratch:
        rootfs = rootfs_of(image, Path(scratch))
    before = after = 0
    seconds = 0.0
    stripped_nginx = None
    print(f"{'file':<52} {'outcome':<10} {'before':>10} {'after':>10}")
    with tarfile.open(fileobj=io.BytesIO(rootfs)) as tar:
        for member in tar:
            if not member.isreg():
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            data = handle.read()
            started = time.monotonic()
            result = strip_elf(data)
            seconds += time.monotonic() - started
            before += result.old_size
            after += result.new_size
            if data[:4] == b"\x7fELF":
                print(
                    f"/{member.name:<51} {result.outcome.value:<10} {result.old_size:>10}"
                    f" {result.new_size:>10}  {result.reason}"
                )
            if "/" + member.name == NGINX and result.outcome is StripOutcome.STRIPPED:
                stripped_nginx = result.output(data)
    print(
        f"\nfile bytes of the micro image: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB"
        f" ({1 - after / before:.0%} less), stripping took {seconds:.2f} s"
    )
    original = answers(engine, image, None)
    stripped = answers(engine, image, stripped_nginx)
    print(f"original nginx: {original}")
    print(f"stripped nginx: {stripped}")
    print("same answers" if original == stripped else "DIFFERENT ANSWERS")


if __name__ == "__main__":
    main()
