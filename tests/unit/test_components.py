"""The app's own components, found in an image root: a binary by the
version string it carries (a real ELF file compiled here), Python, Node and
Ruby packages by their metadata; never a file an OS package owns."""

from __future__ import annotations

import subprocess
from pathlib import Path

from slimmer.components import (
    CLASSIFIERS,
    SCAN_CHUNK,
    AppComponent,
    Ecosystem,
    app_components,
    scan_version,
)
from slimmer.rootfs import RootFS

SITE = "/app/venv/lib/python3.11/site-packages"


def write(root: Path, path: str, data: str | bytes) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        target.write_bytes(data)
    else:
        target.write_text(data)


def compile_with_version(root: Path, path: str, version_string: str, padding: int = 0) -> None:
    """A real executable whose read-only data holds the version string, as
    nginx's NGINX_VER does (padding pushes it past the first chunk)."""
    source = root.parent / "prog.c"
    source.write_text(
        f'static const char pad[{padding + 1}] = "x";\n'
        f'const char *version = "{version_string}";\n'
        "int main(void) { return pad[0] + version[0] == 0; }\n"
    )
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O0", "-o", str(target), str(source)], check=True)


def image(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    compile_with_version(root, "/opt/nginx/sbin/nginx", "nginx/1.22.1")
    compile_with_version(root, "/usr/sbin/nginx", "nginx/1.18.0")  # an OS package's
    write(root, f"{SITE}/flask/__init__.py", "from .app import Flask\n")
    write(root, f"{SITE}/flask/app.py", "class Flask: ...\n")
    write(root, f"{SITE}/flask/unused.py", "")
    write(
        root,
        f"{SITE}/Flask-3.0.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: Flask\nVersion: 3.0.0\nSummary: x\n\nName: not-this\n",
    )
    write(
        root,
        f"{SITE}/Flask-3.0.0.dist-info/RECORD",
        "flask/__init__.py,sha256=x,22\nflask/app.py,sha256=y,18\n"
        "flask/unused.py,,0\nFlask-3.0.0.dist-info/RECORD,,\n",
    )
    write(
        root,
        f"{SITE}/itsdangerous-2.1.2.dist-info/METADATA",
        "Name: itsdangerous\nVersion: 2.1.2\n",
    )
    write(root, f"{SITE}/itsdangerous-2.1.2.dist-info/RECORD", "itsdangerous/__init__.py,,\n")
    write(
        root,
        "/srv/app/node_modules/@scope/pad/package.json",
        '{"name": "@scope/pad", "version": "1.3.0"}',
    )
    write(root, "/srv/app/node_modules/@scope/pad/index.js", "module.exports = 1\n")
    write(
        root,
        "/srv/app/node_modules/@scope/pad/node_modules/inner/package.json",
        '{"name": "inner", "version": "0.1.0"}',
    )
    write(root, "/srv/app/node_modules/@scope/pad/node_modules/inner/lib/x.js", "")
    write(root, "/srv/app/node_modules/broken/package.json", "{not json")
    write(root, "/srv/app/node_modules/broken/index.js", "")
    write(root, "/usr/local/bundle/gems/rack-3.0.8/lib/rack.rb", "module Rack; end\n")
    write(root, "/usr/local/bundle/specifications/rack-3.0.8.gemspec", "Gem::Specification.new\n")
    write(root, "/usr/local/bundle/gems/nospec-1.0/lib/nospec.rb", "")
    return root


def test_components_of_kept_files(tmp_path: Path) -> None:
    root = image(tmp_path)
    kept = [
        "/opt/nginx/sbin/nginx",
        "/usr/sbin/nginx",
        f"{SITE}/flask/__init__.py",
        f"{SITE}/flask/app.py",
        "/srv/app/node_modules/@scope/pad/index.js",
        "/srv/app/node_modules/@scope/pad/node_modules/inner/lib/x.js",
        "/srv/app/node_modules/broken/index.js",
        "/usr/local/bundle/gems/rack-3.0.8/lib/rack.rb",
        "/usr/local/bundle/gems/nospec-1.0/lib/nospec.rb",
    ]
    found = app_components(RootFS(root), kept, {"/usr/sbin/nginx"})
    by_name = {component.name: component for component in found}
    assert set(by_name) == {"nginx", "Flask", "@scope/pad", "inner", "rack"}
    assert by_name["nginx"] == AppComponent(
        Ecosystem.BINARY,
        "nginx",
        "1.22.1",
        "/opt/nginx/sbin/nginx",
        ("/opt/nginx/sbin/nginx",),
        "cpe:2.3:a:f5:nginx:1.22.1:*:*:*:*:*:*:*",
    )  # the OS package's nginx is the package's, not a component
    flask = by_name["Flask"]
    assert (flask.version, flask.files) == (
        "3.0.0",
        (f"{SITE}/flask/__init__.py", f"{SITE}/flask/app.py"),
    )
    assert flask.evidence == f"{SITE}/Flask-3.0.0.dist-info/METADATA"
    assert by_name["@scope/pad"].files == ("/srv/app/node_modules/@scope/pad/index.js",)
    assert by_name["inner"].version == "0.1.0"  # the innermost node_modules owns the file
    assert by_name["rack"].ecosystem is Ecosystem.GEM and by_name["rack"].version == "3.0.8"


def test_a_version_string_across_two_chunks_is_found(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root, "/bin/nginx", b"\0" * (SCAN_CHUNK - 5) + b"nginx/1.25.3\0" + b"\0" * 100)
    nginx = next(c for c in CLASSIFIERS if c.name == "nginx")
    assert scan_version(RootFS(root), "/bin/nginx", nginx.version) == "1.25.3"
    assert scan_version(RootFS(root), "/bin/missing", nginx.version) is None
