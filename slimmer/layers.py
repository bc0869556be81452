"""The micro image's files split into layers by update risk, each layer a
deterministic tar, so that micro images built from the same fat base share
the layers they have in common: the registry stores them once, a node pulls
them once.

Kinds, bottom to top:

- OS base: files of the distribution's base packages (for dpkg the
  Essential/required packages and what they depend on: libc6, libgcc-s1...);
- OS packages: files of the other OS packages (libssl3, libpython3.11...);
- application: files no package installed (the app, generated files);
- configuration: everything under /etc (the user database included),
  which differs from image to image.

A layer can only be shared when its bytes are identical, and two apps keep
different subsets of a package (nginx keeps libc.so.6 and ld.so of libc6,
a Python app also libm.so.6), so the unit of sharing is smaller than a
kind. The granularity is a policy (measured in benchmarks/layers.py):

- SINGLE: one layer, today's image;
- KIND: one layer per kind;
- PACKAGE: a layer per package with at least `own_layer_bytes` kept, the
  smaller ones together in their kind's layer;
- FILE: as PACKAGE, and a file of at least `own_layer_bytes` alone in a
  layer (libc.so.6, libcrypto.so.3), so apps that keep different subsets
  of one package still share its big files.

Determinism: members sorted by path (parents first), GNU format, numeric
owners, no user/group names, integer mtimes. Every layer holds all the
directories above its members, and a directory is written with the same
header in every layer of every image (mode and owners from the image, mtime
DIRECTORY_MTIME): its mtime in the fat image is the time a RUN step last
changed it, different in every fat image built from the same base, and a
directory missing from a layer would get the time of the build that
extracts it. Hard links stay in the layer of the file they link to.

So that the image still shows each directory as the fat image has it (a
directory listing shows its mtime), a last, small layer (DIRECTORIES)
restates every directory with its own mode, owners and mtime: overlayfs
takes a directory's attributes from the topmost layer that has it, and the
layers below stay the same in every image.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import BinaryIO

from slimmer.context import TAR_ENCODING, TAR_ERRORS, TAR_FORMAT, tar_member
from slimmer.errors import SlimError
from slimmer.fileset import Entry, Reason
from slimmer.packages import KeptPackages, Package
from slimmer.records import GeneratedFile
from slimmer.rootfs import Kind, Trees, parents
from slimmer.sparse import DataMap, SparseContent, checked_map, sparse_member

DIRECTORY_MTIME = 0  # every directory of a layered image: see the module's doc
CONFIG_TREES = ("/etc",)
CONFIGURATION = Trees.of(CONFIG_TREES)
DEFAULT_OWN_LAYER_BYTES = 128 * 1024  # measured: benchmarks/layers.py
# overlayfs stacks at most 128 lower layers; Docker refuses images above 127
MAX_LAYERS = 100


class LayerError(SlimError):
    """The layers cannot be written from what was collected."""


class LayerKind(StrEnum):
    OS_BASE = "os-base"
    OS_PACKAGES = "os-packages"
    APPLICATION = "application"
    CONFIGURATION = "configuration"
    DIRECTORIES = "directories"  # on top: every directory with its own mtime
    IMAGE = "image"  # everything in one layer (Granularity.SINGLE, --no-layers)


KIND_ORDER = {kind: rank for rank, kind in enumerate(LayerKind)}


class Granularity(StrEnum):
    SINGLE = "single"
    KIND = "kind"
    PACKAGE = "package"
    FILE = "file"


@dataclass(frozen=True)
class LayerPolicy:
    granularity: Granularity = Granularity.FILE
    own_layer_bytes: int = DEFAULT_OWN_LAYER_BYTES
    max_layers: int = MAX_LAYERS


@dataclass(frozen=True)
class Layer:
    """One layer: a name that says what it holds, and its entries in tar
    order (directories above the members included)."""

    name: str
    kind: LayerKind
    entries: tuple[Entry, ...]

    @property
    def file_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind is Kind.FILE)


@dataclass(frozen=True)
class LayerPlan:
    layers: tuple[Layer, ...]
    hard_links: Mapping[str, str]  # path -> the path it links to (same layer)


@dataclass(frozen=True)
class _Group:
    """Where a non-directory entry goes: its kind and its group's name, and
    for a package's layers how many packages that package needs."""

    kind: LayerKind
    name: str
    rank: int = 0


def kind_of_path(path: str, owner: Package | None, base: frozenset[str]) -> LayerKind:
    if path in CONFIGURATION:
        return LayerKind.CONFIGURATION
    if owner is None:
        return LayerKind.APPLICATION
    return LayerKind.OS_BASE if owner.name in base else LayerKind.OS_PACKAGES


def _package_group(kind: LayerKind, owner: Package) -> str:
    return f"{kind.value}:{owner.name}:{owner.architecture}"


def _groups(
    entries: Sequence[Entry],
    owners: Mapping[str, Package],
    base: frozenset[str],
    policy: LayerPolicy,
    hard_links: Mapping[str, str],
    ranks: Mapping[str, int],
) -> dict[str, _Group]:
    """The group of every non-directory entry (and of directories that are
    kept for their own sake, with nothing below them)."""
    parents_of_members = {a for e in entries if e.kind is not Kind.DIR for a in parents(e.path)}
    leaves = [
        e
        for e in entries
        if e.path != "/"
        and e.path not in hard_links
        and (e.kind is not Kind.DIR or e.path not in parents_of_members)
    ]
    kinds = {e.path: kind_of_path(e.path, owners.get(e.path), base) for e in leaves}
    groups: dict[str, _Group] = {}
    granularity = policy.granularity
    if granularity is Granularity.SINGLE:
        groups = {e.path: _Group(LayerKind.IMAGE, LayerKind.IMAGE.value) for e in leaves}
    elif granularity is Granularity.KIND:
        groups = {e.path: _Group(kinds[e.path], kinds[e.path].value) for e in leaves}
    else:
        package_bytes: dict[str, int] = {}
        for entry in leaves:
            owner = owners.get(entry.path)
            kind = kinds[entry.path]
            if owner is None or kind not in (LayerKind.OS_BASE, LayerKind.OS_PACKAGES):
                continue
            alone = granularity is Granularity.FILE and entry.size >= policy.own_layer_bytes
            if not alone:
                name = _package_group(kind, owner)
                package_bytes[name] = package_bytes.get(name, 0) + entry.size
        for entry in leaves:
            kind = kinds[entry.path]
            owner = owners.get(entry.path)
            name = kind.value
            if owner is not None and kind in (LayerKind.OS_BASE, LayerKind.OS_PACKAGES):
                if granularity is Granularity.FILE and entry.size >= policy.own_layer_bytes:
                    name = f"{_package_group(kind, owner)}:{entry.path}"
                elif package_bytes[_package_group(kind, owner)] >= policy.own_layer_bytes:
                    name = _package_group(kind, owner)
            rank = ranks.get(owner.name, 0) if owner is not None and name != kind.value else 0
            groups[entry.path] = _Group(kind, name, rank)
    for link, target in hard_links.items():
        if target in groups:
            groups[link] = groups[target]
    return _cap(groups, entries, policy.max_layers)


def _cap(groups: dict[str, _Group], entries: Sequence[Entry], limit: int) -> dict[str, _Group]:
    """Fold the smallest own-layer groups back into their kind's layer until
    there are at most `limit` layers."""
    sizes: dict[_Group, int] = {}
    size_of = {e.path: e.size for e in entries}
    for path, group in groups.items():
        sizes[group] = sizes.get(group, 0) + size_of.get(path, 0)
    kind_layers = {_Group(g.kind, g.kind.value) for g in sizes}
    total = len(set(sizes) | kind_layers)
    if total <= limit:
        return groups
    folded: set[_Group] = set()
    for group in sorted(sizes, key=lambda g: (sizes[g], g.name)):
        if total <= limit:
            break
        if group.name != group.kind.value:
            folded.add(group)
            total -= 1
    return {path: _Group(g.kind, g.kind.value) if g in folded else g for path, g in groups.items()}


def _layer_order(group: _Group) -> tuple[int, bool, int, str]:
    """Bottom to top: by kind; in a kind the package and file layers first,
    the packages that need fewer others before those that need them (libc6
    before libssl3 before python3.11), so images share a longer run of
    bottom layers; the kind's own layer (small packages) last."""
    return (KIND_ORDER[group.kind], group.name == group.kind.value, group.rank, group.name)


def plan_image(
    entries: Sequence[Entry],
    kept: KeptPackages,
    records: Sequence[GeneratedFile],
    hard_links: Mapping[str, str],
    policy: LayerPolicy = LayerPolicy(),
) -> LayerPlan:
    """The layers of a micro image: the collected entries and the package
    records slim writes, each record in the layers of the package it
    describes. The directories above the records that the image does not
    have get the records' time (shown by the directories layer)."""
    owners = kept.owner_map()
    packages = {item.package.key: item.package for item in kept.packages}
    for record in records:
        if record.package in packages:
            owners[record.path] = packages[record.package]
    merged = with_generated(entries, records, max((r.mtime for r in records), default=0))
    return plan_layers(merged, owners, kept.base, policy, hard_links, kept.dependency_ranks())


def normalized_dir(entry: Entry) -> Entry:
    return replace(entry, mtime=DIRECTORY_MTIME)


def plan_layers(
    entries: Sequence[Entry],
    owners: Mapping[str, Package],
    base: Iterable[str] = (),
    policy: LayerPolicy = LayerPolicy(),
    hard_links: Mapping[str, str] | None = None,
    ranks: Mapping[str, int] | None = None,
) -> LayerPlan:
    """Assign the micro image's entries to layers.

    `owners` maps a canonical path to the package that installed it (from
    the collecting sensor: KeptPackages.owner_map), `base` names the
    distribution's base packages, `hard_links` maps a path to the earlier
    path it is a hard link of (as in the rootfs tar), `ranks` orders the
    packages' layers (KeptPackages.dependency_ranks). Pure: same inputs,
    same plan."""
    links = dict(hard_links or {})
    by_path = {e.path: e for e in entries}
    single = policy.granularity is Granularity.SINGLE
    if not single:  # the directories layer takes one place
        policy = replace(policy, max_layers=max(1, policy.max_layers - 1))
    groups = _groups(entries, owners, frozenset(base), policy, links, ranks or {})
    members: dict[_Group, set[str]] = {}
    for path, group in groups.items():
        chosen = members.setdefault(group, set())
        chosen.add(path)
        chosen.update(a for a in parents(path) if a in by_path)
    layers = []
    for group in sorted(members, key=_layer_order):
        layer_entries = tuple(
            by_path[p] if single or by_path[p].kind is not Kind.DIR else normalized_dir(by_path[p])
            for p in sorted(members[group])
        )
        layers.append(Layer(group.name, group.kind, layer_entries))
    directories = tuple(by_path[p] for p in sorted(by_path) if by_path[p].kind is Kind.DIR)
    if not single and directories:
        layers.append(Layer(LayerKind.DIRECTORIES.value, LayerKind.DIRECTORIES, directories))
    return LayerPlan(tuple(layers), links)


# -- writing -----------------------------------------------------------------------


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes to `out` (which may be None)."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)


@dataclass(frozen=True)
class WrittenLayer:
    name: str
    kind: LayerKind
    tar_digest: str  # sha256 of the layer's tar ("sha256:..."); deterministic
    size: int  # bytes of the tar
    members: int
    files: int  # regular files and hard links
    file_bytes: int  # bytes of its regular files (a hard link's once)


class RootfsSource:
    """The validated rootfs tar (a seekable file on the host) as the source
    of file bytes, plus generated files (package records) by path."""

    def __init__(self, rootfs: BinaryIO, generated: Mapping[str, bytes] | None = None) -> None:
        self._tar = tarfile.open(  # noqa: SIM115 (closed by close(), a context manager)
            fileobj=rootfs, mode="r:", encoding=TAR_ENCODING, errors=TAR_ERRORS
        )
        self._members = {"/" + m.name: m for m in self._tar.getmembers()}
        self._generated = dict(generated or {})

    def __enter__(self) -> RootfsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def hard_links(self) -> dict[str, str]:
        return {
            path: "/" + member.linkname for path, member in self._members.items() if member.islnk()
        }

    def open(self, path: str) -> BinaryIO:
        if path in self._generated:
            return io.BytesIO(self._generated[path])
        member = self._members.get(path)
        handle = self._tar.extractfile(member) if member is not None and member.isreg() else None
        if handle is None:
            raise LayerError(f"{path} is not a regular file of the collected rootfs")
        return handle  # type: ignore[return-value]

    def sparse_map(self, path: str) -> DataMap | None:
        """Where a sparse member of the rootfs has data (None: not sparse)."""
        member = self._members.get(path)
        if path in self._generated or member is None or member.sparse is None:
            return None
        return checked_map(list(member.sparse), member.size)


def _add_file(
    tar: tarfile.TarFile, member: tarfile.TarInfo, source: RootfsSource, path: str
) -> None:
    """A regular file's member, sparse when it is sparse in the rootfs (only
    its data is read and written; the engine's ADD fills the zeros in)."""
    layout = source.sparse_map(path)
    with source.open(path) as handle:
        if layout is None:
            tar.addfile(member, handle)
            return

        def read_at(offset: int, length: int) -> bytes:
            handle.seek(offset)
            return handle.read(length)

        tar.addfile(sparse_member(member, layout), SparseContent(layout, read_at))


def write_layer(
    layer: Layer, plan: LayerPlan, source: RootfsSource, out: BinaryIO | None
) -> WrittenLayer:
    """Write one layer's tar to `out` (None: only hash it); returns its
    digest and size. Members as in the rootfs tar: extended attributes as
    PAX records, sparse files as sparse members, hard links to a member of
    the same layer."""
    sink = _HashingWriter(out)
    with tarfile.open(
        fileobj=sink, mode="w|", format=TAR_FORMAT, encoding=TAR_ENCODING, errors=TAR_ERRORS
    ) as tar:
        for entry in layer.entries:
            member = tar_member(entry)
            link = plan.hard_links.get(entry.path)
            if link is not None:
                member.type, member.linkname, member.size = tarfile.LNKTYPE, link.lstrip("/"), 0
                member.pax_headers = {}  # the attributes are the inode's: on its first name
                tar.addfile(member)
            elif member.isreg():
                _add_file(tar, member, source, entry.path)
            else:
                tar.addfile(member)
    return WrittenLayer(
        layer.name,
        layer.kind,
        f"sha256:{sink.sha256.hexdigest()}",
        sink.size,
        len(layer.entries),
        sum(1 for e in layer.entries if e.kind is Kind.FILE),
        sum(e.size for e in layer.entries if e.kind is Kind.FILE and e.path not in plan.hard_links),
    )


def entries_from_rootfs_tar(rootfs: BinaryIO) -> tuple[list[Entry], dict[str, str]]:
    """The entries of a validated rootfs tar (what copy_validated wrote) and
    its hard links, for planning layers on the host. Reasons are not in a
    tar; the selection's are richer when the caller has them."""
    entries: list[Entry] = []
    links: dict[str, str] = {}
    sizes: dict[str, int] = {}
    with tarfile.open(fileobj=rootfs, mode="r:", encoding=TAR_ENCODING, errors=TAR_ERRORS) as tar:
        for member in tar:
            path = "/" + member.name
            if member.islnk():
                links[path] = "/" + member.linkname
                kind = Kind.FILE
            elif member.isdir():
                kind = Kind.DIR
            elif member.issym():
                kind = Kind.SYMLINK
            elif member.isreg():
                kind = Kind.FILE
            else:
                raise LayerError(f"{member.name!r}: a member type a rootfs tar does not have")
            size = member.size if member.isreg() else sizes.get(links.get(path, ""), 0)
            sizes[path] = size
            entries.append(
                Entry(
                    path=path,
                    kind=kind,
                    reasons=(Reason.TRACED,),
                    size=size,
                    mode=stat.S_IMODE(member.mode),
                    uid=member.uid,
                    gid=member.gid,
                    mtime=int(member.mtime),
                    link=member.linkname if member.issym() else None,
                )
            )
    return entries, links


def with_generated(
    entries: Sequence[Entry], files: Iterable[GeneratedFile], dir_mtime: int = DIRECTORY_MTIME
) -> list[Entry]:
    """The entries plus files slim writes (package records): root-owned,
    with the directories above them that the selection does not have (0755,
    root, `dir_mtime`). Sorted by path."""
    merged = {e.path: e for e in entries}
    for item in files:
        merged[item.path] = Entry(
            item.path, Kind.FILE, (Reason.PACKAGE_RECORD,), len(item.data), item.mode, 0, 0,
            item.mtime,
        )  # fmt: skip
        for directory in parents(item.path):
            if directory not in merged:
                merged[directory] = Entry(
                    directory, Kind.DIR, (Reason.PACKAGE_RECORD,), 0, 0o755, 0, 0, dir_mtime
                )
    return [merged[p] for p in sorted(merged)]
