"""A USER spec as Docker reads it: `user[:group]`, each a name or a number.
Numbers are ids the kernel can take (0 to 2**32 - 2: (uid_t)-1 means "no
change" to setuid(2), so it must never stand for a user); names are looked
up in the image later. Checked on the host before any container starts,
and read the same way by the sensor."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID = 2**32 - 2
_NUMBER = re.compile(r"[0-9]+")


class UserSpecError(ValueError):
    """A USER spec no container can run as."""


@dataclass(frozen=True)
class UserSpec:
    user: str | int  # a name, or a uid
    group: str | int | None  # a name, a gid, or None (the user's own)


def parse_user_spec(spec: str) -> UserSpec:
    """`name`, `uid`, `name:group`, `uid:gid` (an empty spec is root).
    UserSpecError says what is wrong."""
    user, colon, group = (spec or "0").partition(":")
    if "\0" in spec:
        raise UserSpecError("a user or group name cannot hold a NUL")
    if not user:
        raise UserSpecError("the user is empty")
    if colon and not group:
        raise UserSpecError("the group after ':' is empty")
    if ":" in group:
        raise UserSpecError("a USER is user[:group], with one ':'")
    return UserSpec(_part(user, "uid"), _part(group, "gid") if colon else None)


def _part(text: str, kind: str) -> str | int:
    return parse_id(text, kind) if _NUMBER.fullmatch(text) else text


def parse_id(text: str, kind: str = "id") -> int:
    """A uid or gid: decimal digits, at most MAX_ID; UserSpecError otherwise
    (an empty field, a sign, a -1 that setuid(2) reads as "no change")."""
    if not _NUMBER.fullmatch(text):
        raise UserSpecError(f"{kind} {text!r} is not a number")
    number = int(text)
    if number > MAX_ID:
        raise UserSpecError(f"{kind} {text} is out of range (at most {MAX_ID})")
    return number
