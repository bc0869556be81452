"""The image's USER as the kernel needs it: uid, gid, supplementary groups,
home. Read from the image's own /etc/passwd and /etc/group (never through
NSS, which would load the image's libraries into the sensor), with the
rules Docker applies: a name must exist, a number need not."""

from __future__ import annotations

from dataclasses import dataclass

from slimmer.errors import NotFound, PathError
from slimmer.rootfs import RootFS


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
    entries = []
    for parts in _fields(text, 7):
        try:
            entries.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5] or "/"))
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for parts in _fields(text, 4):
        try:
            members = tuple(m for m in parts[3].split(",") if m)
            entries.append(GroupEntry(parts[0], int(parts[2]), members))
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
    user_part, _, group_part = (spec or "0").partition(":")
    passwd = parse_passwd(_read(fs, "/etc/passwd"))
    groups = parse_group(_read(fs, "/etc/group"))

    entry: PasswdEntry | None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in passwd if e.uid == uid), None)
    else:
        entry = next((e for e in passwd if e.name == user_part), None)
        if entry is None:
            raise NotFound(
                f"user {user_part!r} is not in the image's /etc/passwd",
                "use a numeric uid, or add the user in the fat image",
            )
        uid = entry.uid
    gid = entry.gid if entry else 0
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise NotFound(f"group {group_part!r} is not in the image's /etc/group")
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
