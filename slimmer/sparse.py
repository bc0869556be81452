"""Sparse files in slim's tars: a file's zeros cost no disk on the way.

A 2 GiB file that is one big hole in the image used to become 2 GiB of
zeros in the container's out.tar, again in the host's rootfs.tar and again
in context.tar. Now a file with enough zeros is written as a sparse tar
member in the PAX 1.0 form of GNU tar (a `x` header with GNU.sparse.major=1,
minor=0, name and realsize; the data section starts with the map, then
holds only the data). Go's archive/tar reads that form and hands the
classic builder's ADD a regular file ('0') with the zeros filled in; the
older GNU form (type 'S') would reach ADD as an unknown type and fail.
Python's tarfile reads it too, so the host checks it like any member.

The map is defined by the content alone: the file is cut into aligned
4 KiB blocks and a block of zeros is a hole, so the same file gives the
same bytes on any file system (the context stays deterministic). The file
system's own hole map (SEEK_DATA/SEEK_HOLE) only lets slim skip reading
regions that are known to be zeros. A file becomes a sparse member when
its holes add up to SPARSE_MIN_HOLES or more; below that the map and the
extra header would not pay for themselves and the member stays plain.
"""

from __future__ import annotations

import errno
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

BLOCK = 4096
SPARSE_MIN_HOLES = 64 * 1024
READ_CHUNK = 1 << 20  # a multiple of BLOCK
ZEROS = bytes(READ_CHUNK)  # compared as bytes: memcmp (a memoryview compares 100x slower)
ZERO_BLOCK = bytes(BLOCK)
PLACEHOLDER = "GNUSparseFile.0/file"  # the ustar name; readers use GNU.sparse.name


@dataclass(frozen=True)
class DataMap:
    """Where a file of `size` bytes has data; everything else is zeros."""

    size: int
    segments: tuple[tuple[int, int], ...]  # (offset, length), sorted, disjoint

    @property
    def data_bytes(self) -> int:
        return sum(length for _, length in self.segments)

    @property
    def sparse(self) -> bool:
        """Whether writing it as a sparse member saves space."""
        return self.size - self.data_bytes >= SPARSE_MIN_HOLES

    def entries(self) -> list[tuple[int, int]]:
        """The map as GNU tar writes it: a file that ends in a hole ends with
        an empty entry at its size."""
        entries = list(self.segments)
        if not entries or sum(entries[-1]) < self.size:
            entries.append((self.size, 0))
        return entries

    def map_block(self) -> bytes:
        """The map at the start of the member's data, padded to 512 bytes."""
        entries = self.entries()
        text = f"{len(entries)}\n" + "".join(f"{offset}\n{length}\n" for offset, length in entries)
        data = text.encode("ascii")
        return data + bytes(-len(data) % tarfile.BLOCKSIZE)

    def stored_size(self) -> int:
        return len(self.map_block()) + self.data_bytes


class SparseMapError(ValueError):
    pass


def checked_map(entries: list[tuple[int, int]], size: int) -> DataMap:
    """A map read from an untrusted archive: sorted, disjoint, inside the
    file, and not longer than the file has blocks."""
    if len(entries) > size // tarfile.BLOCKSIZE + 2:
        raise SparseMapError("more map entries than the file has blocks")
    segments = []
    end = 0
    for offset, length in entries:
        if offset < end or length < 0 or offset + length > size:
            raise SparseMapError(f"map entry ({offset}, {length}) out of order or outside")
        if length:
            segments.append((offset, length))
        end = offset + length
    return DataMap(size, tuple(segments))


def _next_data(fd: int, position: int, size: int) -> int:
    """Where data may start at or after `position`: the file system's
    answer (SEEK_DATA), or `position` when it cannot tell."""
    try:
        return min(os.lseek(fd, position, os.SEEK_DATA), size)
    except OSError as exc:
        return size if exc.errno == errno.ENXIO else position


def _next_hole(fd: int, position: int, size: int) -> int:
    try:
        return min(os.lseek(fd, position, os.SEEK_HOLE), size)
    except OSError:
        return size


def data_map(fd: int, size: int) -> DataMap:
    """The aligned BLOCKs of the file that are not all zeros, as segments.
    Reads the file (with pread) except where the file system says it has
    a hole. Moves the file offset."""
    segments: list[list[int]] = []
    position = 0

    def data(start: int, end: int) -> None:
        if segments and segments[-1][1] == start:
            segments[-1][1] = end
        else:
            segments.append([start, end])

    while position < size:
        known_zero = _next_data(fd, position, size)
        known_zero -= known_zero % BLOCK if known_zero < size else 0
        if known_zero > position:
            position = known_zero
            continue
        hole = _next_hole(fd, position, size)
        end = min(size, max(position + BLOCK, hole + (-hole % BLOCK)))
        while position < end:
            chunk = os.pread(fd, min(READ_CHUNK, end - position), position)
            if not chunk:
                raise SparseMapError("the file is shorter than its size")
            full = ZEROS if len(chunk) == READ_CHUNK else ZEROS[: len(chunk)]
            if chunk != full:
                for start in range(0, len(chunk), BLOCK):
                    block = chunk[start : start + BLOCK]
                    if block != ZERO_BLOCK[: len(block)]:
                        data(position + start, position + start + len(block))
            position += len(chunk)
    return DataMap(size, tuple((start, end - start) for start, end in segments))


class PaxMember(tarfile.TarInfo):
    """A member written with its PAX header in an otherwise GNU archive
    (sparse maps, extended attributes)."""

    def tobuf(
        self,
        format: int | None = tarfile.PAX_FORMAT,
        encoding: str = tarfile.ENCODING,
        errors: str = "surrogateescape",
    ) -> bytes:
        return super().tobuf(tarfile.PAX_FORMAT, encoding, errors)


def sparse_member(member: tarfile.TarInfo, layout: DataMap) -> tarfile.TarInfo:
    """The PAX 1.0 sparse form of a regular file's member."""
    sparse = PaxMember(PLACEHOLDER)
    sparse.type = tarfile.REGTYPE
    sparse.mode, sparse.uid, sparse.gid, sparse.mtime = (
        member.mode,
        member.uid,
        member.gid,
        member.mtime,
    )
    sparse.uname, sparse.gname = member.uname, member.gname
    sparse.size = layout.stored_size()
    sparse.pax_headers = {
        **member.pax_headers,  # extended attributes, if any
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": member.name,
        "GNU.sparse.realsize": str(layout.size),
    }
    return sparse


class SparseContent:
    """The data section of a sparse member, as a file to read from: the map,
    then each segment, read through `read_at(offset, length)` in increasing
    offsets. `read(n)` returns n bytes until the end, as tarfile expects."""

    def __init__(self, layout: DataMap, read_at: Callable[[int, int], bytes]) -> None:
        self._chunks = self._generate(layout, read_at)
        self._buffer = bytearray()

    @staticmethod
    def _generate(layout: DataMap, read_at: Callable[[int, int], bytes]) -> Iterator[bytes]:
        yield layout.map_block()
        for offset, length in layout.segments:
            done = 0
            while done < length:
                chunk = read_at(offset + done, min(READ_CHUNK, length - done))
                if not chunk:
                    raise SparseMapError("the file ended inside a data segment")
                done += len(chunk)
                yield chunk

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


__all__ = [
    "BLOCK",
    "SPARSE_MIN_HOLES",
    "DataMap",
    "SparseContent",
    "SparseMapError",
    "checked_map",
    "data_map",
    "sparse_member",
]
