"""Whether the container a trace ran in can stand for the image, and the
view of it that does: `slim build` then collects there, in one container.

After the app the container's tree is the image's, plus what the app made,
minus what it changed. inotify watches every directory, so the sensor knows
both: a path whose first change was its creation is the app's own (hidden
from the collect, as it is absent from the image); any other change (a
write, a chmod, a delete, a rename onto a name) was made to the image's own
file, whose bytes are then only in the image (overlayfs keeps them below,
out of reach): the collect must run in a fresh container. The directories
the app made entries in keep the metadata the watch set-up read before the
app ran. A hard link the app made to an image file would let it change that
file under a name of its own: one seen at the system call, or one still
there (a made file with more than one link), sends the collect elsewhere.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from slimmer.rootfs import RootFS, Trees, join, parents
from slimmer.trace import PathAction


@dataclass(frozen=True)
class TreeChanges:
    """What the sensor saw happen to the tree while the app ran."""

    made: frozenset[str]  # paths whose first change was their creation
    changed: tuple[str, ...]  # paths of the image the app changed (sorted)
    overflow: bool  # inotify lost events: the changes are not known
    unwatched: int = 0  # directories the watch could not cover: changes there unseen


def why_not_intact(
    changes: TreeChanges,
    *,
    pid1: bool,
    links_made: Iterable[str],
    unresolved: int,
    slim_writes: Iterable[str],
    made_with_links: Iterable[str],
) -> str | None:
    """Why the trace's container cannot stand for the image (None: it can).
    `links_made`: the names hard links were made of (the syscall layer);
    `unresolved`: path calls whose name the sensor could not read;
    `slim_writes`: paths the collect itself may write (--init's dumb-init);
    `made_with_links`: made paths that are files with more than one link."""
    if not pid1:
        return "the sensor is not PID 1, so it cannot end every process the app left"
    if changes.overflow:
        return "inotify lost events during the trace"
    if changes.unwatched:
        return f"{changes.unwatched} directories of the image could not be watched"
    if changes.changed:
        return f"the app changed {changes.changed[0]}, which the image has"
    linked = sorted(links_made)
    if linked:
        return f"the app made a hard link to {linked[0]}"
    if unresolved:
        return f"{unresolved} path calls of the app were not read, or not kept"
    extra = sorted(made_with_links)
    if extra:
        return f"{extra[0]}, which the app made, is a hard link"
    for path in slim_writes:
        on_the_way = [path, *parents(path)]
        if any(p in changes.made for p in on_the_way):
            return f"the app made something on the way to {path}"
    return None


def hard_linked(paths: Iterable[str]) -> list[str]:
    """Of paths made by the app, the non-directories with more than one link."""
    found = []
    for path in paths:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) and info.st_nlink > 1:
            found.append(path)
    return found


def links_in(records: Iterable[tuple[str, PathAction]]) -> list[str]:
    """The names the app made hard links of (seen at the system call)."""
    return [path for path, action in records if action is PathAction.LINK_FROM]


class PristineView(RootFS):
    """The container's tree as the image has it: the paths the app made are
    not there, and the directories it made entries in have the stat the
    watch set-up read before the app ran (their mtime is the image's). The
    image's symlinks are the ones the set-up walk passed (`links`): the app
    made none of them, and removed or renamed none (that is a change), so
    the selection need not walk every directory again."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        made: frozenset[str],
        before: Mapping[str, os.stat_result],
        links: Iterable[str] | None = None,
    ) -> None:
        super().__init__(root)
        self.made = made
        self.before = before
        self.links = None if links is None else tuple(links)

    def symlinks(self, skipped: Trees) -> Iterator[str]:
        if self.links is None:
            yield from super().symlinks(skipped)
            return
        for path in self.links:
            if path not in skipped:
                yield path

    def _is_made(self, canonical: str) -> bool:
        if not self.made:
            return False
        return canonical in self.made or any(p in self.made for p in parents(canonical))

    def _check_image_has(self, canonical: str) -> None:
        if self._is_made(canonical):
            raise FileNotFoundError(errno.ENOENT, "made by the app during the trace", canonical)

    def _lstat(self, canonical: str) -> os.stat_result:
        self._check_image_has(canonical)
        restored = self.before.get(canonical)
        if restored is not None:
            return restored
        return super()._lstat(canonical)

    def listdir(self, canonical: str) -> list[str]:
        self._check_image_has(canonical)
        names = super().listdir(canonical)
        return [name for name in names if self._image_has(canonical, name)]

    def list_kinds(self, canonical: str) -> list[tuple[str, bool, bool]]:
        self._check_image_has(canonical)
        found = super().list_kinds(canonical)
        return [item for item in found if self._image_has(canonical, item[0])]

    def _image_has(self, directory: str, name: str) -> bool:
        """Whether a name in a directory the image has is the image's."""
        return not self.made or join(directory, name) not in self.made
