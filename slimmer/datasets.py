"""Data sets keyed by input: when the app reads one member of a set whose
member is chosen at run time (a time zone, a locale, a charset, a
terminal), the whole set is kept, because the next run may ask for
another member (TZ=Asia/Tokyo, LANG=de_DE.UTF-8, iconv -f LATIN1,
TERM=linux).

- zoneinfo: a file under a zoneinfo dir that holds tzdata.zi, zone.tab or
  zone1970.tab (also Python's tzdata package), which the app named itself
  (TZ=Asia/Tokyo, zoneinfo.ZoneInfo("UTC")), or any zone file when the
  kept code holds a library that loads zones by name (Python's zoneinfo,
  pytz, dateutil.tz, Perl's DateTime::TimeZone, Ruby's tzinfo); the local
  zone read through /etc/localtime alone does not count -> that dir, but
  for the leap-second variants in right/ unless the app read one of them
  (0.64 MB of files on Debian 12's tzdata; right/ is 0.67 MB more); where
  the names the app used are not known (--no-syscalls) any zone file read
  counts;
- locales: a file under /usr/lib/locale (or lib64, /lib) -> that dir: the
  locale-archive and the compiled locales (0.4 MB for C.utf8, plus what
  locale-gen made);
- gconv: a charset module of a gconv dir (with gconv-modules; glibc reads
  its gconv-modules.cache for any conversion, and builds UTF-8 in, so the
  cache alone does not count) -> all of it, the modules with their ELF
  closure (8.2 MB);
- terminfo: an entry (terminfo/x/name) -> every terminfo dir ncurses
  searches (0.2 MB from ncurses-base, 7.4 MB more with ncurses-term).

A set larger than MAX_SET_BYTES (or MAX_SET_FILES files) is not kept, with
a warning. `--no-keep-data NAME` turns one set off.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from slimmer.errors import PathError
from slimmer.rootfs import RootFS, join, walk

MAX_SET_BYTES = 64 * 1024 * 1024
MAX_SET_FILES = 20_000
TERMINFO_DIRS = ("/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo", "/usr/lib/terminfo")


@dataclass(frozen=True)
class DataSet:
    name: str
    member: re.Pattern[str]  # a path in the set; group 1 is the set's dir
    markers: tuple[str, ...] = ()  # the set's dir holds one of these names
    also: tuple[str, ...] = ()  # other dirs of the same set (searched in turn)
    modules: bool = False  # its .so members are loaded: they go to the ELF closure
    unless_read: tuple[str, ...] = ()  # subdirs kept only when the member read is in one
    # A member counts only when the app named it itself, where the names the
    # app used are known: reading the local zone through /etc/localtime (as
    # almost every program does) is not choosing a zone by input; or when
    # the kept code holds a library that chooses members by name (`users`).
    named: bool = False
    users: re.Pattern[str] | None = None


DATA_SETS = (
    DataSet(
        "zoneinfo",
        re.compile(r"^(.*/zoneinfo)/(?!.*\.pyc?$).+"),
        markers=("tzdata.zi", "zone.tab", "zone1970.tab"),
        unless_read=("right",),
        named=True,
        # libraries that load zones by name: Python's zoneinfo, pytz,
        # dateutil.tz, tzlocal; Perl's DateTime::TimeZone; Ruby's tzinfo
        users=re.compile(
            r".*/(?:python3[^/]*/zoneinfo/__init__\.py|pytz/__init__\.py|dateutil/tz/tz\.py"
            r"|tzlocal/__init__\.py|DateTime/TimeZone\.pm|tzinfo\.rb)$"
        ),
    ),
    DataSet("locales", re.compile(r"^(/(?:usr/)?lib(?:64)?/locale)/.+")),
    DataSet(
        "gconv",
        re.compile(r"^(/(?:usr/)?lib(?:64)?(?:/[^/]+)?/gconv)/[^/]+\.so$"),
        markers=("gconv-modules", "gconv-modules.cache"),
        modules=True,
    ),
    DataSet("terminfo", re.compile(r"^(.*/terminfo)/[^/]+/[^/]+$"), also=TERMINFO_DIRS),
)
DATA_SET_NAMES = tuple(s.name for s in DATA_SETS)


@dataclass(frozen=True)
class Member:
    path: str
    size: int


@dataclass(frozen=True)
class KeptSet:
    name: str
    trigger: str  # the member the app read
    dirs: tuple[str, ...]
    members: tuple[Member, ...]  # files and links

    @property
    def detail(self) -> str:
        return f"{self.name} set ({', '.join(self.dirs)}), of which the app read {self.trigger}"


@dataclass(frozen=True)
class SetsFound:
    kept: tuple[KeptSet, ...]
    warnings: tuple[str, ...]


def _named_members(fs: RootFS, named: Iterable[str]) -> set[str]:
    """The members the app named by a path of a set itself (any name that
    resolves to one, /etc/localtime and its like aside), resolved once."""
    found = set()
    for path in named:
        if "/zoneinfo/" not in path:
            continue
        try:
            found.add(fs.resolve(path).path)
        except PathError:
            continue
    return found


def _has_marker(fs: RootFS, directory: str, markers: tuple[str, ...]) -> bool:
    return not markers or any(fs.exists(join(directory, name), follow=False) for name in markers)


def _members(fs: RootFS, directory: str, skipped: tuple[str, ...]) -> list[Member] | None:
    """The files and links of a set's dir; None when over the bounds."""
    found: list[Member] = []
    total = 0
    for path, info in walk(fs, directory, skipped):
        if stat.S_ISDIR(info.st_mode):
            continue
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue
        size = info.st_size if stat.S_ISREG(info.st_mode) else 0
        total += size
        found.append(Member(path, size))
        if total > MAX_SET_BYTES or len(found) > MAX_SET_FILES:
            return None
    return found


def keyed_sets(
    fs: RootFS,
    read: Iterable[str],
    names: Iterable[str],
    skipped: tuple[str, ...] = (),
    named: Iterable[str] | None = None,
    kept: Iterable[str] = (),
) -> SetsFound:
    """The sets (of those named) one of whose members the app read.
    `named` holds the paths the app named to the kernel (None: not known,
    the trace did not observe the system calls); a set whose member must be
    named (zoneinfo) counts only a member the app named under the set's
    own path, not one reached through a link such as /etc/localtime, unless
    the `kept` code holds one of the set's users (a library that loads
    members by name: zoneinfo.ZoneInfo(zone) on a route nobody probed)."""
    wanted = set(names)
    kept_paths = list(kept)
    used = {
        data_set.name
        for data_set in DATA_SETS
        if data_set.users is not None and any(data_set.users.match(p) for p in kept_paths)
    }
    named_members = None if named is None else _named_members(fs, named)
    triggers: dict[tuple[str, str], str] = {}
    for path in sorted(read):
        for data_set in DATA_SETS:
            if data_set.name not in wanted:
                continue
            match = data_set.member.match(path)
            if not match:
                continue
            by_name = named_members is None or data_set.name in used or path in named_members
            if data_set.named and not by_name:
                continue
            if _has_marker(fs, match.group(1), data_set.markers):
                triggers.setdefault((data_set.name, match.group(1)), path)
    kept, warnings = [], []
    by_name = {s.name: s for s in DATA_SETS}
    for (name, directory), trigger in sorted(triggers.items()):
        data_set = by_name[name]
        dirs = [directory]
        for other in data_set.also:
            try:
                canonical = fs.resolve(other).path
            except PathError:
                continue
            if canonical not in dirs and stat.S_ISDIR(fs.lstat(canonical).st_mode):
                dirs.append(canonical)
        members: list[Member] = []
        left_out = tuple(
            join(directory, sub)
            for sub in data_set.unless_read
            if not trigger.startswith(join(directory, sub) + "/")
        )
        for each in dirs:
            found = _members(fs, each, (*skipped, *left_out))
            if found is None:
                members = []
                warnings.append(
                    f"the {name} set in {each} is larger than {MAX_SET_BYTES // 2**20} MiB "
                    f"or {MAX_SET_FILES} files: not kept (--include {each} keeps it)"
                )
                break
            members += found
        if members:
            kept.append(KeptSet(name, trigger, tuple(dirs), tuple(members)))
    return SetsFound(tuple(kept), tuple(warnings))
