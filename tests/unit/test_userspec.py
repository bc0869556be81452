"""USER specs: ids the kernel takes, names left to the image."""

from __future__ import annotations

import pytest

from slimmer.sensor.users import parse_passwd
from slimmer.userspec import MAX_ID, UserSpec, UserSpecError, parse_user_spec


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("", UserSpec(0, None)),
        ("app", UserSpec("app", None)),
        ("1000:1000", UserSpec(1000, 1000)),
        ("app:staff", UserSpec("app", "staff")),
        (str(MAX_ID), UserSpec(MAX_ID, None)),
        ("\u0661\u0662", UserSpec("\u0661\u0662", None)),  # Arabic-Indic digits: a name
    ],
)
def test_specs_docker_takes(spec: str, parsed: UserSpec) -> None:
    assert parse_user_spec(spec) == parsed


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("99999999999", "uid 99999999999 is out of range"),
        ("0:4294967295", "gid 4294967295 is out of range"),  # (gid_t)-1: "no change"
        (":0", "the user is empty"),
        ("app:", "the group after ':' is empty"),
        ("a:b:c", "one ':'"),
        ("a\0b", "NUL"),
    ],
)
def test_specs_no_container_runs_as(spec: str, why: str) -> None:
    with pytest.raises(UserSpecError, match=why):
        parse_user_spec(spec)


def test_passwd_entries_with_ids_the_kernel_cannot_take_are_skipped() -> None:
    """A -1 would be setuid's "no change": the app would stay root."""
    text = "root:x:0:0::/root:/bin/sh\nevil:x:-1:-1::/:/bin/sh\nbig:x:99999999999:0::/:/bin/sh\n"
    assert [entry.name for entry in parse_passwd(text)] == ["root"]
