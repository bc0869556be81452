"""Which init runs as PID 1 in front of the app (`--init`), and whether it
can run in the image.

The image's own init comes first: `tini`, `tini-static` or `dumb-init` on
the image's PATH, or `/tini` (where tini's README puts it), when it runs
there: checked as the wheel's binary is (an ELF program whose loadable
segments are all in the file, of the engine's machine, its interpreter a
fitting loader of the image, its libraries found). One that does not (a
truncated file, another architecture, a missing library) is passed over
with the reason, in the report and on stderr. Otherwise the
`dumb-init` binary of its PyPI wheel, which slim has on the host: the wheel
(manylinux, x86_64 and aarch64) installs it into the environment's scripts
directory (`<venv>/bin/dumb-init`, listed in the distribution's RECORD as
`../../../bin/dumb-init`). It is an 18 kB executable linked against glibc
(libc.so.6, symbols up to GLIBC_2.7, interpreter /lib64/ld-linux-x86-64.so.2
on x86_64), so it runs only in an image with a glibc of the same
architecture; its ELF closure (libc, ld.so) then comes from the image like
any kept binary's. In the micro image it is WHEEL_INIT_PATH, a path no
distribution or app uses.

The choice is made where the files are, in the collecting sensor
(`choose_init`, given the wheel binary's ELF facts); only `find_wheel_init`
and `read_init` run on the host, which puts the binary into the collecting
container's run directory.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from slimmer.elf import ElfIdent, ElfInfo, ElfProblem, check_segments, parse_elf
from slimmer.errors import PathError
from slimmer.execpath import find_program
from slimmer.loader import Loader, SkippedInput, is_musl_interpreter
from slimmer.rootfs import RootFS

WHEEL_DISTRIBUTION = "dumb-init"
WHEEL_BINARY = "dumb-init"
WHEEL_INIT_PATH = "/usr/libexec/slim/dumb-init"
IMAGE_INIT_NAMES = ("tini", "tini-static", "dumb-init")
IMAGE_INIT_PATHS = ("/tini", "/sbin/tini", "/usr/bin/tini", "/usr/local/bin/tini")
MUSL_LOADER_DIR = "/lib"
MAX_INIT_BYTES = 16 * 1024 * 1024


class InitSource(StrEnum):
    IMAGE = "image"  # the fat image's own tini or dumb-init
    WHEEL = "dumb-init-wheel"  # the binary of slim's dumb-init dependency


@dataclass(frozen=True)
class InitChoice:
    source: InitSource
    path: str  # where it is in the micro image
    # the image's own inits that cannot run there, each with the reason
    passed_over: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """The init's part of the entrypoint: both tini and dumb-init take
        `--` as the end of their own options."""
        return (self.path, "--")


@dataclass(frozen=True)
class InitProblem:
    reason: str


def image_init_candidates(fs: RootFS, env: Mapping[str, str], workdir: str = "/") -> list[str]:
    """The image's own inits, in the order they are tried: tini, tini-static
    and dumb-init on the image's PATH, then tini's usual places; only
    regular executable files."""
    found = [find_program(fs, name, env.get("PATH"), workdir) for name in IMAGE_INIT_NAMES]
    candidates = []
    for path in dict.fromkeys([*found, *IMAGE_INIT_PATHS]):
        if path is None:
            continue
        try:
            info = fs.stat(path)
        except (PathError, OSError):
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o111:
            candidates.append(path)
    return candidates


def find_image_init(fs: RootFS, env: Mapping[str, str], workdir: str = "/") -> str | None:
    """The image's first own init, as an image path (a regular executable
    file), whether it runs or not (see choose_init)."""
    candidates = image_init_candidates(fs, env, workdir)
    return candidates[0] if candidates else None


def image_init_problem(
    fs: RootFS,
    path: str,
    env: Mapping[str, str],
    workdir: str = "/",
    machine: ElfIdent | None = None,
) -> InitProblem | None:
    """Why the image's own init at `path` cannot run as the micro image's
    PID 1, checked as the wheel's is: an ELF program whose loadable
    segments are all in the file (a truncated one is not), of the class,
    byte order and machine the engine runs (`machine`: the sensor's own),
    its interpreter a loader of the image that fits it, and every library
    it needs found in the image. None: it runs."""
    try:
        data = fs.read_bytes(path, limit=MAX_INIT_BYTES + 1)
    except PathError as exc:
        return InitProblem(f"cannot be read ({exc.message})")
    if len(data) > MAX_INIT_BYTES:
        return InitProblem(f"larger than {MAX_INIT_BYTES} bytes")
    info = parse_elf(data)
    if isinstance(info, ElfProblem):
        return InitProblem(f"not a program the kernel runs ({info.reason})")
    truncated = check_segments(data)
    if truncated is not None:
        return InitProblem(f"not a program the kernel runs ({truncated.reason})")
    ours = info.ident
    if machine is not None and (ours.elf_class, ours.data, ours.machine) != (
        machine.elf_class,
        machine.data,
        machine.machine,
    ):
        return InitProblem(
            f"built for another architecture (ELF machine {ours.machine}, class "
            f"{ours.elf_class.name}; the engine runs machine {machine.machine})"
        )
    if info.interpreter is not None:
        problem = check_init_fits(fs, info, path)
        if problem is not None:
            return problem
    return closure_problem(fs, path, env, workdir)


def closure_problem(
    fs: RootFS, path: str, env: Mapping[str, str], workdir: str = "/"
) -> InitProblem | None:
    """A library the program at `path` needs that the image's loader would
    not find (the loader emulation of slimmer.loader)."""
    link_map = Loader(fs, env=env, cwd=workdir).link_map(path)
    if isinstance(link_map, SkippedInput):
        return InitProblem(link_map.reason)
    if link_map.missing:
        missing = link_map.missing[0]
        return InitProblem(f"needs {missing.name}, which the image's loader does not find")
    return None


def find_wheel_init() -> Path | None:
    """The dumb-init binary the installed wheel put on the host, from the
    distribution's file list; else the scripts directory of this Python.
    Host only: its imports stay out of the sensor's bundle."""
    import importlib.metadata
    import sysconfig

    try:
        distribution = importlib.metadata.distribution(WHEEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    candidates: list[Path] = []
    if distribution is not None:
        candidates += [
            Path(str(distribution.locate_file(f)))
            for f in distribution.files or ()
            if f.name == WHEEL_BINARY and ".dist-info" not in str(f)
        ]
    candidates.append(Path(sysconfig.get_path("scripts")) / WHEEL_BINARY)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def read_init_bytes(path: Path) -> bytes | InitProblem:
    """The wheel binary's bytes (bounded read)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INIT_BYTES + 1)
    except OSError as exc:
        return InitProblem(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_INIT_BYTES:
        return InitProblem(f"{path} is larger than {MAX_INIT_BYTES} bytes")
    return data


def parse_init(data: bytes, origin: str) -> ElfInfo | InitProblem:
    """The loader's facts of the wheel's binary."""
    info = parse_elf(data[: MAX_INIT_BYTES + 1])
    if isinstance(info, ElfProblem):
        return InitProblem(f"{origin} is not a program this loader runs ({info.reason})")
    return info


def read_init(path: Path) -> ElfInfo | InitProblem:
    data = read_init_bytes(path)
    return data if isinstance(data, InitProblem) else parse_init(data, str(path))


def check_init_fits(
    fs: RootFS, init: ElfInfo, name: str = "dumb-init from the wheel"
) -> InitProblem | None:
    """Can the image run this binary? Its interpreter must be in the image,
    a loader of the same class, byte order and machine, and not musl's for
    a glibc binary. (The ELF closure computed in the image then finds its
    libraries, or names what is missing.)"""
    if init.interpreter is None:
        return None  # static: the architecture check is the caller's (image config)
    try:
        resolved = fs.resolve(init.interpreter)
        data = fs.read_bytes(resolved.path, limit=MAX_INIT_BYTES)
    except PathError:
        if _has_musl(fs):
            return InitProblem(
                f"the image's C library is musl; {name} needs glibc"
                f" ({init.interpreter} is not in the image)"
            )
        return InitProblem(f"the image has no {init.interpreter}, the loader {name} needs")
    loader = parse_elf(data)
    if isinstance(loader, ElfProblem):
        return InitProblem(f"{init.interpreter} in the image is not a loader ({loader.reason})")
    if is_musl_interpreter(resolved.path) and not is_musl_interpreter(init.interpreter):
        return InitProblem(f"the image's loader is musl's; {name} needs glibc")
    ours, theirs = init.ident, loader.ident
    if (ours.elf_class, ours.data, ours.machine) != (theirs.elf_class, theirs.data, theirs.machine):
        return InitProblem(
            f"the image is for another architecture (ELF machine {theirs.machine},"
            f" class {theirs.elf_class.name}) than {name}"
            f" (machine {ours.machine}, class {ours.elf_class.name})"
        )
    return None


def _has_musl(fs: RootFS) -> bool:
    try:
        names = fs.listdir(fs.resolve(MUSL_LOADER_DIR).path)
    except (PathError, OSError):
        return False
    return any(name.startswith("ld-musl-") for name in names)


NO_WHEEL_INSTALLED = "the dumb-init package is not installed with slim (pip install dumb-init)"
NO_WHEEL = InitProblem(
    "the image has no tini or dumb-init, and the dumb-init package is not installed"
    " with slim (pip install dumb-init)"
)


def choose_init(
    fs: RootFS,
    env: Mapping[str, str],
    workdir: str = "/",
    wheel: ElfInfo | InitProblem = NO_WHEEL,
    machine: ElfIdent | None = None,
) -> InitChoice | InitProblem:
    """The init for `--init`: the image's own first one that runs there
    (image_init_problem), else the wheel's (`wheel`: its binary's ELF facts,
    or why there is none) when it fits the image. The image's inits passed
    over are named in the choice, or in the refusal."""
    passed_over: list[str] = []
    for path in image_init_candidates(fs, env, workdir):
        problem = image_init_problem(fs, path, env, workdir, machine)
        if problem is None:
            return InitChoice(InitSource.IMAGE, path, tuple(passed_over))
        passed_over.append(f"{path} cannot run: {problem.reason}")
    own = f" ({'; '.join(passed_over)})" if passed_over else ""
    if isinstance(wheel, InitProblem):
        if not passed_over:
            return wheel
        fallback = NO_WHEEL_INSTALLED if wheel is NO_WHEEL else wheel.reason
        return InitProblem(f"--init: {'; '.join(passed_over)}; and {fallback}")
    problem = check_init_fits(fs, wheel)
    if problem is not None:
        return InitProblem(
            f"--init: {problem.reason}{own}; the image's own tini or dumb-init is used when it"
            " has one that runs, so add one to the fat image (or build without --init)"
        )
    return InitChoice(InitSource.WHEEL, WHEEL_INIT_PATH, tuple(passed_over))


def with_init(
    entrypoint: Sequence[str] | None, cmd: Sequence[str] | None, init: InitChoice
) -> tuple[list[str] | None, list[str] | None]:
    """The micro image's ENTRYPOINT and CMD with the init in front: CMD
    stays CMD (so `docker run IMAGE other-command` still works, under the
    init). An entrypoint that already starts with an init is left alone."""
    current = list(entrypoint or [])
    if current and Path(current[0]).name in IMAGE_INIT_NAMES:
        return (current or None), (list(cmd) if cmd is not None else None)
    if not current and not cmd:
        return None, None  # nothing to run: nothing to put an init in front of
    return [*init.argv, *current], (list(cmd) if cmd is not None else None)
