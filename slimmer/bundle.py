"""The sensor bundle: the running CPython, its shared libraries (found by
slim's own ELF closure on the host), and only the modules the sensor
imports, as one tar rooted at /.slim.

The container starts it through the bundled loader with --library-path, so
images without Python, a libc or a shell work. The tar is built once per
interpreter and sensor source, and cached.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import slimmer
from slimmer.errors import SlimError
from slimmer.protocol import (
    BUNDLE_LIBDIR,
    BUNDLE_LOADER,
    BUNDLE_PYTHON,
    BUNDLE_SCRIPT,
)
from slimmer.rootfs import RootFS, basename

log = logging.getLogger(__name__)

ENTRY_MODULE = "slimmer.sensor.main"
SENSOR_SCRIPT_TEXT = (
    "import sys\nfrom slimmer.sensor.main import main\n\nsys.exit(main(sys.argv[1]))\n"
)
PY_DIR = f"{BUNDLE_LIBDIR}/python{sys.version_info.major}.{sys.version_info.minor}"

# Part of the cache key: bump it when the way the bundle is made changes.
BUNDLE_FORMAT = 3  # 3: no run dir in the tar (it goes in the layout's bundle dir)

# The bundled glibc loader would read these files of the image it runs in:
# /etc/ld.so.preload would load the image's code into the sensor, and the
# cache would point it at the image's libraries. Each path is replaced by
# one of the same length that cannot exist (/dev is always the engine's).
LOADER_FILES_CONFINED = {
    b"/etc/ld.so.preload\0": b"/dev/null/.preload\0",
    b"/etc/ld.so.cache\0": b"/dev/null/.cache\0",
}

_DISCOVER = (
    "import json, sys\n"
    "sys.path[:0] = json.loads(sys.argv[1])\n"
    f"import {ENTRY_MODULE}\n"
    "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()}))\n"
)


class BundleError(SlimError):
    """The sensor bundle could not be made from this interpreter."""


@dataclass(frozen=True)
class BundleFile:
    """One file of the bundle: where it comes from on the host, where it goes."""

    source: str
    target: str  # path inside the bundle (relative: the run decides where it goes)


def source_roots() -> list[str]:
    """sys.path entries that hold slimmer and the sensor's dependencies."""
    import elftools  # the sensor's dependencies, imported only to find them
    import inotify_simple

    roots = [
        str(Path(slimmer.__file__).resolve().parent.parent),
        str(Path(inotify_simple.__file__).resolve().parent),
        str(Path(elftools.__file__).resolve().parent.parent),
    ]
    return list(dict.fromkeys(roots))


def interpreter() -> str:
    """The real binary of the running CPython (a venv's python is a link)."""
    return os.path.realpath(sys.executable)


def discover_modules(python: str, roots: list[str]) -> dict[str, str]:
    """Module name -> file, for every module the sensor's entry imports,
    found by importing it in a clean interpreter (-I -S)."""
    result = subprocess.run(
        [python, "-I", "-S", "-c", _DISCOVER, json.dumps(roots)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BundleError(f"cannot import the sensor with {python}: {result.stderr.strip()[-300:]}")
    modules = json.loads(result.stdout)
    return {name: path for name, path in modules.items() if path}


def module_files(modules: dict[str, str], roots: list[str]) -> list[BundleFile]:
    """Map module files into the bundle's stdlib dir, with their bytecode."""
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    bases = sorted({stdlib, *(os.path.realpath(r) for r in roots)}, key=len, reverse=True)
    files: dict[str, BundleFile] = {}
    for path in modules.values():
        real = os.path.realpath(path)
        base = next((b for b in bases if real.startswith(b + "/")), None)
        if base is None:
            raise BundleError(f"the sensor imports {path}, which is outside the stdlib and slim")
        relative = os.path.relpath(real, base)
        files[relative] = BundleFile(real, f"{PY_DIR}/{relative}")
        if real.endswith(".py"):
            directory, name = os.path.split(real)
            tag = sys.implementation.cache_tag
            cached = os.path.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            if os.path.isfile(cached):
                rel_cached = os.path.relpath(cached, base)
                files[rel_cached] = BundleFile(cached, f"{PY_DIR}/{rel_cached}")
    return sorted(files.values(), key=lambda f: f.target)


def library_files(python: str, extensions: list[str]) -> list[BundleFile]:
    """The interpreter's and the extension modules' shared libraries, by
    the names they are asked for; the loader itself becomes /.slim/lib/ld.so."""
    from slimmer.loader import Loader, Via  # pyelftools: only when a bundle is made

    loader = Loader(RootFS("/"))
    closure = loader.closure([python, *extensions])
    if closure.missing:
        names = ", ".join(sorted({d.name for d in closure.missing}))
        raise BundleError(
            f"libraries of the sensor's interpreter are missing on this host: {names}"
        )
    inputs = {os.path.realpath(p) for p in [python, *extensions]}
    files: dict[str, BundleFile] = {}
    for obj in closure.objects():
        if obj.canonical in inputs:
            continue
        if obj.via is Via.INTERPRETER:
            files[BUNDLE_LOADER] = BundleFile(obj.canonical, BUNDLE_LOADER)
    for link_map in closure.link_maps:
        for dep in link_map.dependencies:
            if dep.target is None or dep.target in inputs or "/" in dep.name:
                continue
            target = f"{BUNDLE_LIBDIR}/{basename(dep.name)}"
            files.setdefault(target, BundleFile(dep.target, target))
    if BUNDLE_LOADER not in files:
        raise BundleError(f"{python} has no dynamic loader; a static interpreter cannot be bundled")
    return sorted(files.values(), key=lambda f: f.target)


def bundle_files() -> list[BundleFile]:
    python = interpreter()
    roots = source_roots()
    modules = module_files(discover_modules(python, roots), roots)
    extensions = [f.source for f in modules if f.source.endswith(".so")]
    return [
        BundleFile(python, BUNDLE_PYTHON),
        *library_files(python, extensions),
        *modules,
    ]


def _key(files: list[BundleFile]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{slimmer.__version__}\0{BUNDLE_FORMAT}\0{sys.version}\0".encode())
    for item in files:
        info = os.stat(item.source)
        digest.update(
            f"{item.source}\0{item.target}\0{info.st_size}\0{info.st_mtime_ns}\0".encode()
        )
    return digest.hexdigest()[:16]


def confine_loader(data: bytes) -> bytes:
    """The glibc loader with the image files it would read (preload list,
    cache) renamed to paths that cannot exist. A loader that does not name
    them (musl) is returned as it is."""
    for original, replacement in LOADER_FILES_CONFINED.items():
        count = data.count(original)
        if count > 1:
            raise BundleError(f"the loader names {original!r} {count} times; cannot confine it")
        data = data.replace(original, replacement)
    return data


def _dir_member(path: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(path.lstrip("/"))
    member.type = tarfile.DIRTYPE
    member.mode = 0o755
    return member


def _write_tar(files: list[BundleFile], destination: Path, strip: str | None) -> None:
    dirs: set[str] = set()
    for item in files:
        parent = os.path.dirname(item.target)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    with tempfile.TemporaryDirectory() as scratch, tarfile.open(destination, "w") as tar:
        for directory in sorted(dirs):
            tar.addfile(_dir_member(directory))
        script = SENSOR_SCRIPT_TEXT.encode()
        member = tarfile.TarInfo(BUNDLE_SCRIPT)
        member.size, member.mode = len(script), 0o644
        tar.addfile(member, io.BytesIO(script))
        for item in files:
            source = item.source
            if strip and item.target.startswith(BUNDLE_LIBDIR + "/lib") and ".so" in item.target:
                stripped = os.path.join(scratch, basename(item.target))
                shutil.copy2(source, stripped)
                if (
                    subprocess.run(
                        [strip, "--strip-debug", stripped], capture_output=True
                    ).returncode
                    == 0
                ):
                    source = stripped
            if item.target == BUNDLE_LOADER:
                confined = os.path.join(scratch, "ld.so")
                Path(confined).write_bytes(confine_loader(Path(source).read_bytes()))
                shutil.copymode(source, confined)
                source = confined
            member = tar.gettarinfo(source, arcname=item.target.lstrip("/"))
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            member.mtime = int(os.stat(item.source).st_mtime)
            with open(source, "rb") as handle:
                tar.addfile(member, handle)


@dataclass(frozen=True)
class Bundle:
    """The bundle tar in the cache, and the sha256 of its bytes, which names
    its copy on an engine (slimmer.sensorcache)."""

    path: Path
    digest: str


def source_fingerprint() -> str:
    """A key for what the bundle is made of that costs no import and no
    subprocess: slim's version and the bundle's format, the interpreter (its
    version and its binary's path, size and mtime), and the size and mtime
    of every file of the packages the sensor loads from (slimmer,
    inotify_simple, pyelftools). The standard library and the shared
    libraries are not looked at: a bundle is a copy, whole in itself, so an
    older one still runs as it did."""
    digest = hashlib.sha256()
    python = interpreter()
    info = os.stat(python)
    digest.update(f"{slimmer.__version__}\0{BUNDLE_FORMAT}\0{sys.version}\0".encode())
    digest.update(f"{python}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    for name in ("slimmer", "inotify_simple", "elftools"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise BundleError(f"{name}, which the sensor imports, is not installed")
        for path, size, mtime in _package_files(spec):
            digest.update(f"{path}\0{size}\0{mtime}\0".encode())
    return digest.hexdigest()[:16]


def _package_files(spec: importlib.machinery.ModuleSpec) -> list[tuple[str, int, int]]:
    """Path, size and mtime of a module's file, or of every file of a package."""
    if not spec.submodule_search_locations:
        info = os.stat(str(spec.origin))
        return [(str(spec.origin), info.st_size, info.st_mtime_ns)]
    found = []
    pending = list(spec.submodule_search_locations)
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != "__pycache__":
                        pending.append(entry.path)
                elif entry.name.endswith((".py", ".so")):
                    info = entry.stat(follow_symlinks=False)
                    found.append((entry.path, info.st_size, info.st_mtime_ns))
    return sorted(found)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_index(index: Path, cache_dir: Path) -> Bundle | None:
    """The bundle an index file names, when both are there and sound."""
    try:
        entry = json.loads(index.read_text(encoding="utf-8"))
        name, digest = str(entry["tar"]), str(entry["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = cache_dir / name
    if "/" in name or not re.fullmatch(r"[0-9a-f]{64}", digest) or not path.is_file():
        return None
    return Bundle(path, digest)


def _write_atomically(path: Path, data: bytes) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


# The bundle's files cannot change while one slim runs: look them up once.
_BUNDLES: dict[Path, Bundle] = {}


def sensor_bundle(cache_dir: Path) -> Bundle:
    """The bundle tar for the running interpreter, built on first use. An
    index named by source_fingerprint() finds it again without importing the
    sensor or computing the interpreter's closure."""
    known = _BUNDLES.get(cache_dir)
    if known is not None and known.path.exists():
        return known
    index = cache_dir / f"sensor-index-{source_fingerprint()}.json"
    found = _read_index(index, cache_dir)
    if found is None:
        files = bundle_files()
        destination = cache_dir / f"sensor-{_key(files)}.tar"
        if not destination.exists():
            _build(files, destination)
        found = Bundle(destination, file_digest(destination))
        entry = {"tar": destination.name, "digest": found.digest}
        _write_atomically(index, json.dumps(entry).encode())
    _BUNDLES[cache_dir] = found
    return found


def _build(files: list[BundleFile], destination: Path) -> None:
    log.info("building the sensor bundle (once per interpreter and slim version)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # A private partial file: two slim runs may build the bundle at once.
    handle, partial = tempfile.mkstemp(
        dir=destination.parent, prefix=destination.name, suffix=".partial"
    )
    os.close(handle)
    try:
        _write_tar(files, Path(partial), shutil.which("strip"))
        os.replace(partial, destination)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
