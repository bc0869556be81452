"""The dynamic loader's view of an image root: link maps and their closure.

Nothing from the image is run. For each executable the link map is built the
way glibc's ld.so (or musl's) builds it: the interpreter and preloads first,
then DT_NEEDED breadth-first, first resolution wins for the whole process, a
name already loaded (under any name it was loaded by, or its SONAME) is
reused. The search order and the candidate checks follow
docs/loader.md; every path goes through RootFS, so nothing resolves
outside the root.
"""

from __future__ import annotations

import errno
import logging
import re
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from slimmer.elf import (
    HEADER_BYTES,
    ElfIdent,
    ElfInfo,
    ElfProblem,
    Verdict,
    check_loadable,
    parse_elf,
    read_ident,
)
from slimmer.errors import PathError
from slimmer.ldcache import LdCache, abi_flags_for, ld_so_conf_dirs, load_ld_cache
from slimmer.rootfs import Resolved, RootFS, SymlinkHop, basename, join, parent

log = logging.getLogger(__name__)

# e_machine numbers
EM_386, EM_ARM, EM_X86_64, EM_AARCH64 = 3, 40, 62, 183

PLATFORMS = {EM_X86_64: "x86_64", EM_386: "i686", EM_AARCH64: "aarch64", EM_ARM: "v7l"}

# Where ld.so lives when a library is analysed without an executable.
DEFAULT_INTERPRETERS = {
    (EM_X86_64, 2): "/lib64/ld-linux-x86-64.so.2",
    (EM_386, 1): "/lib/ld-linux.so.2",
    (EM_AARCH64, 2): "/lib/ld-linux-aarch64.so.1",
    (EM_ARM, 1): "/lib/ld-linux-armhf.so.3",
}

# Used only when the system dirs cannot be read out of ld.so itself.
FALLBACK_SYSTEM_DIRS = {
    (EM_X86_64, 2): ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"),
    (EM_386, 1): ("/lib/i386-linux-gnu", "/usr/lib/i386-linux-gnu", "/lib", "/usr/lib"),
    (EM_AARCH64, 2): (
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
    ),
}
GENERIC_SYSTEM_DIRS = ("/lib", "/usr/lib")

# Subdirectories glibc tries in every search dir, most specific first.
X86_64_HWCAP_SUBDIRS = (
    "glibc-hwcaps/x86-64-v4",
    "glibc-hwcaps/x86-64-v3",
    "glibc-hwcaps/x86-64-v2",
    "tls/haswell/x86_64",
    "tls/haswell",
    "tls/x86_64",
    "tls",
    "haswell/x86_64",
    "haswell",
    "x86_64",
)
GENERIC_HWCAP_SUBDIRS = ("tls",)

MUSL_DEFAULT_PATH = ("/lib", "/usr/local/lib", "/usr/lib")
MUSL_SELF_PREFIXES = ("libc.", "libpthread.", "librt.", "libm.", "libdl.", "libutil.", "libxnet.")

# glibc >= 2.34 has these NSS services built into libc.
GLIBC_BUILTIN_NSS = frozenset({"files", "dns"})

_SYSTEM_DIRS_RE = re.compile(rb"(?:/[A-Za-z0-9_.+-][A-Za-z0-9_./+-]*/\x00){2,}")
_DST_RE = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


class Libc(Enum):
    GLIBC = "glibc"
    MUSL = "musl"


class Via(Enum):
    """How an object came into a link map."""

    EXECUTABLE = "executable"
    INPUT = "input"  # a library analysed on its own (traced, or dlopen'ed)
    INTERPRETER = "interpreter"
    PRELOAD = "preload"
    PATH = "path"  # the name contained a '/'
    RPATH = "rpath"
    LD_LIBRARY_PATH = "ld_library_path"
    RUNPATH = "runpath"
    LD_CACHE = "ld.so.cache"
    DEFAULT_DIRS = "default_dirs"
    MUSL_PATH = "musl_path"
    RUNTIME = "runtime"  # dlopen'ed by libc itself: NSS modules, libgcc_s


@dataclass(frozen=True)
class LoaderFacts:
    """What one dynamic loader brings to the search."""

    libc: Libc
    system_dirs: tuple[str, ...]
    lib: str  # $LIB
    platform: str  # $PLATFORM
    hwcap_subdirs: tuple[str, ...]
    abi_flags: int | None  # ld.so.cache entries this ABI accepts


@dataclass(frozen=True)
class LoadedObject:
    canonical: str  # identity: the in-root path with no symlink in it
    requested: str  # the name asked for (DT_NEEDED, PT_INTERP, the input path)
    opened_as: str  # the path it was opened under ($ORIGIN comes from it)
    loaded_by: str | None  # canonical path of the requester
    via: Via
    hops: tuple[SymlinkHop, ...]  # symlinks passed from opened_as to canonical
    variants: tuple[Resolved, ...] = ()  # CPU-dependent alternatives (glibc-hwcaps)
    info: ElfInfo | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Dependency:
    """One request for a library and what answered it."""

    requester: str  # canonical path of the object that asked
    name: str
    target: str | None  # canonical path, or None when unresolved
    problem: str | None = None  # why it is unresolved
    optional: bool = False  # libc dlopens it and copes without it (NSS, libgcc_s)


@dataclass(frozen=True)
class LinkMap:
    root: str  # the input path as given
    libc: Libc | None
    objects: tuple[LoadedObject, ...]  # in load order
    dependencies: tuple[Dependency, ...]

    @property
    def missing(self) -> tuple[Dependency, ...]:
        """Libraries the process needs and the loader would not find."""
        return tuple(d for d in self.dependencies if d.target is None and not d.optional)


@dataclass(frozen=True)
class SkippedInput:
    path: str
    reason: str


@dataclass(frozen=True)
class Closure:
    """The union of the link maps of a set of inputs."""

    link_maps: tuple[LinkMap, ...]
    skipped: tuple[SkippedInput, ...]
    input_hops: tuple[SymlinkHop, ...]  # links passed to reach the inputs themselves

    @property
    def files(self) -> tuple[str, ...]:
        paths: set[str] = set()
        for link_map in self.link_maps:
            for obj in link_map.objects:
                paths.add(obj.canonical)
                paths.update(variant.path for variant in obj.variants)
        return tuple(sorted(paths))

    @property
    def symlinks(self) -> tuple[SymlinkHop, ...]:
        hops: set[SymlinkHop] = set(self.input_hops)
        for link_map in self.link_maps:
            for obj in link_map.objects:
                hops.update(obj.hops)
                for variant in obj.variants:
                    hops.update(variant.hops)
        return tuple(sorted(hops, key=lambda hop: hop.path))

    @property
    def missing(self) -> tuple[Dependency, ...]:
        seen: dict[tuple[str, str], Dependency] = {}
        for link_map in self.link_maps:
            for dep in link_map.missing:
                seen.setdefault((dep.requester, dep.name), dep)
        return tuple(seen[key] for key in sorted(seen))

    def objects(self) -> Iterator[LoadedObject]:
        """Each object once, in the order of first load."""
        seen: set[str] = set()
        for link_map in self.link_maps:
            for obj in link_map.objects:
                if obj.canonical not in seen:
                    seen.add(obj.canonical)
                    yield obj


# -- small pure helpers ------------------------------------------------------


def expand_tokens(text: str, origin: str, facts: LoaderFacts) -> str:
    """Expand $ORIGIN, $LIB and $PLATFORM (and their ${} forms); musl knows
    only $ORIGIN. `$ORIGINAL` is not a token."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(1) or match.group(2)
        if token == "ORIGIN":
            return origin
        if facts.libc is Libc.MUSL:
            return match.group(0)
        return facts.lib if token == "LIB" else facts.platform

    return _DST_RE.sub(substitute, text)


def split_path_list(text: str, separators: str = ":") -> list[str]:
    """Split a search path; an empty element means the current directory."""
    pattern = "[" + re.escape(separators) + "]"
    return [element or "." for element in re.split(pattern, text)]


def system_dirs_from_ldso(data: bytes) -> tuple[str, ...] | None:
    """glibc stores its default search dirs NUL-separated in ld.so; find the
    first run of '/…/' strings that names a lib directory."""
    for match in _SYSTEM_DIRS_RE.finditer(data):
        dirs = [
            chunk.decode("utf-8", "surrogateescape")
            for chunk in match.group(0).split(b"\x00")
            if chunk
        ]
        if any(d.rstrip("/").endswith(("lib", "lib64")) or "-linux-" in d for d in dirs):
            return tuple(d.rstrip("/") or "/" for d in dirs)
    return None


def musl_arch(interpreter: str) -> str:
    """'x86_64' from '/lib/ld-musl-x86_64.so.1'."""
    name = basename(interpreter)
    return name.removeprefix("ld-musl-").split(".so", 1)[0]


def musl_path_file(interpreter: str) -> str:
    """musl reads <prefix>/etc/ld-musl-<arch>.path, the prefix being the
    interpreter path less its last two components."""
    prefix = parent(parent(interpreter)) if interpreter.startswith("/") else ""
    prefix = "" if prefix == "/" else prefix
    return f"{prefix}/etc/ld-musl-{musl_arch(interpreter)}.path"


def is_musl_interpreter(path: str) -> bool:
    return basename(path).startswith("ld-musl-")


def is_musl_self(name: str) -> bool:
    return "/" not in name and name.startswith(MUSL_SELF_PREFIXES)


def nss_services(text: str) -> tuple[str, ...]:
    """The service names an nsswitch.conf uses, in order of appearance."""
    services: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0]
        if ":" not in line:
            continue
        _, _, spec = line.partition(":")
        for word in re.sub(r"\[[^\]]*\]", " ", spec).split():
            if word not in services:
                services.append(word)
    return tuple(services)


# -- the loader ----------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    opened_as: str
    resolved: Resolved
    info: ElfInfo
    via: Via
    variants: tuple[Resolved, ...] = ()


@dataclass(frozen=True)
class _Fatal:
    path: str
    reason: str


class _Miss(Enum):
    ABSENT = "absent"  # not there, or skipped (wrong class, machine)
    LOOP = "loop"  # ELOOP: abandon the rest of this list


class Loader:
    """Computes link maps inside one image root.

    `env` is the image's configured environment (LD_LIBRARY_PATH, LD_PRELOAD);
    the host's is never read. `cwd` is the image's WORKDIR, for relative and
    empty search path elements. Each file is parsed once and cached by its
    canonical path.
    """

    def __init__(
        self,
        fs: RootFS,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        use_ld_cache: bool = True,
        as_if_ldconfig: bool = False,
    ) -> None:
        self.fs = fs
        self.env = dict(env or {})
        self.cwd = cwd
        self.use_ld_cache = use_ld_cache
        self.as_if_ldconfig = as_if_ldconfig
        self._conf_dirs: tuple[str, ...] | None = None
        self._infos: dict[str, ElfInfo | ElfProblem] = {}
        self._facts: dict[tuple[str | None, int, int], LoaderFacts] = {}
        self._variant_dirs: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._ld_cache: LdCache | None = None
        self._ld_cache_loaded = False
        self._musl_paths: dict[str, tuple[str, ...]] = {}

    # ---- files

    def elf_info(self, canonical: str) -> ElfInfo | ElfProblem:
        """Parse (once) the ELF file at a canonical in-root path."""
        cached = self._infos.get(canonical)
        if cached is None:
            cached = self._parse(canonical)
            self._infos[canonical] = cached
        return cached

    def _parse(self, canonical: str) -> ElfInfo | ElfProblem:
        try:
            info = self.fs.lstat(canonical)
        except OSError as exc:
            return ElfProblem(Verdict.SKIP, exc.strerror or "cannot stat")
        if stat.S_ISDIR(info.st_mode):
            return ElfProblem(Verdict.FATAL, "is a directory")
        if not stat.S_ISREG(info.st_mode):
            return ElfProblem(Verdict.FATAL, "not a regular file")
        try:
            ident = read_ident(self.fs.head(canonical)[:HEADER_BYTES])
            if isinstance(ident, ElfProblem):
                return ident  # not ELF (a script, data): its first bytes tell, as parse_elf's
            _, fd = self.fs.open_file(canonical)
        except PathError as exc:
            return ElfProblem(Verdict.SKIP, exc.message)
        with open(fd, "rb") as handle:
            return parse_elf(handle)

    def conf_dirs(self) -> tuple[str, ...]:
        """The dirs of ld.so.conf, for the "as if ldconfig ran" view."""
        if self._conf_dirs is None:
            self._conf_dirs = ld_so_conf_dirs(self.fs)
        return self._conf_dirs

    def ld_cache(self) -> LdCache | None:
        if not self._ld_cache_loaded:
            self._ld_cache_loaded = True
            if self.use_ld_cache:
                try:
                    self._ld_cache = load_ld_cache(self.fs)
                except Exception as exc:  # a broken cache is ignored, as ld.so does
                    log.warning("ignoring unreadable /etc/ld.so.cache: %s", exc)
        return self._ld_cache

    # ---- loader facts

    def facts_for(self, interpreter: str | None, ident: ElfIdent) -> LoaderFacts:
        key = (interpreter, ident.machine, ident.elf_class)
        facts = self._facts.get(key)
        if facts is None:
            facts = self._make_facts(interpreter, ident)
            self._facts[key] = facts
        return facts

    def _make_facts(self, interpreter: str | None, ident: ElfIdent) -> LoaderFacts:
        platform = PLATFORMS.get(ident.machine, "")
        if interpreter is not None and is_musl_interpreter(interpreter):
            return LoaderFacts(Libc.MUSL, self._musl_path(interpreter), "lib", platform, (), None)
        interpreter = interpreter or DEFAULT_INTERPRETERS.get((ident.machine, ident.elf_class))
        dirs: tuple[str, ...] | None = None
        if interpreter is not None:
            try:
                dirs = system_dirs_from_ldso(self.fs.read_bytes(interpreter))
            except PathError:
                dirs = None
        if not dirs:
            dirs = FALLBACK_SYSTEM_DIRS.get((ident.machine, ident.elf_class), GENERIC_SYSTEM_DIRS)
        is_x86_64 = ident.machine == EM_X86_64 and ident.elf_class == 2
        subdirs = X86_64_HWCAP_SUBDIRS if is_x86_64 else GENERIC_HWCAP_SUBDIRS
        return LoaderFacts(
            Libc.GLIBC,
            dirs,
            dirs[0].lstrip("/") or "lib",
            platform,
            subdirs,
            abi_flags_for(ident.machine, ident.elf_class),
        )

    def _musl_path(self, interpreter: str) -> tuple[str, ...]:
        path_file = musl_path_file(interpreter)
        dirs = self._musl_paths.get(path_file)
        if dirs is None:
            try:
                text = self.fs.read_text(path_file)
            except PathError as exc:
                # missing -> the built-in default; present but unreadable -> none
                dirs = MUSL_DEFAULT_PATH if exc.errno in (errno.ENOENT, errno.ENOTDIR) else ()
            else:
                dirs = tuple(d for d in re.split(r"[:\n]", text) if d)
            self._musl_paths[path_file] = dirs
        return dirs

    # ---- candidates

    def probe(
        self, path: str, expected: ElfIdent | None, facts: LoaderFacts
    ) -> _Found | _Fatal | _Miss:
        """Open one candidate path the way the loader would."""
        try:
            resolved = self.fs.resolve(path, cwd=self.cwd)
        except PathError as exc:
            return _Miss.LOOP if exc.errno == errno.ELOOP else _Miss.ABSENT
        info = self.elf_info(resolved.path)
        if isinstance(info, ElfInfo) and facts.libc is Libc.GLIBC:
            problem = check_loadable(info.ident, expected)
            if problem is not None:
                info = problem
        if isinstance(info, ElfProblem):
            if info.verdict is Verdict.SKIP and facts.libc is Libc.GLIBC:
                return _Miss.ABSENT
            return _Fatal(path, info.reason)
        return _Found(path, resolved, info, Via.PATH)

    def search_dirs(
        self, dirs: Iterable[str], name: str, expected: ElfIdent, facts: LoaderFacts, via: Via
    ) -> _Found | _Fatal | _Miss:
        """Search `name` in each dir (and its hwcaps subdirs). Every variant
        that exists is kept; the one in the dir itself is the primary when
        there is one, since it is what loads on any CPU."""
        for directory in dirs:
            found: list[_Found] = []
            for candidate_dir in self.variant_dirs(directory, facts.hwcap_subdirs):
                outcome = self.probe(join(candidate_dir, name), expected, facts)
                if outcome is _Miss.LOOP and not found:
                    return _Miss.LOOP
                if isinstance(outcome, _Fatal) and not found:
                    return outcome
                if isinstance(outcome, _Found):
                    found.append(outcome)
            if found:
                primary = found[-1] if found[-1].opened_as == join(directory, name) else found[0]
                variants = tuple(f.resolved for f in found if f is not primary)
                return _Found(primary.opened_as, primary.resolved, primary.info, via, variants)
        return _Miss.ABSENT

    def variant_dirs(self, directory: str, subdirs: tuple[str, ...]) -> tuple[str, ...]:
        """The existing hwcaps subdirs of a search dir, then the dir itself."""
        key = (directory, subdirs)
        dirs = self._variant_dirs.get(key)
        if dirs is None:
            existing = []
            for subdir in subdirs:
                candidate = join(directory, subdir)
                try:
                    resolved = self.fs.resolve(candidate, cwd=self.cwd)
                    if stat.S_ISDIR(self.fs.lstat(resolved.path).st_mode):
                        existing.append(candidate)
                except (PathError, OSError):
                    continue
            dirs = (*existing, directory)
            self._variant_dirs[key] = dirs
        return dirs

    # ---- link maps

    def link_map(
        self, path: str, *, runtime_extras: bool = False, resolved: Resolved | None = None
    ) -> LinkMap | SkippedInput:
        """The link map of one executable (or library) inside the root;
        `resolved`: the path's resolution, when the caller has it."""
        if resolved is None:
            try:
                resolved = self.fs.resolve(path, cwd=self.cwd)
            except PathError as exc:
                return SkippedInput(path, exc.message)
        info = self.elf_info(resolved.path)
        if isinstance(info, ElfProblem):
            return SkippedInput(path, info.reason)
        builder = _LinkMapBuilder(self, path, resolved, info)
        return builder.build(runtime_extras=runtime_extras)

    def closure(
        self, paths: Iterable[str], *, runtime_extras: bool = False, gconv: bool = False
    ) -> Closure:
        """Link maps of all inputs, plus those of every CPU variant they found.

        Scripts (`#!`) add their interpreter as an input. Files that are not
        loadable ELF objects are listed as skipped, never raised. With gconv,
        every iconv module next to a loaded glibc comes too, with its deps.
        """
        pending = deque(dict.fromkeys(paths))
        done: set[str] = set()
        gconv_dirs: set[str] = set()
        link_maps: list[LinkMap] = []
        skipped: list[SkippedInput] = []
        input_hops: set[SymlinkHop] = set()
        while pending:
            path = pending.popleft()
            if path in done:
                continue
            done.add(path)
            try:
                resolved = self.fs.resolve(path, cwd=self.cwd)
            except PathError as exc:
                skipped.append(SkippedInput(path, exc.message))
                continue
            input_hops.update(resolved.hops)
            interpreter = self.shebang(resolved.path)
            if interpreter is not None:
                pending.append(interpreter)
                continue
            outcome = self.link_map(path, runtime_extras=runtime_extras, resolved=resolved)
            if isinstance(outcome, SkippedInput):
                skipped.append(outcome)
                continue
            link_maps.append(outcome)
            for obj in outcome.objects:
                pending.extend(v.path for v in obj.variants if v.path not in done)
                if (
                    gconv
                    and obj.info is not None
                    and (obj.info.soname or "").startswith("libc.so.")
                ):
                    pending.extend(self.gconv_modules(parent(obj.canonical), gconv_dirs))
        return Closure(
            tuple(link_maps), tuple(skipped), tuple(sorted(input_hops, key=lambda h: h.path))
        )

    def gconv_modules(self, libdir: str, seen: set[str]) -> list[str]:
        """The iconv modules of a glibc ($libdir/gconv/*.so), once per dir."""
        directory = join(libdir, "gconv")
        if directory in seen:
            return []
        seen.add(directory)
        try:
            names = self.fs.listdir(self.fs.resolve(directory).path)
        except (PathError, OSError):
            return []
        return [join(directory, name) for name in names if name.endswith(".so")]

    def shebang(self, canonical: str) -> str | None:
        """The interpreter of a `#!` script, or None."""
        try:
            head = self.fs.head(canonical)
        except PathError:
            return None
        if not head.startswith(b"#!"):
            return None
        words = head[2:].split(b"\n", 1)[0].split()
        return words[0].decode("utf-8", "surrogateescape") if words else None


class _LinkMapBuilder:
    """The state of one process's link map while it is being built."""

    def __init__(self, loader: Loader, path: str, resolved: Resolved, info: ElfInfo) -> None:
        self.loader = loader
        self.fs = loader.fs
        self.root_path = path
        self.main_info = info
        self.is_executable = info.interpreter is not None
        interpreter = info.interpreter
        if interpreter is None and "libc.so" in info.needed:
            interpreter = self._find_musl_loader()
        self.facts = loader.facts_for(interpreter, info.ident)
        self.objects: list[LoadedObject] = []
        self.by_canonical: dict[str, LoadedObject] = {}
        self.names: dict[str, str] = {}  # every name an object answers to -> canonical
        self.dependencies: list[Dependency] = []
        self.main = self._add(
            LoadedObject(
                canonical=resolved.path,
                requested=path,
                opened_as=resolved.path,
                loaded_by=None,
                via=Via.EXECUTABLE if self.is_executable else Via.INPUT,
                hops=resolved.hops,
                info=info,
            )
        )
        self.interpreter: LoadedObject | None = None

    def _find_musl_loader(self) -> str | None:
        for directory in ("/lib", "/usr/lib", "/usr/local/lib"):
            try:
                names = self.fs.listdir(self.fs.resolve(directory).path)
            except (PathError, OSError):
                continue
            for name in names:
                if is_musl_interpreter(name):
                    return join(directory, name)
        return None

    # ---- bookkeeping

    def _add(self, obj: LoadedObject) -> LoadedObject:
        self.objects.append(obj)
        self.by_canonical[obj.canonical] = obj
        self._alias(obj, obj.requested)
        self._alias(obj, obj.opened_as)
        if obj.info is not None and obj.info.soname and self.facts.libc is Libc.GLIBC:
            self._alias(obj, obj.info.soname)
        return obj

    def _alias(self, obj: LoadedObject, name: str) -> None:
        key = basename(name) if self.facts.libc is Libc.MUSL else name
        self.names.setdefault(key, obj.canonical)

    def _loaded_by_name(self, name: str) -> LoadedObject | None:
        key = basename(name) if self.facts.libc is Libc.MUSL else name
        canonical = self.names.get(key)
        return self.by_canonical[canonical] if canonical is not None else None

    def _chain(self, obj: LoadedObject) -> Iterator[LoadedObject]:
        """The object, the object that loaded it, and so on up to the main one."""
        current: LoadedObject | None = obj
        seen: set[str] = set()
        while current is not None and current.canonical not in seen:
            seen.add(current.canonical)
            yield current
            current = self.by_canonical.get(current.loaded_by) if current.loaded_by else None

    def _origin(self, obj: LoadedObject) -> str:
        return parent(obj.opened_as)

    # ---- building

    def build(self, *, runtime_extras: bool) -> LinkMap:
        if self.main_info.interpreter is not None:
            self._load_interpreter(self.main_info.interpreter)
        queue: list[LoadedObject] = [self.main]
        if self.facts.libc is Libc.GLIBC and self.is_executable:
            for name in self._preload_names():
                loaded = self._request(name, self.main, Via.PRELOAD)
                if loaded is not None and loaded not in queue:
                    queue.append(loaded)
        self._walk(queue, 0)
        if runtime_extras and self.facts.libc is Libc.GLIBC:
            start = len(queue)
            libc = self._libc()
            if libc is not None:
                for name in self._runtime_names(libc):
                    loaded = self._request(name, libc, Via.RUNTIME)
                    if loaded is not None and loaded not in queue:
                        queue.append(loaded)
                self._walk(queue, start)
        return LinkMap(
            self.root_path, self.facts.libc, tuple(self.objects), tuple(self.dependencies)
        )

    def _walk(self, queue: list[LoadedObject], start: int) -> None:
        """Breadth-first over DT_NEEDED, appending new objects to the queue."""
        index = start
        while index < len(queue):
            obj = queue[index]
            index += 1
            if obj.info is None:
                continue
            for name in obj.info.needed:
                before = len(self.objects)
                loaded = self._request(name, obj, None)
                if loaded is not None and len(self.objects) > before:
                    queue.append(loaded)

    def _load_interpreter(self, interpreter: str) -> None:
        try:
            resolved = self.fs.resolve(interpreter, cwd=self.loader.cwd)
        except PathError as exc:
            self.dependencies.append(
                Dependency(self.main.canonical, interpreter, None, exc.message)
            )
            return
        info = self.loader.elf_info(resolved.path)
        obj = LoadedObject(
            canonical=resolved.path,
            requested=interpreter,
            opened_as=interpreter,
            loaded_by=self.main.canonical,
            via=Via.INTERPRETER,
            hops=resolved.hops,
            info=info if isinstance(info, ElfInfo) else None,
        )
        self.interpreter = self._add(obj)
        self.dependencies.append(Dependency(self.main.canonical, interpreter, resolved.path))

    def _preload_names(self) -> list[str]:
        names = self.loader.env.get("LD_PRELOAD", "").replace(":", " ").split()
        try:
            text = self.fs.read_text("/etc/ld.so.preload")
        except PathError:
            text = ""
        for line in text.splitlines():
            names.extend(line.split("#", 1)[0].replace(":", " ").split())
        return names

    def _libc(self) -> LoadedObject | None:
        for obj in self.objects:
            if obj.info is not None and (obj.info.soname or "").startswith("libc.so."):
                return obj
        return None

    def _runtime_names(self, libc: LoadedObject) -> list[str]:
        """Libraries glibc dlopens itself: NSS modules and libgcc_s."""
        try:
            text = self.fs.read_text("/etc/nsswitch.conf")
        except PathError:
            text = ""
        builtin = GLIBC_BUILTIN_NSS if self._glibc_has_builtin_nss(libc) else frozenset()
        names = [f"libnss_{svc}.so.2" for svc in nss_services(text) if svc not in builtin]
        names.append("libgcc_s.so.1")
        return names

    def _glibc_has_builtin_nss(self, libc: LoadedObject) -> bool:
        try:
            data = self.fs.read_bytes(libc.canonical)
        except PathError:
            return True
        return b"GLIBC_2.34\x00" in data

    def _request(self, name: str, requester: LoadedObject, via: Via | None) -> LoadedObject | None:
        """Resolve one name for one requester and record the dependency."""
        existing = self._loaded_by_name(name)
        if existing is None and self.facts.libc is Libc.MUSL and is_musl_self(name):
            existing = self.interpreter
        if existing is not None:
            self.dependencies.append(Dependency(requester.canonical, name, existing.canonical))
            return existing
        outcome = self._search(name, requester)
        if not isinstance(outcome, _Found):
            problem = (
                f"{outcome.path}: {outcome.reason}" if isinstance(outcome, _Fatal) else "not found"
            )
            optional = via is Via.RUNTIME
            self.dependencies.append(Dependency(requester.canonical, name, None, problem, optional))
            return None
        same_file = self.by_canonical.get(outcome.resolved.path)
        if same_file is not None:  # found under another name: one object
            self._alias(same_file, name)
            self.dependencies.append(Dependency(requester.canonical, name, same_file.canonical))
            return same_file
        obj = LoadedObject(
            canonical=outcome.resolved.path,
            requested=name,
            opened_as=outcome.opened_as,
            loaded_by=requester.canonical,
            via=via or outcome.via,
            hops=outcome.resolved.hops,
            variants=outcome.variants,
            info=outcome.info,
        )
        self._add(obj)
        self.dependencies.append(Dependency(requester.canonical, name, obj.canonical))
        return obj

    # ---- search

    def _search(self, name: str, requester: LoadedObject) -> _Found | _Fatal | _Miss:
        facts = self.facts
        expected = self.main_info.ident
        if "/" in name:
            path = expand_tokens(name, self._origin(requester), facts)
            outcome = self.loader.probe(path, expected, facts)
            return _Miss.ABSENT if outcome is _Miss.LOOP else outcome
        for via, dirs in self._search_lists(requester):
            outcome = self.loader.search_dirs(dirs, name, expected, facts, via)
            if outcome is _Miss.LOOP:
                continue  # ELOOP abandons this list only
            if outcome is not _Miss.ABSENT:
                return outcome
        if facts.libc is Libc.GLIBC:
            outcome = self._search_cache(name, requester)
            if outcome is not _Miss.ABSENT:
                return outcome
            if not requester_nodeflib(requester):
                outcome = self.loader.search_dirs(
                    facts.system_dirs, name, expected, facts, Via.DEFAULT_DIRS
                )
                return _Miss.ABSENT if outcome is _Miss.LOOP else outcome
        return _Miss.ABSENT

    def _search_lists(self, requester: LoadedObject) -> Iterator[tuple[Via, list[str]]]:
        """The dir lists searched before the cache, in the loader's order."""
        facts = self.facts
        ld_library_path = self.loader.env.get("LD_LIBRARY_PATH")
        main_origin = self._origin(self.main)
        if facts.libc is Libc.MUSL:
            if ld_library_path:
                yield (
                    Via.LD_LIBRARY_PATH,
                    split_path_list(expand_tokens(ld_library_path, main_origin, facts), ":\n"),
                )
            for obj in self._chain(requester):
                info = obj.info
                rpath = (info.runpath or info.rpath) if info else None
                if rpath:
                    yield Via.RPATH, split_path_list(expand_tokens(rpath, self._origin(obj), facts))
            yield Via.MUSL_PATH, list(facts.system_dirs)
            return
        requester_runpath = requester.info.runpath if requester.info else None
        if not requester_runpath:
            chain = list(self._chain(requester))
            if self.main not in chain:
                chain.append(self.main)
            for obj in chain:
                info = obj.info
                if info is None or info.runpath or not info.rpath:
                    continue
                yield (
                    Via.RPATH,
                    split_path_list(expand_tokens(info.rpath, self._origin(obj), facts)),
                )
        if ld_library_path:
            yield (
                Via.LD_LIBRARY_PATH,
                split_path_list(expand_tokens(ld_library_path, main_origin, facts), ":;"),
            )
        if requester_runpath:
            yield (
                Via.RUNPATH,
                split_path_list(expand_tokens(requester_runpath, self._origin(requester), facts)),
            )

    def _search_cache(self, name: str, requester: LoadedObject) -> _Found | _Fatal | _Miss:
        if self.loader.as_if_ldconfig:
            dirs = self.loader.conf_dirs()
            if requester_nodeflib(requester):
                dirs = tuple(d for d in dirs if d not in self.facts.system_dirs)
            outcome = self.loader.search_dirs(
                dirs, name, self.main_info.ident, self.facts, Via.LD_CACHE
            )
            return _Miss.ABSENT if outcome is _Miss.LOOP else outcome
        cache = self.loader.ld_cache()
        if cache is None:
            return _Miss.ABSENT
        entries = cache.lookup(name, self.facts.abi_flags)
        if requester_nodeflib(requester):
            prefixes = tuple(d.rstrip("/") + "/" for d in self.facts.system_dirs)
            entries = tuple(e for e in entries if not e.path.startswith(prefixes))
        found: _Found | None = None
        variants: list[Resolved] = []
        for entry in sorted(entries, key=lambda e: e.hwcaps is not None):
            outcome = self.loader.probe(entry.path, self.main_info.ident, self.facts)
            if isinstance(outcome, _Fatal) and found is None:
                return outcome
            if isinstance(outcome, _Found):
                if found is None:
                    found = outcome
                else:
                    variants.append(outcome.resolved)
        if found is None:
            return _Miss.ABSENT
        return _Found(found.opened_as, found.resolved, found.info, Via.LD_CACHE, tuple(variants))


def requester_nodeflib(obj: LoadedObject) -> bool:
    return obj.info is not None and obj.info.nodeflib
