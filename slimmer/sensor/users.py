"""The image's USER as the kernel needs it: uid, gid, supplementary groups,
home. Read from the image's own /etc/passwd and /etc/group (never through
NSS, which would load the image's libraries into the sensor), with the
rules Docker applies: a name must exist, a number need not."""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import NotFound, PathError
from slimmer.rootfs import RootFS
from slimmer.userspec import UserSpecError, parse_id, parse_user_spec


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class AppUser:
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary
    name: str | None
    home: str


def _fields(text: str, count: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= count:
            rows.append(parts)
    return rows


def parse_passwd(text: str) -> list[PasswdEntry]:
    """The entries of a passwd file; a line whose ids are not ids the kernel
    takes (a -1 would mean "no change" to setuid and leave the app root) is
    skipped."""
    entries = []
    for parts in _fields(text, 7):
        try:
            entries.append(
                PasswdEntry(parts[0], parse_id(parts[2]), parse_id(parts[3]), parts[5] or "/")
            )
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for parts in _fields(text, 4):
        try:
            members = tuple(m for m in parts[3].split(",") if m)
            entries.append(GroupEntry(parts[0], parse_id(parts[2]), members))
        except ValueError:
            continue
    return entries


def _read(fs: RootFS, path: str) -> str:
    try:
        return fs.read_text(path)
    except PathError:
        return ""


def resolve_user(spec: str, fs: RootFS) -> AppUser:
    """Resolve a Docker USER spec (`name`, `uid`, `name:group`, `uid:gid`)
    against the image's files. An empty spec is root."""
    try:
        parsed = parse_user_spec(spec)
    except UserSpecError as exc:
        raise NotFound(f"USER {spec!r}: {exc}", "give USER[:GROUP], names or ids") from None
    passwd = parse_passwd(_read(fs, "/etc/passwd"))
    groups = parse_group(_read(fs, "/etc/group"))

    entry: PasswdEntry | None
    if isinstance(parsed.user, int):
        uid = parsed.user
        entry = next((e for e in passwd if e.uid == uid), None)
    else:
        user_name = parsed.user
        entry = next((e for e in passwd if e.name == user_name), None)
        if entry is None:
            raise NotFound(
                f"user {user_name!r} is not in the image's /etc/passwd",
                "use a numeric uid, or add the user in the fat image",
            )
        uid = entry.uid
    gid = entry.gid if entry else 0
    if isinstance(parsed.group, int):
        gid = parsed.group
    elif parsed.group is not None:
        group_name = parsed.group
        group = next((g for g in groups if g.name == group_name), None)
        if group is None:
            raise NotFound(f"group {group_name!r} is not in the image's /etc/group")
        gid = group.gid
    supplementary = tuple(
        sorted({g.gid for g in groups if entry is not None and entry.name in g.members} - {gid})
    )
    return AppUser(
        uid=uid,
        gid=gid,
        groups=supplementary,
        name=entry.name if entry else None,
        home=entry.home if entry else "/",
    )
