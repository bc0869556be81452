"""Which paths of the fat image go into the micro image, and why.

The selection runs where the files are (inside a container of the fat image,
root "/"), but it is pure: give it any RootFS and a request. Every entry
carries its reasons into the report; everything left out that someone might
expect carries the reason it was left out.

    kept = traced (not created by the app) ∪ looked up ∪ the app's own
           content (appcontent) ∪ the code closure of the interpreted code
           (slimmer.closure) ∪ the keyed data sets it read from (datasets)
           ∪ ELF closure of all the programs and libraries among them and
           the entrypoint ∪ --include − --exclude
           + symlinks on the way and symlinks to kept files
           + parent dirs + dirs the app wrote into (empty) + WORKDIR, VOLUMEs
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field, replace
from enum import StrEnum

from slimmer import appcontent
from slimmer.closure import ClosureRequest, Unresolved, code_closure
from slimmer.closure.walk import Root
from slimmer.datasets import DATA_SET_NAMES, keyed_sets
from slimmer.errors import PathError
from slimmer.execpath import DEFAULT_PATH, EXEC_BITS, find_program
from slimmer.packages import PackageDB, read_package_db
from slimmer.patterns import SelectionError as SelectionError  # re-exported
from slimmer.patterns import check_pattern as check_pattern  # re-exported
from slimmer.rootfs import (
    Kind,
    Resolved,
    RootFS,
    Trees,
    basename,
    join,
    kind_of,
    parent,
    parents,
    printable,
    walk,
)
from slimmer.trace import Access, Lookup, PathAction, TracedFile

KERNEL_TREES = ("/proc", "/sys", "/dev")  # the engine mounts them; never the image's
WHITEOUT_PREFIX = ".wh."
GLOB_CHARS = "*?["
USER_DB_FILES = ("/etc/passwd", "/etc/group")
SCRATCH_DIRS = ("/tmp", "/var/tmp")
PYTHON_STDLIB = re.compile(r".*/lib(?:64)?/python3\.\d+(?=/)")


class Reason(StrEnum):
    TRACED = "traced"
    ELF_CLOSURE = "elf-closure"
    ENTRYPOINT = "entrypoint"
    HEALTHCHECK = "healthcheck"
    INCLUDE = "include"
    SYMLINK = "symlink"
    PARENT = "parent"
    WRITTEN_DIR = "written-dir"
    LISTED_DIR = "listed-dir"
    WORKDIR = "workdir"
    VOLUME = "volume"
    USER_DB = "user-db"
    BYTECODE_SOURCE = "bytecode-source"
    INTERPRETER_LANDMARK = "interpreter-landmark"
    BASE_MERGE = "base-merge"
    SCRATCH_DIR = "scratch-dir"
    PACKAGE_RECORD = "package-record"  # written by slim: what scanners read
    APP_CHANGED = "app-changed"  # the app wrote, replaced or deleted it: the image's bytes
    APP_CONTENT = "app-content"  # beside or below a data file the app read, the app's own
    PROGRAM_SIBLING = "program-sibling"  # beside a program the app ran, in a folder of programs
    IMPORT_CLOSURE = "import-closure"  # kept code imports, requires or includes it
    SCRIPT_COMMAND = "script-command"  # a kept shell script runs it
    DATA_SET = "data-set"  # in a keyed data set the app read a member of
    LOOKED_UP = "looked-up"  # the app named it to the kernel (stat, access, readlink, ...)
    INIT = "init"  # the init run as PID 1 in front of the app (--init)
    RELEASE_FILE = "release-file"  # names the distribution for scanners (with package records)


SKIPPED_KINDS = frozenset({Kind.FIFO, Kind.CHAR_DEVICE, Kind.BLOCK_DEVICE, Kind.SOCKET})

# What the app does with a path that names it as it is in the image (the
# others make, change or remove it: inotify sees their effect).
NAMING_ACTIONS = frozenset(
    {
        PathAction.STAT,
        PathAction.ACCESS,
        PathAction.READLINK,
        PathAction.OPEN,
        PathAction.EXEC,
        PathAction.CHDIR,
        PathAction.CHROOT,
        PathAction.WATCH,
        PathAction.LINK_FROM,
        PathAction.CONNECT,
    }
)


@dataclass(frozen=True, kw_only=True)
class SelectionRequest:
    """What the host asks the collecting sensor for."""

    traced: tuple[TracedFile, ...] = ()
    lookups: tuple[Lookup, ...] = ()  # seen at the system call
    entrypoint: tuple[str, ...] = ()  # argv[0]s (PATH-resolved here)
    healthcheck: tuple[str, ...] = ()
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    volumes: tuple[str, ...] = ()
    runtime_extras: bool = True
    # Trees that are never the image's: the kernel's and the sensor's own.
    skipped_trees: tuple[str, ...] = KERNEL_TREES
    # Mount points of the collecting container (/etc/hosts, volumes...): the
    # engine provides them at run time; their content here is not the image's.
    mount_points: tuple[str, ...] = ()
    # The mtime of what the engine touched in the collecting container (its
    # mount points and their directories, /etc for /etc/hosts): the image's
    # creation time. None (an image without a usable one): the newest mtime
    # of the other kept entries, which is as deterministic. Every other entry
    # keeps its own mtime.
    engine_mtime: int | None = None
    # Directories of the image built upon (--base); a kept symlink there would
    # replace the base's directory, so its kept children are linked instead.
    base_dirs: tuple[str, ...] = ()
    # Keep the app's own files beside and below what it read (appcontent).
    app_content: bool = True
    # Keep the other programs of a folder of programs the app ran one from.
    program_siblings: bool = True
    # Keep what the interpreted code imports, requires, includes or runs.
    code_closure: bool = True
    # The keyed data sets kept when the app read one member (datasets).
    keep_data: tuple[str, ...] = DATA_SET_NAMES
    # The init that runs in front of the app (--init), kept with its ELF closure.
    init: tuple[str, ...] = ()
    # Files that name the distribution (/etc/os-release...): what scanners
    # read before the package records.
    release_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Xattr:
    """An extended attribute a micro image keeps (a file capability)."""

    name: str
    value: str  # hex

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.value)


# Extended attributes that change what a file does and that ADD of a tar
# carries: file capabilities (setcap), and the user namespace. Not SELinux
# labels (the host's policy) nor trusted.* (root of the host only).
MAX_XATTRS = 32
MAX_XATTR_BYTES = 64 * 1024


def kept_xattr(name: str) -> bool:
    return name == "security.capability" or name.startswith("user.")


@dataclass(frozen=True)
class Entry:
    path: str
    kind: Kind
    reasons: tuple[Reason, ...]
    size: int
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime: int
    link: str | None = None  # symlink target, as written
    xattrs: tuple[Xattr, ...] = ()
    inode: int = 0  # files that share one are hard links: their bytes count once
    # where from, a line per rule: "import closure of /app/app.py:12 (import x)"
    detail: str = ""


@dataclass(frozen=True)
class Dropped:
    path: str
    why: str


@dataclass(frozen=True)
class Selection:
    entries: tuple[Entry, ...]  # sorted by path; parents before children
    dropped: tuple[Dropped, ...]
    warnings: tuple[str, ...]
    unresolved: tuple[Unresolved, ...] = ()  # names kept code asks for that slim did not resolve

    def unique_files(self) -> list[Entry]:
        """The regular files, each group of hard links once."""
        seen: set[int] = set()
        unique = []
        for entry in self.entries:
            if entry.kind is not Kind.FILE or (entry.inode and entry.inode in seen):
                continue
            seen.add(entry.inode)
            unique.append(entry)
        return unique


def mount_points(mountinfo: str) -> list[str]:
    """Mount points from /proc/self/mountinfo (octal escapes decoded)."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            raw = os.fsencode(fields[4])
            raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)
            points.append(os.fsdecode(raw))
    return points


class _Selector:
    def __init__(
        self, fs: RootFS, request: SelectionRequest, packages: PackageDB | None = None
    ) -> None:
        self.fs = fs
        self.request = request
        self.packages = packages  # read when needed, unless the caller has it
        self.skipped = Trees.of(request.skipped_trees)
        self.data_files: list[str] = []  # regular files the app read (not ran)
        self.ran: list[str] = []  # regular files the app ran (programs, scripts)
        self.seen: list[str] = []  # regular files the trace saw, canonical
        self.code_roots: list[Root] = []
        self.reasons: dict[str, set[Reason]] = {}
        self.details: dict[str, dict[Reason, str]] = {}
        self.unresolved: tuple[Unresolved, ...] = ()
        self.dropped: dict[str, str] = {}
        self.warnings: list[str] = []

    def add(self, path: str, reason: Reason, detail: str = "") -> None:
        self.reasons.setdefault(path, set()).add(reason)
        if detail:
            self.details.setdefault(path, {}).setdefault(reason, detail)

    def drop(self, path: str, why: str) -> None:
        self.dropped.setdefault(path, why)

    def add_resolved(
        self, path: str, reason: Reason, detail: str = "", resolved: Resolved | None = None
    ) -> str | None:
        """Add a path and every link passed on the way; returns the canonical
        path. `resolved`: its resolution, when the caller has it."""
        if resolved is None:
            try:
                resolved = self.fs.resolve(path, cwd=self.request.workdir)
            except PathError as exc:
                self.drop(path, f"not in the image ({exc.message})")
                return None
        for hop in resolved.hops:
            self.add(hop.path, Reason.SYMLINK)
        self.add(resolved.path, reason, detail)
        return resolved.path

    def traced(self) -> list[str]:
        """Traced paths kept; returns the files to take the closure of.

        What the image has at a traced path is kept, whatever the app did to
        it: a file it read, and also one it wrote, replaced (sed -i renames a
        new file over it) or deleted. The collecting container holds the
        image's own version, so the bytes are the image's, never the
        trace's. What the app created and the image did not have is not
        copied; directories it wrote into come empty."""
        closure_inputs = []
        for row in self.request.traced:
            path, access = row.path, set(row.access)
            try:
                unfollowed = self.fs.resolve(path, follow=False)
                info = self.fs.lstat(unfollowed.path)
            except (PathError, OSError):
                gone = "created by the app during the trace" if Access.CREATED in access else None
                self.drop(path, gone or "not in the image")
                continue
            if stat.S_ISDIR(info.st_mode):
                written = Access.WRITTEN in access
                self.add(path, Reason.WRITTEN_DIR if written else Reason.LISTED_DIR)
                continue
            changed = access & {Access.WRITTEN, Access.CREATED, Access.DELETED}
            if not (changed or access & {Access.OPENED, Access.READ, Access.EXECUTED}):
                continue
            # An absolute path whose last component is no link resolves the same
            # with the final link followed.
            absolute = path.startswith("/") and not stat.S_ISLNK(info.st_mode)
            canonical = self.add_resolved(
                path,
                Reason.APP_CHANGED if changed else Reason.TRACED,
                resolved=unfollowed if absolute else None,
            )
            if canonical is None or not stat.S_ISREG(info.st_mode):
                continue
            closure_inputs.append(canonical)
            self.seen.append(canonical)
            if Access.EXECUTED in access or self.is_script(canonical, info.st_mode):
                self.ran.append(canonical)
            elif not changed and not self.is_elf(canonical):
                self.data_files.append(canonical)
        return closure_inputs

    def is_script(self, canonical: str, mode: int) -> bool:
        """An executable with a #! line: the kernel opened it to run it."""
        if not mode & EXEC_BITS:
            return False
        try:
            return self.fs.head(canonical)[:2] == b"#!"
        except PathError:
            return False

    def is_elf(self, canonical: str) -> bool:
        """A program or library (the kernel opens a script's interpreter, the
        loader the libraries: neither is the app reading data)."""
        try:
            return self.fs.head(canonical)[:4] == b"\x7fELF"
        except PathError:
            return False

    def lookups(self) -> list[str]:
        """Paths the app named to the kernel, seen at the system call. A name
        that resolved is kept as the app named it, with every symlink on the
        way (inotify names only real paths, and never what is only stat'ed,
        access'ed or readlink'ed: `ls -l FILE`, `test -x`, os.path.exists).
        For a name that did not resolve (a config search list, a probe for
        an optional file), or one the app made or changed, the directory it
        is in and the links on the way to it are kept, so the same lookup
        fails the same way. Returns programs it ran, for the closure."""
        programs = []
        for lookup in self.request.lookups:
            if lookup.path in self.skipped:
                continue
            if lookup.existed and lookup.action in NAMING_ACTIONS:
                canonical = self.add_named(lookup.path, lookup.follow)
                if canonical is not None and lookup.action is PathAction.EXEC:
                    programs.append(canonical)
                if canonical is not None and stat.S_ISREG(self.fs.lstat(canonical).st_mode):
                    self.seen.append(canonical)
            elif lookup.path != "/":
                self.add_named(parent(lookup.path), True, quiet=True)
        programs = [p for p in programs if stat.S_ISREG(self.fs.lstat(p).st_mode)]
        self.ran += programs
        return programs

    def add_named(self, path: str, follow: bool, *, quiet: bool = False) -> str | None:
        """Keep a path by the name the app used, links on the way included;
        a final link that does not resolve is kept as the link."""
        for how in (follow, False) if follow else (False,):
            try:
                resolved = self.fs.resolve(path, follow=how)
            except PathError:
                continue
            for hop in resolved.hops:
                self.add(hop.path, Reason.SYMLINK)
            self.add(resolved.path, Reason.LOOKED_UP)
            return resolved.path
        if not quiet:
            self.drop(path, "not in the image (the app made it during the trace)")
        return None

    def package_db(self) -> PackageDB:
        if self.packages is None:
            self.packages = read_package_db(self.fs)
        return self.packages

    def owned(self, path: str) -> bool:
        return bool(self.package_db().owners(path, directories=False))

    def app_content(self) -> list[str]:
        """The app's own files beside and below the data files it read (see
        slimmer.appcontent). Returns them, for the closures."""
        if not self.request.app_content or not self.data_files:
            return []
        found = appcontent.app_content(
            self.fs,
            self.data_files,
            self.package_db().layout(),
            self.owned,
            self.request.skipped_trees,
        )
        # Not roots of the code closure: a script in the app's dir that
        # nothing loaded (a build script) must not bring the tools it runs.
        return self.keep_found(found, Reason.APP_CONTENT, code_roots=False)

    def program_siblings(self) -> list[str]:
        """The other programs of a folder of programs the app ran one from."""
        if not self.request.program_siblings or not self.ran:
            return []
        path_lists = [self.request.env.get("PATH", DEFAULT_PATH), DEFAULT_PATH]
        found = appcontent.program_siblings(
            self.fs,
            self.ran,
            appcontent.search_dirs(self.fs, path_lists),
            self.owned,
            self.request.skipped_trees,
        )
        return self.keep_found(found, Reason.PROGRAM_SIBLING)

    def keep_found(
        self, found: appcontent.ContentFound, reason: Reason, *, code_roots: bool = True
    ) -> list[str]:
        self.warnings += found.warnings
        added = []
        for item in found.kept:
            if item.path not in self.reasons:
                added.append(item.path)
            self.add(item.path, reason, item.detail)
        if code_roots:
            self.code_roots += [Root(path, False) for path in added]
        return added

    def code_closure(self, loaded: list[str]) -> list[str]:
        """What the kept interpreted code imports, requires, includes or
        runs, and on (slimmer.closure). Returns the programs and libraries
        found, for the ELF closure."""
        if not self.request.code_closure:
            return []
        roots = []
        for path in dict.fromkeys(loaded):
            source = bytecode_source(path)
            if source is not None and self.fs.exists(source, follow=False):
                path = self.fs.resolve(source).path
            roots.append(Root(path, True))
        closure = code_closure(
            self.fs,
            ClosureRequest(
                roots=(*roots, *self.code_roots),
                seen=tuple(self.seen),
                programs=tuple(dict.fromkeys(self.ran)),
                env=self.request.env,
                workdir=self.request.workdir,
                packaged=self.owned,
            ),
        )
        for found in closure.found:
            reason = Reason.SCRIPT_COMMAND if found.command else Reason.IMPORT_CLOSURE
            self.add_resolved(found.path, reason, found.detail)
        self.unresolved = closure.unresolved
        self.warnings += closure.warnings
        return list(closure.programs)

    def data_sets(self) -> list[str]:
        """Every member of a keyed data set the app read one member of
        (slimmer.datasets). Returns the loadable modules among them."""
        read = [
            path
            for path, reasons in self.reasons.items()
            if reasons & {Reason.TRACED, Reason.LOOKED_UP}
        ]
        named = [lookup.path for lookup in self.request.lookups] if self.request.lookups else None
        found = keyed_sets(
            self.fs, read, self.request.keep_data, self.request.skipped_trees, named, self.reasons
        )
        self.warnings += found.warnings
        modules = []
        for kept in found.kept:
            for member in kept.members:
                self.add(member.path, Reason.DATA_SET, kept.detail)
                if kept.name == "gconv" and member.path.endswith(".so"):
                    modules.append(member.path)
        return modules

    def bytecode_sources(self) -> None:
        """CPython reads __pycache__/m.cpython-311.pyc but only stats m.py,
        and ignores the bytecode when the source is gone: keep the source of
        every kept bytecode file (stat leaves no inotify event)."""
        for path in list(self.reasons):
            source = bytecode_source(path)
            if source is not None and self.fs.exists(source, follow=False):
                self.add_resolved(source, Reason.BYTECODE_SOURCE)

    def python_landmarks(self) -> None:
        """CPython finds its stdlib by stat'ing lib/pythonX.Y/os.py and
        lib-dynload; since 3.11 os itself is frozen, so no event names them."""
        stdlib_dirs = {
            match.group(0)
            for path in self.reasons
            if (match := PYTHON_STDLIB.match(path)) is not None
        }
        for directory in sorted(stdlib_dirs):
            for landmark in ("os.py", "lib-dynload"):
                candidate = join(directory, landmark)
                if self.fs.exists(candidate, follow=False):
                    self.add_resolved(candidate, Reason.INTERPRETER_LANDMARK)

    def programs(self, names: list[str], reason: Reason) -> list[str]:
        found = []
        for name in names:
            program = find_program(
                self.fs, name, self.request.env.get("PATH"), self.request.workdir
            )
            if program is None:
                self.warnings.append(f"{reason.value} command {name!r} is not in the image")
                continue
            canonical = self.add_resolved(program, reason)
            if canonical is not None:
                found.append(canonical)
        return found

    def closure(self, inputs: list[str]) -> None:
        # The loader (and pyelftools) load here, not with the module: the host
        # needs the selection's types, not its closure (the sensor has both).
        from slimmer.loader import Loader

        loader = Loader(self.fs, env=self.request.env, cwd=self.request.workdir)
        closure = loader.closure(sorted(set(inputs)), runtime_extras=self.request.runtime_extras)
        for path in closure.files:
            self.add(path, Reason.ELF_CLOSURE)
        for hop in closure.symlinks:
            self.add(hop.path, Reason.SYMLINK)
        for dep in closure.missing:
            self.warnings.append(f"{dep.requester} needs {dep.name}: {dep.problem}")

    def includes(self) -> None:
        """--include paths (a directory: all of it) and globs; one that
        matches nothing in the image is a warning (a typo, a path of
        another image), never silent."""
        patterns = self.request.includes
        globs = [p for p in patterns if any(ch in p for ch in GLOB_CHARS)]
        matched: set[str] = set()
        for pattern in patterns:
            if pattern in globs:
                continue
            canonical = self.add_resolved(pattern, Reason.INCLUDE)
            if canonical is None:
                continue
            matched.add(pattern)
            if stat.S_ISDIR(self.fs.lstat(canonical).st_mode):
                for path, _ in walk(self.fs, canonical, self.request.skipped_trees):
                    self.add(path, Reason.INCLUDE)
        if globs:
            for path, _ in walk(self.fs, skipped=self.request.skipped_trees):
                for pattern in globs:
                    if fnmatch.fnmatchcase(path, pattern):
                        self.add(path, Reason.INCLUDE)
                        matched.add(pattern)
        for pattern in patterns:
            if pattern not in matched:
                self.warnings.append(f"--include {printable(pattern)} matched nothing in the image")

    def volume_content(self) -> None:
        """Everything the image has in its VOLUMEs: the engine copies it into
        a new volume when a container first mounts one, so the app finds it
        there (a database's initial files, a default config)."""
        for volume in self.request.volumes:
            try:
                canonical = self.fs.resolve(volume).path
            except PathError:
                continue
            if stat.S_ISDIR(self.fs.lstat(canonical).st_mode):
                for path, _ in walk(self.fs, canonical, self.request.skipped_trees):
                    self.add(path, Reason.VOLUME)

    def contract_dirs(self) -> None:
        """WORKDIR and VOLUMEs, and the scratch dirs programs expect to find
        (tempfile, mktemp) even when the trace did not happen to use them;
        all come empty (but VOLUMEs, see volume_content), with their own
        mode (1777 for /tmp)."""
        dirs = [(self.request.workdir, Reason.WORKDIR)]
        dirs += [(volume, Reason.VOLUME) for volume in self.request.volumes]
        dirs += [(scratch, Reason.SCRATCH_DIR) for scratch in SCRATCH_DIRS]
        for directory, reason in dirs:
            if directory and directory != "/" and self.fs.exists(directory):
                self.add_resolved(directory, reason)

    def user_db(self) -> None:
        """The engine reads /etc/passwd and /etc/group of the image when a
        container starts: to find USER by name, its groups, and HOME."""
        for path in USER_DB_FILES:
            if self.fs.exists(path):
                self.add_resolved(path, Reason.USER_DB)

    def links_to_kept(self) -> None:
        """Every symlink of the image whose target (resolved inside the root)
        is kept, or is a directory on the way to something kept, comes too: a
        link costs no file bytes, and inotify names only real paths, never
        the links the app went through (/etc/localtime, /var/run -> /run,
        lib/perl5/5.36 -> 5.36.0, current -> releases/v1)."""
        kept = set(self.reasons)
        on_the_way = {ancestor for path in kept for ancestor in parents(path)}
        for path in self.fs.symlinks(self.skipped):
            if path in kept:
                continue
            try:
                resolved = self.fs.resolve(path)
            except PathError:
                continue
            if resolved.path in kept or resolved.path in on_the_way:
                self.add(path, Reason.SYMLINK)
                for hop in resolved.hops:
                    self.add(hop.path, Reason.SYMLINK)

    def excludes(self) -> None:
        for path in list(self.reasons):
            pattern = next((p for p in self.request.excludes if fnmatch.fnmatchcase(path, p)), None)
            if pattern is not None:
                del self.reasons[path]
                self.drop(path, f"excluded by --exclude {pattern}")

    def mounts(self) -> None:
        """What the engine mounts in the collecting container (/etc/hosts,
        /etc/resolv.conf) is the engine's, not the image's; a VOLUME is a
        mount too, but what is in it there is the image's own content."""
        volumes = set(self.request.volumes)
        mounts = Trees.of(m for m in self.request.mount_points if m != "/" and m not in volumes)
        for path in list(self.reasons):
            if path not in mounts:
                continue
            del self.reasons[path]
            self.drop(path, "provided by the container engine at run time (a mount point)")

    def merge_into_base(self) -> dict[str, str]:
        """Kept directory symlinks (/bin -> usr/bin) where the base image has a
        real directory: drop the link, and link each kept child into the
        base's directory instead (/bin/bash -> /usr/bin/bash). Returns the
        new links, path -> target."""
        base = set(self.request.base_dirs)
        links: dict[str, str] = {}
        children: dict[str, list[str]] = {}  # kept paths by directory (reasons only shrink)
        for kept in self.reasons:
            if kept != "/":
                children.setdefault(parent(kept), []).append(kept)
        for path in sorted(p for p in self.reasons if p in base):
            if not stat.S_ISLNK(self.fs.lstat(path).st_mode):
                continue
            try:
                target = self.fs.resolve(path).path
            except PathError:
                continue
            del self.reasons[path]
            self.drop(path, "the base image has a directory here; kept entries are linked into it")
            self._link_children(path, target, base, links, children)
        return links

    def _link_children(
        self,
        alias_dir: str,
        target_dir: str,
        base: set[str],
        links: dict[str, str],
        children: dict[str, list[str]],
    ) -> None:
        pending = [(alias_dir, target_dir)]
        while pending:
            alias_dir, target_dir = pending.pop()
            kept_here = (p for p in children.get(target_dir, ()) if p in self.reasons)
            for kept in sorted(kept_here):
                alias = join(alias_dir, basename(kept))
                if alias in base and stat.S_ISDIR(self.fs.lstat(kept).st_mode):
                    pending.append((alias, kept))
                else:
                    links[alias] = kept

    def parents(self) -> None:
        for path in list(self.reasons):
            for ancestor in parents(path):
                self.add(ancestor, Reason.PARENT)

    def engine_touched(self) -> set[str]:
        """Paths whose mtime is the collecting container's, not the image's."""
        mounts = [m for m in self.request.mount_points if m != "/"]
        return {*mounts, *(parent(m) for m in mounts)}

    def entries(self, base_links: dict[str, str]) -> list[Entry]:
        entries = [self.entry(path) for path in sorted(self.reasons)]
        kept = [entry for entry in entries if entry is not None]
        touched = self.engine_touched()
        engine_mtime = self.request.engine_mtime
        if engine_mtime is None:
            own = [e.mtime for e in kept if e.path not in touched]
            engine_mtime = max(own, default=0)
        kept = [replace(e, mtime=engine_mtime) if e.path in touched else e for e in kept]
        links = [  # links slim makes get the same time
            Entry(alias, Kind.SYMLINK, (Reason.BASE_MERGE,), 0, 0o777, 0, 0, engine_mtime, target)
            for alias, target in base_links.items()
        ]
        return [*links, *kept]

    def entry(self, path: str) -> Entry | None:
        if basename(path).startswith(WHITEOUT_PREFIX):
            self.drop(path, "a .wh. name would delete files in the image layers; refused")
            return None
        try:
            info = self.fs.lstat(path)
        except OSError:
            self.drop(path, "vanished from the image")
            return None
        kind = kind_of(info.st_mode)
        if kind in SKIPPED_KINDS:
            self.drop(path, f"skipped: {kind.value}")
            return None
        mode = stat.S_IMODE(info.st_mode)
        if kind is Kind.FILE and mode & (stat.S_ISUID | stat.S_ISGID):
            bits = "setuid" if mode & stat.S_ISUID else "setgid"
            self.warnings.append(f"{path} is {bits} (kept, owner {info.st_uid}:{info.st_gid})")
        xattrs = self.xattrs(path) if kind in (Kind.FILE, Kind.DIR) else ()
        return Entry(
            path=path,
            kind=kind,
            reasons=tuple(sorted(self.reasons[path], key=lambda r: r.value)),
            size=info.st_size if kind is Kind.FILE else 0,
            mode=mode,
            uid=info.st_uid,
            gid=info.st_gid,
            mtime=int(info.st_mtime),
            link=self.fs.readlink(path) if kind is Kind.SYMLINK else None,
            xattrs=xattrs,
            inode=info.st_ino if kind is Kind.FILE and info.st_nlink > 1 else 0,
            detail="\n".join(d for _, d in sorted(self.details.get(path, {}).items())),
        )

    def xattrs(self, path: str) -> tuple[Xattr, ...]:
        found = self.fs.xattrs(path, kept_xattr)
        if len(found) > MAX_XATTRS or any(len(v) > MAX_XATTR_BYTES for v in found.values()):
            self.warnings.append(f"{path}: extended attributes too large, left out")
            return ()
        if "security.capability" in found:
            self.warnings.append(f"{path} has file capabilities (kept)")
        return tuple(Xattr(name, value.hex()) for name, value in sorted(found.items()))


def select_files(
    fs: RootFS, request: SelectionRequest, packages: PackageDB | None = None
) -> Selection:
    """The file set of a micro image, with provenance. `packages`: the
    image's package database, when the caller has read it already."""
    selector = _Selector(fs, request, packages)
    closure_inputs = selector.traced()
    closure_inputs += selector.lookups()
    loaded = list(closure_inputs)
    closure_inputs += selector.app_content()
    closure_inputs += selector.program_siblings()
    selector.bytecode_sources()
    selector.python_landmarks()
    programs = selector.programs(request.entrypoint, Reason.ENTRYPOINT)
    programs += selector.programs(request.healthcheck, Reason.HEALTHCHECK)
    programs += selector.programs(request.init, Reason.INIT)
    closure_inputs += programs
    for path in request.release_files:
        selector.add_resolved(path, Reason.RELEASE_FILE)
    closure_inputs += selector.code_closure(loaded + programs)
    closure_inputs += selector.data_sets()
    selector.closure(closure_inputs)
    selector.includes()
    selector.contract_dirs()
    selector.volume_content()
    selector.user_db()
    selector.links_to_kept()
    selector.excludes()
    selector.mounts()
    selector.parents()
    base_links = selector.merge_into_base()
    entries = sorted(selector.entries(base_links), key=lambda e: e.path)
    dropped = tuple(Dropped(p, w) for p, w in sorted(selector.dropped.items()))
    return Selection(
        tuple(entries), dropped, tuple(dict.fromkeys(selector.warnings)), selector.unresolved
    )


def bytecode_source(path: str) -> str | None:
    """The source of a CPython __pycache__ file (dir/__pycache__/m.cpython-311.pyc -> dir/m.py)."""
    directory, _, name = path.rpartition("/")
    if not name.endswith(".pyc") or not directory.endswith("/__pycache__"):
        return None
    return f"{directory.removesuffix('/__pycache__')}/{name.split('.', 1)[0]}.py"
