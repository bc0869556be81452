"""Each runtime's search paths, read from the image root (nothing is run).

- Python: for each interpreter (a python binary the app ran, or the
  lib/pythonX.Y dir its stdlib was loaded from): sys.path as CPython's
  `site` builds it (the stdlib, lib-dynload, Debian's dist-packages and
  site-packages, the dirs .pth files add), PYTHONPATH from the image's ENV,
  and the package roots of the Python files the trace saw loaded (the
  script's dir, a venv's site-packages).
- Perl: @INC as compiled into perl and libperl (the NUL-terminated dirs
  with "perl" in them that exist in the image), PERL5LIB / PERLLIB.
- Ruby: $LOAD_PATH compiled into ruby and libruby the same way, RUBYLIB,
  and the lib dir of every installed gem of the gem homes found there.
- Node: the global folders (NODE_PATH, $HOME/.node_modules,
  $HOME/.node_libraries, $PREFIX/lib/node or the build's
  node_relative_path, which Debian sets to its /usr/share/nodejs and
  /usr/lib/<triplet>/nodejs).
- PHP: include_path (the default and those php.ini files set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from slimmer.closure.python import PythonPaths
from slimmer.errors import PathError
from slimmer.loader import Loader, SkippedInput
from slimmer.rootfs import RootFS, basename, join, parent

PYTHON_STDLIB = re.compile(r"^(.*)/lib(?:64)?/python(3\.\d+)(?=/|$)")
PYTHON_NAME = re.compile(r"python(3\.\d+)?$")
MAX_BINARY_BYTES = 256 * 1024 * 1024
CHUNK = 4 * 1024 * 1024
OVERLAP = 512
DIR_STRING = re.compile(rb"(?<![\x21-\x7e])(/[\x21-\x7e]{1,200})\x00")
NODE_RELATIVE = re.compile(rb'"node_relative_path":\s*"([^"]*)"')
PHP_INCLUDE = re.compile(r"^\s*include_path\s*=\s*[\"']?([^\"'\n;]+)", re.MULTILINE)
PHP_DEFAULT_INCLUDE = (".", "/usr/share/php")
PHP_INI_GLOBS = ("/etc/php", "/usr/local/etc/php")


def is_dir(fs: RootFS, path: str) -> bool:
    try:
        return fs.stat(path).st_mode & 0o170000 == 0o040000
    except (PathError, OSError):
        return False


def listdir(fs: RootFS, path: str) -> list[str]:
    try:
        return fs.listdir(fs.resolve(path).path)
    except (PathError, OSError):
        return []


def env_dirs(env: dict[str, str], *names: str) -> list[str]:
    dirs = []
    for name in names:
        dirs += [part for part in env.get(name, "").split(":") if part.startswith("/")]
    return dirs


def unique(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(paths))


def linked_objects(fs: RootFS, program: str) -> list[str]:
    """The program and the libraries the loader would map with it."""
    outcome = Loader(fs).link_map(program)
    if isinstance(outcome, SkippedInput):
        return [program]
    return [program, *(obj.canonical for obj in outcome.objects)]


def scan_binary(fs: RootFS, path: str, pattern: re.Pattern[bytes]) -> list[bytes]:
    """Group 1 of every match of `pattern` in a file, read in chunks (a
    match is at most OVERLAP bytes long), up to MAX_BINARY_BYTES."""
    try:
        _, fd = fs.open_file(path)
    except PathError:
        return []
    found: dict[bytes, None] = {}
    with os.fdopen(fd, "rb") as handle:
        tail = b""
        total = 0
        while total < MAX_BINARY_BYTES:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            data = tail + chunk
            for match in pattern.finditer(data):
                found.setdefault(match.group(1))
            tail = data[-OVERLAP:]
    return list(found)


def binary_strings(fs: RootFS, path: str) -> list[str]:
    return [s.decode("ascii") for s in scan_binary(fs, path, DIR_STRING)]


def compiled_dirs(fs: RootFS, programs: Iterable[str], *words: str) -> list[str]:
    """Directories compiled into the programs and their libraries (those
    named after words[0]) that have one of `words` in their path and exist
    in the image."""
    found: list[str] = []
    for program in programs:
        for obj in linked_objects(fs, program):
            if words[0] not in basename(obj) and obj != program:
                continue
            strings = binary_strings(fs, obj)
            found += [s for s in strings if any(w in s for w in words) and is_dir(fs, s)]
    return list(dict.fromkeys(found))


# -- Python ----------------------------------------------------------------------


def python_stdlib_dirs(fs: RootFS, interpreters: Iterable[str], seen: Iterable[str]) -> list[str]:
    found: list[str] = []
    for path in seen:
        match = PYTHON_STDLIB.match(path)
        if match:
            found.append(match.group(0))
    for program in interpreters:
        prefix = parent(parent(program))
        name = basename(program)
        match = PYTHON_NAME.search(name)
        if match is None:
            continue
        for lib in ("lib", "lib64"):
            if match.group(1):
                found.append(join(prefix, f"{lib}/python{match.group(1)}"))
                continue
            found += [
                join(prefix, f"{lib}/{entry}")
                for entry in listdir(fs, join(prefix, lib))
                if re.fullmatch(r"python3\.\d+", entry)
            ]
    return [d for d in dict.fromkeys(found) if fs.exists(join(d, "os.py"))]


def pth_dirs(fs: RootFS, site: str) -> list[str]:
    """The dirs a site dir's .pth files add (lines that are not imports)."""
    dirs = []
    for name in listdir(fs, site):
        if not name.endswith(".pth"):
            continue
        try:
            text = fs.read_text(join(site, name))
        except PathError:
            continue
        for line in text.splitlines()[:1000]:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            directory = line if line.startswith("/") else join(site, line)
            if is_dir(fs, directory):
                dirs.append(directory)
    return dirs


def package_root(fs: RootFS, path: str) -> str | None:
    """The sys.path entry a loaded .py/.pyc was found in: up from its dir
    while the dir is a package (has __init__)."""
    if path.endswith(".pyc") and parent(path).endswith("/__pycache__"):
        path = join(parent(parent(path)), basename(path).split(".", 1)[0] + ".py")
    elif not path.endswith(".py"):
        return None
    directory = parent(path)
    while directory != "/" and (
        fs.exists(join(directory, "__init__.py")) or fs.exists(join(directory, "__init__.pyc"))
    ):
        directory = parent(directory)
    return directory


def python_paths(
    fs: RootFS, interpreters: Iterable[str], seen: Iterable[str], env: dict[str, str]
) -> PythonPaths:
    seen = list(seen)
    stdlib = python_stdlib_dirs(fs, interpreters, seen)
    system: list[str] = []
    for directory in stdlib:
        match = PYTHON_STDLIB.match(directory)
        prefix, version = (match.group(1), match.group(2)) if match else (parent(directory), "")
        system += [directory, join(directory, "lib-dynload")]
        for site in (
            f"{prefix}/local/lib/python{version}/dist-packages",
            f"{prefix}/lib/python3/dist-packages",
            f"{prefix}/lib/python{version}/dist-packages",
            join(directory, "site-packages"),
            f"{prefix}/local/lib/python{version}/site-packages",
        ):
            if is_dir(fs, site):
                system += [site, *pth_dirs(fs, site)]
    roots = [r for r in (package_root(fs, p) for p in seen) if r is not None]
    known = set(system)
    inferred = [r for r in dict.fromkeys(roots) if r not in known]
    ordered = [*inferred, *env_dirs(env, "PYTHONPATH"), *system]
    tags = [f"cpython-{basename(d)[len('python') :].replace('.', '')}" for d in stdlib]
    return PythonPaths(
        roots=unique(d for d in ordered if is_dir(fs, d)),
        stdlib=tuple(stdlib),
        tags=unique(tags),
    )


# -- Perl, Ruby, Node, PHP -------------------------------------------------------


def perl_inc(fs: RootFS, interpreters: Iterable[str], env: dict[str, str]) -> tuple[str, ...]:
    compiled = compiled_dirs(fs, interpreters, "perl")
    return unique(d for d in [*env_dirs(env, "PERL5LIB", "PERLLIB"), *compiled] if is_dir(fs, d))


def ruby_load_path(fs: RootFS, interpreters: Iterable[str], env: dict[str, str]) -> tuple[str, ...]:
    compiled = compiled_dirs(fs, interpreters, "ruby", "gems")
    gems = []
    for home in compiled:
        for spec in listdir(fs, join(home, "gems")):
            lib = join(home, f"gems/{spec}/lib")
            if is_dir(fs, lib):
                gems.append(lib)
    load_path = [d for d in compiled if not is_dir(fs, join(d, "gems"))]
    return unique(d for d in [*env_dirs(env, "RUBYLIB"), *load_path, *gems] if is_dir(fs, d))


def node_globals(fs: RootFS, interpreters: Iterable[str], env: dict[str, str]) -> tuple[str, ...]:
    dirs = env_dirs(env, "NODE_PATH")
    home = env.get("HOME", "/root")
    if home.startswith("/"):
        dirs += [join(home, ".node_modules"), join(home, ".node_libraries")]
    for program in interpreters:
        prefix = parent(parent(program))
        relative: list[str] = []
        for obj in linked_objects(fs, program):
            for value in scan_binary(fs, obj, NODE_RELATIVE):
                relative += [p for p in value.decode("ascii", "replace").split(":") if p]
        dirs += [join(prefix, part) for part in (relative or ["lib/node"])]
    return unique(d for d in dirs if is_dir(fs, d))


def php_include_path(fs: RootFS) -> tuple[str, ...]:
    dirs = list(PHP_DEFAULT_INCLUDE)
    pending = list(PHP_INI_GLOBS)
    seen = 0
    while pending and seen < 200:
        directory = pending.pop()
        for name in listdir(fs, directory):
            path = join(directory, name)
            seen += 1
            if is_dir(fs, path):
                pending.append(path)
            elif name.endswith(".ini"):
                try:
                    text = fs.read_text(path)
                except PathError:
                    continue
                for match in PHP_INCLUDE.finditer(text):
                    dirs += [p.strip() for p in match.group(1).split(":") if p.strip()]
    return unique(dirs)
