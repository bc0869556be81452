"""Serve an image and ask it over HTTP: what a user of the image sees."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from slimmer.engine import Engine


def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def serve_and_get(
    engine: Engine, image: str, port: int, paths: list[str], run_id: str
) -> list[tuple[int, bytes]]:
    with engine.container(image, run_id, ports=[port]) as container:
        engine.start(container)
        host_port = engine.published_port(container, port)
        deadline = time.monotonic() + 30
        while True:
            try:
                http_get(host_port, "/")
                break
            except OSError:
                assert engine.is_running(container), engine.logs(container).decode()
                assert time.monotonic() < deadline, "no answer"
                time.sleep(0.1)
        return [http_get(host_port, path) for path in paths]
