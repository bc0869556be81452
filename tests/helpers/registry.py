"""A real registry for push tests: Debian's docker-registry (the CNCF
distribution registry), started by the test on a free port of 127.0.0.1
with its storage in the test's directory (an engine treats 127.0.0.0/8 as
an insecure registry: plain HTTP), stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONFIG = """version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def local_registry(directory: Path) -> Iterator[str]:
    """Yields the registry's host:port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is missing: run scripts/test-deps.sh")
    port = free_port()
    config = directory / "registry.yml"
    config.write_text(CONFIG.format(storage=directory / "storage", port=port))
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the registry did not start: {(directory / 'registry.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        log.close()
