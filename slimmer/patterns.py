"""The image paths and globs the command line takes (--include, --exclude,
--strip-except), checked before any container starts. Apart from
slimmer.fileset, which uses them, so that checking them loads nothing of
the selection (its closures load pyelftools)."""

from __future__ import annotations

from slimmer.errors import ExitCode, SlimError


class SelectionError(SlimError):
    """The request cannot be turned into a file set (bad patterns)."""

    exit_code = ExitCode.USAGE


def check_pattern(pattern: str, option: str) -> None:
    """Patterns are absolute image paths, optionally with fnmatch globs."""
    if not pattern.startswith("/"):
        raise SelectionError(
            f"{option} {pattern!r} is not an absolute path",
            f"write it as it is inside the image, e.g. {option} /etc/ssl/certs",
        )
    if pattern.count("[") != pattern.count("]"):
        raise SelectionError(f"{option} {pattern!r}: unbalanced [ ] in the pattern")
