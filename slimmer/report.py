"""The build report (slim.report/1): every file of the micro image, its
size, mode, kind and why it is there; what was left out and why; sizes.
And the answers of `slim explain`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from slimmer import wire
from slimmer.errors import SlimError
from slimmer.fileset import Reason, Selection
from slimmer.layers import LayerKind
from slimmer.packages import KeptPackages, PackageManager
from slimmer.pid1 import InitChoice
from slimmer.protocol import StripSummary
from slimmer.rootfs import Kind, printable

REPORT_SCHEMA = "slim.report/1"

REASON_TEXT: dict[str, str] = {
    Reason.TRACED.value: "the app opened it during the trace",
    Reason.ELF_CLOSURE.value: "the dynamic loader needs it (ELF closure)",
    Reason.ENTRYPOINT.value: "it is the image's entrypoint command",
    Reason.HEALTHCHECK.value: "the HEALTHCHECK runs it",
    Reason.INCLUDE.value: "--include names it",
    Reason.SYMLINK.value: "a symlink on the way to a kept path, or one pointing to it",
    Reason.PARENT.value: "a parent directory of a kept path",
    Reason.WRITTEN_DIR.value: "the app wrote into it (created empty, original metadata)",
    Reason.LISTED_DIR.value: "the app listed or opened this directory",
    Reason.WORKDIR.value: "it is the image's WORKDIR",
    Reason.VOLUME.value: "it is one of the image's VOLUMEs or in one (the engine copies a "
    "VOLUME's content into a new volume)",
    Reason.BYTECODE_SOURCE.value: "CPython uses the kept bytecode only when this source exists",
    Reason.INTERPRETER_LANDMARK.value: "CPython looks for it to find its standard library",
    Reason.BASE_MERGE.value: "a link into the base image's directory, standing in for a "
    "directory symlink of the fat image that would have replaced it",
    Reason.SCRATCH_DIR.value: "a scratch directory programs expect (kept empty)",
    Reason.USER_DB.value: "the engine reads it at start to resolve USER, its groups and HOME",
    Reason.LOOKED_UP.value: "the app named it to the kernel (stat, access, readlink, open, exec, "
    "chdir), seen at the system call; or a lookup that failed in it",
    Reason.APP_CHANGED.value: "the app wrote, replaced or deleted it during the trace; "
    "the image's own version is kept",
    Reason.APP_CONTENT.value: "the app's own file (no OS package owns it) in or below a folder "
    "the app read a data file from (--no-app-content leaves them out)",
    Reason.PROGRAM_SIBLING.value: "a program beside one the app ran from a folder of programs "
    "(a CGI dir), which no OS package owns (--no-program-siblings leaves them out)",
    Reason.IMPORT_CLOSURE.value: "kept code imports, requires or includes it (the static "
    "closure of interpreted code; --no-code-closure leaves it out)",
    Reason.SCRIPT_COMMAND.value: "a kept shell script runs it (found on the image's PATH; "
    "--no-code-closure leaves it out)",
    Reason.DATA_SET.value: "it is in a data set keyed by input, of which the app read one "
    "member (--no-keep-data NAME leaves the set out)",
    Reason.PACKAGE_RECORD.value: "slim wrote it: the record of a kept OS package, for scanners",
    Reason.INIT.value: "it is the init that runs as PID 1 in front of the app (--init)",
    Reason.RELEASE_FILE.value: "it names the distribution, which scanners read before the "
    "package records (--no-package-records leaves it out)",
}


class ReportError(SlimError):
    pass


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    """One path of the micro image and why it is there."""

    path: str  # undecodable bytes as \\xNN escapes
    kind: Kind
    size: int
    mode: str  # octal, e.g. "0755"
    uid: int
    gid: int
    why: tuple[Reason, ...]
    link: str | None = None  # a symlink's target
    # where from, a line per rule: "import closure of /app/app.py:12 (import x)"
    detail: str | None = None


@dataclass(frozen=True)
class DroppedRecord:
    path: str
    why: str


@dataclass(frozen=True, kw_only=True)
class UnresolvedRecord:
    """A name kept code asks for that the code closure did not resolve:
    computed at run time, or not in the image."""

    requester: str
    line: int
    text: str
    why: str


@dataclass(frozen=True, kw_only=True)
class Sizes:
    fat: int
    micro: int | None  # None with --context-only
    files: int  # bytes of the kept regular files (hard links once)
    ratio: float | None
    # bytes of the files kept for one reason alone (what that rule added)
    only_for: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class LayerRecord:
    """One layer of the micro image, bottom first."""

    name: str  # what it holds: a kind, a package, or one large file of a package
    kind: LayerKind
    tar_digest: str  # sha256 of the layer's tar in the context (deterministic)
    diff_id: str | None  # the engine's layer (RootFS.Layers); None with --context-only
    size: int  # bytes of the layer's tar
    files: int  # regular files (and hard links) in it
    file_bytes: int


@dataclass(frozen=True, kw_only=True)
class PackageRecord:
    """An OS package with a file in the micro image."""

    name: str
    version: str
    architecture: str
    source: str
    files: int  # of its files, how many are kept


@dataclass(frozen=True, kw_only=True)
class MovedLinkRecord:
    """A kept link of a package that has nothing else kept: that package
    gets no record (a scanner would report its real package's CVEs twice);
    the link is counted with the package of the file it resolves to."""

    package: str  # the package that lists the link (name:arch)
    path: str
    target: str  # what it resolves to ("" when it does not)
    recorded_under: str | None  # that file's package, or none


@dataclass(frozen=True, kw_only=True)
class PackagesReport:
    manager: PackageManager | None  # None: no package database was found
    distribution: str  # os-release's PRETTY_NAME, or ""
    records: bool  # whether the micro image carries their records
    kept: tuple[PackageRecord, ...]
    links_only: tuple[MovedLinkRecord, ...] = ()  # packages with only links kept


@dataclass(frozen=True, kw_only=True)
class StrippedRecord:
    path: str
    old_size: int
    new_size: int


@dataclass(frozen=True, kw_only=True)
class StripReport:
    saved: int  # bytes
    stripped: tuple[StrippedRecord, ...]
    refused: tuple[DroppedRecord, ...]  # ELF files --strip could not handle, and why
    protected: int  # ELF files left as they are because their bytes are used as they are
    protected_files: tuple[DroppedRecord, ...] = ()  # those files, and why


@dataclass(frozen=True, kw_only=True)
class BuildReport:
    """What slim build put into the micro image, and why."""

    schema: Literal["slim.report/1"] = REPORT_SCHEMA
    image: str
    image_id: str
    tag: str | None
    micro_id: str | None
    sizes: Sizes
    files: tuple[FileRecord, ...]
    dropped: tuple[DroppedRecord, ...]
    warnings: tuple[str, ...]
    traces: tuple[str, ...]
    seconds: dict[str, float]
    layers: tuple[LayerRecord, ...] = ()
    packages: PackagesReport | None = None
    strip: StripReport | None = None
    init: InitChoice | None = None
    sbom: str | None = None  # the SBOM's path
    unresolved: tuple[UnresolvedRecord, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Production:
    """What the production features made of a build: layers, package
    records, --strip and --init, the SBOM's path."""

    layers: tuple[LayerRecord, ...] = ()
    packages: PackagesReport | None = None
    strip: StripReport | None = None
    init: InitChoice | None = None
    sbom: str | None = None


def packages_report(kept: KeptPackages, records: bool) -> PackagesReport:
    return PackagesReport(
        manager=kept.manager,
        distribution=kept.os_release.pretty_name,
        records=records and kept.manager is not None,
        kept=tuple(
            PackageRecord(
                name=item.package.name,
                version=item.package.version,
                architecture=item.package.architecture,
                source=item.package.source,
                files=len(item.kept_files),
            )
            for item in kept.packages
        ),
        links_only=tuple(
            MovedLinkRecord(
                package=moved.package,
                path=printable(moved.path),
                target=printable(moved.target),
                recorded_under=moved.owner,
            )
            for moved in kept.moved_links
        ),
    )


def strip_report(summary: StripSummary) -> StripReport:
    return StripReport(
        saved=sum(s.old_size - s.new_size for s in summary.stripped),
        stripped=tuple(
            StrippedRecord(path=printable(s.path), old_size=s.old_size, new_size=s.new_size)
            for s in summary.stripped
        ),
        refused=tuple(DroppedRecord(printable(r.path), r.why) for r in summary.refused),
        protected=len(summary.protected),
        protected_files=tuple(DroppedRecord(printable(p.path), p.why) for p in summary.protected),
    )


def build_report(
    *,
    image: str,
    image_id: str,
    tag: str | None,
    micro_id: str | None,
    fat_size: int,
    micro_size: int | None,
    selection: Selection,
    dockerfile_warnings: list[str],
    traces: list[str],
    seconds: dict[str, float],
    production: Production | None = None,
) -> BuildReport:
    made = production or Production()
    files = tuple(
        FileRecord(
            path=printable(e.path),
            kind=e.kind,
            size=e.size,
            mode=f"{e.mode:04o}",
            uid=e.uid,
            gid=e.gid,
            why=e.reasons,
            link=printable(e.link) if e.link is not None else None,
            detail=printable(e.detail) if e.detail else None,
        )
        for e in selection.entries
    )
    return BuildReport(
        image=image,
        image_id=image_id,
        tag=tag,
        micro_id=micro_id,
        sizes=Sizes(
            fat=fat_size,
            micro=micro_size,
            files=sum(e.size for e in selection.unique_files()),
            ratio=round(fat_size / micro_size, 1) if micro_size else None,
            only_for=bytes_only_for(selection),
        ),
        files=files,
        dropped=tuple(DroppedRecord(printable(d.path), d.why) for d in selection.dropped),
        warnings=(*selection.warnings, *dockerfile_warnings),
        traces=tuple(traces),
        seconds=seconds,
        layers=made.layers,
        packages=made.packages,
        strip=made.strip,
        init=made.init,
        sbom=made.sbom,
        unresolved=tuple(
            UnresolvedRecord(
                requester=printable(u.requester), line=u.line, text=printable(u.text), why=u.why
            )
            for u in selection.unresolved
        ),
    )


def bytes_only_for(selection: Selection) -> dict[str, int]:
    """Bytes of the regular files each reason alone brought in."""
    totals: dict[str, int] = {}
    for entry in selection.unique_files():
        if len(entry.reasons) == 1 and entry.size:
            reason = entry.reasons[0].value
            totals[reason] = totals.get(reason, 0) + entry.size
    return dict(sorted(totals.items()))


def load_report(path: Path) -> BuildReport:
    try:
        data = wire.parse(path.read_bytes())
    except (OSError, wire.WireError) as exc:
        raise ReportError(f"cannot read report {path}: {exc}", "slim build writes one") from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise ReportError(f"{path} is not a {REPORT_SCHEMA} report", "slim build writes one")
    try:
        return wire.decode(BuildReport, data)
    except wire.WireError as exc:
        raise ReportError(f"{path} is not a usable report: {exc.message}") from None


@dataclass(frozen=True)
class Explanation:
    kept: bool
    lines: tuple[str, ...]


def explain(report: BuildReport, path: str) -> Explanation:
    """Why a path is in the micro image, or why it is not."""
    path = "/" + path.strip("/") if path != "/" else "/"
    by_path = {f.path: f for f in report.files}
    if path in by_path:
        entry = by_path[path]
        lines = [f"{path}: kept ({entry.kind.value}, {human_size(entry.size)}, mode {entry.mode})"]
        lines += [f"  because {REASON_TEXT.get(why, why)}" for why in entry.why]
        if entry.detail:
            lines += [f"  from: {detail}" for detail in entry.detail.splitlines()]
        if entry.link is not None:
            lines.append(f"  it points to {entry.link}")
        lines += unresolved_lines(report, path)
        return Explanation(True, tuple(lines))
    for dropped in report.dropped:
        if dropped.path == path:
            return Explanation(False, (f"{path}: left out: {dropped.why}",))
    links = [f for f in report.files if f.link and path.startswith(f.path + "/")]
    if links:
        link = links[0]
        return Explanation(
            False,
            (
                f"{path}: not kept under this name; {link.path} is a symlink to {link.link}",
                "  ask for the path behind the link",
            ),
        )
    below = [f.path for f in report.files if f.path.startswith(path + "/")]
    hint = f" ({len(below)} paths below it are kept)" if below else ""
    lines = [
        f"{path}: not in the micro image{hint}",
        "  the app did not open it during the trace, no kept ELF file needs it, no kept "
        "code names it, and no --include names it",
    ]
    computed = [u for u in report.unresolved if u.why == "computed"]
    if computed:
        lines.append(
            f"  {len(computed)} imports of kept code are computed at run time and were not "
            "resolved; the first:"
        )
        lines += [f"    {u.requester}:{u.line}: {u.text}" for u in computed[:MAX_EXPLAINED]]
    lines.append(f"  to keep it: slim build ... --include {path}")
    return Explanation(False, tuple(lines))


MAX_EXPLAINED = 10


def unresolved_lines(report: BuildReport, path: str) -> list[str]:
    """What a kept file asks for that the code closure did not resolve."""
    mine = [u for u in report.unresolved if u.requester == path]
    if not mine:
        return []
    lines = [f"  names it asks for that were not resolved statically ({len(mine)}):"]
    lines += [f"    line {u.line}: {u.text} ({u.why})" for u in mine[:MAX_EXPLAINED]]
    if len(mine) > MAX_EXPLAINED:
        lines.append(f"    ... and {len(mine) - MAX_EXPLAINED} more (the report lists them)")
    return lines
