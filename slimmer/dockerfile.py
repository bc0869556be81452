"""The micro image's Dockerfile: the fat image's config, written so that
the builder reads back exactly the values the image had, and nothing else.

Every string in the fat image's config is untrusted: a newline in WORKDIR
used to end the instruction and start a `COPY --from=<another image>`.
Here no string from the image is ever written where the builder parses
syntax. The rules are those of dockerd 20.10's classic builder (the
parser it vendors from BuildKit, and its shell-word lexer), checked
against the real engine by tests/integration/test_dockerfile_config.py:

* Lines. The parser reads physical lines of at most 64 KiB, joins a line
  ending in `\\` (plus blanks) with the next, skips continuation lines that
  are blank or start with `#`, trims each logical line's ends (Go's
  unicode.IsSpace), and reads directives (`# escape=`) only before the
  first instruction, which here is always FROM. So image strings never
  start or end a line: each is inside quotes or JSON, and a long logical
  line is folded only between pieces slim made (`"..."` segments of one
  word, JSON tokens with spaces and `#` written as \\u escapes), never after
  a backslash.

* ENV, LABEL, WORKDIR, USER, VOLUME. Their words go through the shell-word
  lexer (quotes, `\\` escapes, `$` expansion; VOLUME's JSON strings too).
  Each value is one double-quoted word with `\\`, `"` and `$` escaped,
  which the lexer turns back into exactly the value, whatever else it
  holds (quotes, `#`, `=`, NUL, CR, Unicode spaces, leading blanks,
  the empty string). Keys that are plain names stay unquoted, for
  readability. A newline cannot be written inside a line at all: such a
  value is passed as a build argument (`ARG SLIM_ARG_n`, used as
  `"${SLIM_ARG_n}"`), which the lexer substitutes after parsing, verbatim.
  LABELs whose key holds `=` or a newline (the parser splits key=value at
  the first `=`, before unquoting) or whose value holds a newline are set
  through the build API's `labels`, which the builder applies without any
  parsing. Those two ways need slim's own `docker build`: a --context-only
  context cannot carry them and is refused (`MicroDockerfile.check_self_contained`).

* CMD, ENTRYPOINT, SHELL, HEALTHCHECK CMD [...]: JSON arrays (ASCII, any
  string). Not expanded.

* HEALTHCHECK CMD-SHELL: the shell form is the raw rest of the line, so
  its text must not hold a newline, start or end with white space, end
  with `\\` (a continuation) or start with a JSON array (the builder reads
  a JSON prefix as the exec form); durations are written in the largest
  exact unit and must be 0 (unset) or at least 1ms, as the builder checks.

* EXPOSE and STOPSIGNAL are checked, not escaped: a port is `N`, `N/tcp`,
  `N/udp` or `N/sctp` with N <= 65535 (written `N/proto` in lower case, as
  the builder stores it; `80` means `80/tcp`), a stop signal is a non-zero
  number or a name the engine knows.

What cannot be carried exactly is refused with a DockerfileError (exit
status 3) naming the field, before any container starts: an ENV entry
without `=` or with an empty or repeated name, a relative WORKDIR, a NUL in
WORKDIR or a VOLUME (the builder creates those paths), an empty VOLUME,
ports and stop signals the builder rejects, HEALTHCHECK forms and
durations the Dockerfile cannot write, a CMD-SHELL text as above, and text
that is not valid Unicode (the engine never reports such: it shows invalid
UTF-8 in a config as U+FFFD).

Differences that are the builder's, not slim's: FROM scratch adds
PATH=<the engine's default> when the image has no PATH (the runtime adds
the same default when the image has none), ENV entries come out in the
builder's order (an existing name is replaced in place), EXPOSE keys are
normalised as above, and an empty ENTRYPOINT or SHELL is stored as none.

Why a Dockerfile at all, and not the image config written by slim and
`docker load`-ed with the rootfs as its layer (every value exact, labels
with newlines too, and a deterministic image id)? Because the context is
also slim's output (--context-only) that any builder (docker, BuildKit,
Podman/Buildah) reads; because `--base IMAGE` then needs the base's layers
(in the tar, or relying on the engine skipping layers it has); because a
loaded layer is applied with whiteout semantics (a file named `.wh.x` in
the app's tree would delete `x` from the base), not ADD's; and because the
engine then no longer checks the config at all. The build API's labels
and build args close the gap for newlines without giving that up.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from slimmer.context import ROOTFS_MEMBER
from slimmer.errors import ExitCode, SlimError, UsageError
from slimmer.trace import Healthcheck, ImageConfig

FOLD_AT = 4000  # bytes: a longer logical line is folded into continuation lines
MAX_PHYSICAL_LINE = 60_000  # the parser refuses lines of 64 KiB and more
SEGMENT_CHARS = 1000  # a long quoted word is written as "..." "..." segments
MAX_ENGINE_PAYLOAD = 64 * 1024  # build args and labels travel in the request's URL
ARG_PREFIX = "SLIM_ARG_"
MIN_DURATION_NS = 1_000_000  # the builder refuses HEALTHCHECK durations below 1ms
MAX_INT64 = 2**63 - 1
MAX_RETRIES = 2**31 - 1
NAME_MAX = 255  # bytes in a file name
MAX_PATH_BYTES = 3072  # PATH_MAX is 4096 with the engine's own prefix in front

# Words the lexer reads back unchanged without quotes (kept for readability):
# no quotes, `\\`, `$`, blanks or `#`, and no leading `-` (a `--flag`).
PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
PLAIN_WORD = re.compile(r"[A-Za-z0-9_./@:+,%][A-Za-z0-9_./@:+,%=-]*")
PORT = re.compile(r"([0-9]+)(?:/(tcp|udp|sctp))?", re.IGNORECASE)
SIGNAL_NUMBER = re.compile(r"[+-]?[0-9]{1,18}")
IMAGE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")

# The names dockerd's signal.ParseSignal knows on Linux (moby pkg/signal),
# after upper-casing and removing one "SIG".
SIGNAL_NAMES = (
    "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV "
    "STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX"
)
ENGINE_SIGNALS = frozenset(
    SIGNAL_NAMES.split()
    + [f"RTMIN+{n}" for n in range(1, 16)]
    + [f"RTMAX-{n}" for n in range(1, 15)]
)

# In a JSON string, characters that must not start a continuation line.
JSON_FOLD_SAFE = {" ": "\\u0020", "#": "\\u0023", "\\\\": "\\u005c"}
JSON_ATOM = re.compile(r"\\u[0-9a-fA-F]{4}|\\.|.", re.DOTALL)


class DockerfileError(SlimError):
    """A value of the image's config that the builder cannot be given exactly."""

    exit_code = ExitCode.ERROR


REFUSED_HINT = (
    "the micro image would not have the fat image's config; fix the value in the "
    "fat image (e.g. a Dockerfile instruction or `docker commit --change`) and build again"
)


def shown(value: str, limit: int = 60) -> str:
    """A value for a one-line message: quoted, escaped, shortened."""
    text = repr(value if len(value) <= limit else value[:limit])
    return text if len(value) <= limit else text + "..."


def refuse(what: str, value: str, why: str) -> DockerfileError:
    return DockerfileError(f"the image's {what} {shown(value)} {why}", REFUSED_HINT)


def go_space(char: str) -> bool:
    """Go's unicode.IsSpace, which the parser trims and splits with."""
    return char in "\t\n\v\f\r \x85\xa0" or unicodedata.category(char) in ("Zs", "Zl", "Zp")


def check_text(what: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise refuse(what, value, "is not valid Unicode text") from None


# -- folding long lines ------------------------------------------------------


def can_fold(before: str, piece: str) -> bool:
    """Whether a continuation may go between two pieces: the line before
    must not end in a backslash (that would be escaped, not a
    continuation), the next must not start blank or with `#` (the parser
    drops such continuation lines)."""
    return not before.endswith("\\") and not go_space(piece[0]) and piece[0] != "#"


def fold(pieces: Sequence[str], what: str) -> str:
    """One logical line from its pieces, folded into physical lines of
    about FOLD_AT bytes where the parser joins them back exactly."""
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for piece in pieces:
        length = len(piece.encode())
        if current and size + length > FOLD_AT and can_fold(current[-1], piece):
            lines.append("".join(current) + "\\")
            current, size = [], 0
        current.append(piece)
        size += length
        if size > MAX_PHYSICAL_LINE:
            raise DockerfileError(
                f"the image's {what} is too long to write in a Dockerfile line",
                REFUSED_HINT,
            )
    lines.append("".join(current))
    return "\n".join(lines)


# -- words and JSON ----------------------------------------------------------


def escaped(value: str) -> str:
    """Inside double quotes the lexer honours exactly \\\\, \\" and \\$."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")


def quoted_pieces(value: str) -> list[str]:
    """A double-quoted word, as segments "..." "..." that the parser keeps
    as one word and a fold may separate."""
    segments = [value[i : i + SEGMENT_CHARS] for i in range(0, len(value), SEGMENT_CHARS)]
    return [f'"{escaped(segment)}"' for segment in segments or [""]]


def json_pieces(items: Sequence[str]) -> list[str]:
    """A JSON array of strings; long ones as tokens a fold may separate."""
    plain = json.dumps(list(items))
    if len(plain) <= FOLD_AT:
        return [plain]
    compact = json.dumps(list(items), separators=(",", ":"))
    return [JSON_FOLD_SAFE.get(atom, atom) for atom in JSON_ATOM.findall(compact)]


@dataclass
class Values:
    """How each image string is written: inline when a line can hold it,
    else as a build argument. Collects the arguments and what needs them."""

    reserved: frozenset[str]
    build_args: dict[str, str] = field(default_factory=dict)
    needs_engine: list[str] = field(default_factory=list)

    def arg(self, value: str, what: str) -> str:
        """The build argument that carries `value` (one per distinct value)."""
        self.needs_engine.append(what)
        known = {given: name for name, given in self.build_args.items()}
        if value in known:
            return known[value]
        number = len(self.build_args)
        while (name := f"{ARG_PREFIX}{number}") in self.reserved or name in self.build_args:
            number += 1
        self.build_args[name] = value
        return name

    def word(self, value: str, what: str) -> list[str]:
        check_text(what, value)
        if "\n" in value:
            return [f'"${{{self.arg(value, what)}}}"']
        return quoted_pieces(value)

    def plain_or_word(self, value: str, what: str, plain: re.Pattern[str]) -> list[str]:
        if plain.fullmatch(value):
            return [value]
        return self.word(value, what)

    def key(self, value: str, what: str) -> list[str]:
        return self.plain_or_word(value, what, PLAIN_NAME)

    def path(self, value: str, what: str) -> list[str]:
        return self.plain_or_word(value, what, PLAIN_WORD)


# -- the instructions ----------------------------------------------------------


def env_line(config: ImageConfig, values: Values) -> list[str] | None:
    """One ENV instruction with every variable, in the image's order."""
    pairs: list[list[str]] = []
    seen: set[str] = set()
    for item in config.env:
        check_text("ENV entry", item)
        name, separator, value = item.partition("=")
        if not separator:
            raise refuse("ENV entry", item, "has no '=' (a Dockerfile always sets a value)")
        if not name:
            raise refuse("ENV entry", item, "has an empty name, which the builder refuses")
        if name in seen:
            raise refuse("ENV name", name, "is set twice; a Dockerfile keeps only one")
        seen.add(name)
        what = f"ENV {shown(name)}"
        pairs.append([*values.key(name, what), "=", *values.word(value, what)])
    return instruction("ENV", pairs)


def label_line(
    labels: Mapping[str, str], values: Values, engine_labels: dict[str, str]
) -> list[str] | None:
    """One LABEL instruction; labels it cannot write go to `engine_labels`."""
    pairs: list[list[str]] = []
    for name in sorted(labels):
        value = labels[name]
        what = f"LABEL {shown(name)}"
        check_text("LABEL key", name)
        check_text(what, value)
        if "=" in name or "\n" in name or "\n" in value:
            engine_labels[name] = value
            values.needs_engine.append(what)
            continue
        pairs.append([*values.key(name, what), "=", *values.word(value, what)])
    return instruction("LABEL", pairs)


def instruction(keyword: str, words: list[list[str]]) -> list[str] | None:
    """KEYWORD word word ...; None without words."""
    if not words:
        return None
    pieces = [keyword]
    for word in words:
        pieces += [" ", *word]
    return pieces


def path_problem(path: str) -> str | None:
    """Why the engine could not create or resolve `path` (it does both for
    WORKDIR and VOLUME, as it does for every container of the fat image)."""
    if "\0" in path:
        return "holds a NUL byte, which no path can"
    if len(path.encode()) > MAX_PATH_BYTES or any(
        len(part.encode()) > NAME_MAX for part in path.split("/")
    ):
        return "is longer than a path or a file name can be"
    return None


def workdir_line(workdir: str, values: Values) -> list[str] | None:
    if not workdir:
        return None
    if not workdir.startswith("/"):
        raise refuse("WORKDIR", workdir, "is not absolute; the engine cannot run it")
    problem = path_problem(workdir)
    if problem:
        raise refuse("WORKDIR", workdir, problem)
    return ["WORKDIR ", *values.path(workdir, "WORKDIR")]


def expose_line(ports: Sequence[str]) -> list[str] | None:
    written = set()
    for spec in ports:
        match = PORT.fullmatch(spec)
        if not match or int(match.group(1)) > 65535:
            raise refuse("EXPOSE port", spec, "is not N, N/tcp, N/udp or N/sctp with N <= 65535")
        written.add(f"{int(match.group(1))}/{(match.group(2) or 'tcp').lower()}")
    if not written:
        return None
    return ["EXPOSE " + " ".join(sorted(written))]


def volume_line(volumes: Sequence[str], values: Values) -> list[str] | None:
    if not volumes:
        return None
    words = []
    for volume in volumes:
        if not volume:
            raise refuse("VOLUME", volume, "is empty, which the builder refuses")
        problem = path_problem(volume)
        if problem:
            raise refuse("VOLUME", volume, problem)
        # VOLUME's JSON strings go through the lexer too
        words.append("".join(values.path(volume, f"VOLUME {shown(volume)}")))
    return ["VOLUME ", *json_pieces(words)]


def stop_signal_line(signal: str | None) -> list[str] | None:
    if not signal:
        return None
    if SIGNAL_NUMBER.fullmatch(signal):
        if int(signal) != 0:
            return [f"STOPSIGNAL {signal}"]
    elif signal.isascii():
        name = signal.upper()
        if name.removeprefix("SIG") in ENGINE_SIGNALS:
            return [f"STOPSIGNAL {signal}"]
    raise refuse("STOPSIGNAL", signal, "is not a signal the engine knows")


def duration(ns: int) -> str:
    """A Go duration the builder parses back to exactly `ns`."""
    for unit, size in (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def shell_form_problem(text: str) -> str | None:
    """Why the raw rest of a HEALTHCHECK line could not be exactly `text`."""
    if not text:
        return "is empty"
    if "\n" in text:
        return "holds a newline, which a HEALTHCHECK line cannot"
    if go_space(text[0]) or go_space(text[-1]):
        return "starts or ends with white space, which the parser trims"
    if text.endswith("\\"):
        return "ends with a backslash, which would continue the line"
    if text.startswith("["):
        try:
            parsed, _ = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return None
        if isinstance(parsed, list):
            return "starts with a JSON array, which the builder reads as the exec form"
    return None


def healthcheck_line(check: Healthcheck | None) -> list[str] | None:
    if check is None:
        return None
    test = check.test
    for part in test:
        check_text("HEALTHCHECK", part)
    timed = any((check.interval, check.timeout, check.start_period, check.retries))
    if not test:
        if timed:
            raise refuse("HEALTHCHECK", "", "has timings but no test")
        return None
    kind, args = test[0], list(test[1:])
    if kind == "NONE":
        if args or timed:
            raise refuse("HEALTHCHECK", " ".join(test), "is NONE with arguments or timings")
        return ["HEALTHCHECK NONE"]
    flags = []
    for flag, ns in (
        ("interval", check.interval),
        ("timeout", check.timeout),
        ("start-period", check.start_period),
    ):
        if ns and not MIN_DURATION_NS <= ns <= MAX_INT64:
            raise refuse(f"HEALTHCHECK --{flag}", f"{ns}ns", "is below 1ms or out of range")
        if ns:
            flags.append(f"--{flag}={duration(ns)} ")
    if check.retries:
        if not 0 < check.retries <= MAX_RETRIES:
            raise refuse("HEALTHCHECK --retries", str(check.retries), "is out of range")
        flags.append(f"--retries={check.retries} ")
    if kind == "CMD" and args:
        return ["HEALTHCHECK ", *flags, "CMD ", *json_pieces(args)]
    if kind == "CMD-SHELL" and len(args) == 1:
        problem = shell_form_problem(args[0])
        if problem:
            raise refuse("HEALTHCHECK CMD-SHELL command", args[0], problem)
        return ["HEALTHCHECK ", *flags, "CMD ", *args[0]]
    raise refuse("HEALTHCHECK test", json.dumps(list(test)), "has no Dockerfile form")


def argv_check(what: str, argv: Sequence[str] | None) -> None:
    for part in argv or ():
        check_text(what, part)


# -- the Dockerfile ---------------------------------------------------------------


@dataclass(frozen=True)
class MicroDockerfile:
    """The Dockerfile and what must go with it to `docker build`: values a
    line cannot hold, as build arguments and as labels for the build API."""

    text: str
    build_args: dict[str, str]
    labels: dict[str, str]
    needs_engine: tuple[str, ...]  # the fields carried by build args or API labels

    def check_self_contained(self) -> None:
        """Refuse a context that `docker build` could not rebuild alone."""
        if self.needs_engine:
            raise DockerfileError(
                f"the image's {self.needs_engine[0]} holds a newline (or a label key a '='), "
                "which a context for `docker build` alone (--context-only) cannot carry",
                "build the micro image with slim (without --context-only): slim passes "
                "such values to the engine as build arguments and labels",
            )


def render_dockerfile(config: ImageConfig, base: str, labels: Mapping[str, str]) -> MicroDockerfile:
    """The micro image's Dockerfile: the fat image's contract on top of one
    ADD of the rootfs. `labels` (slim's own) win over the image's. Raises
    DockerfileError for a value the builder cannot be given exactly."""
    if not IMAGE_REFERENCE.fullmatch(base):
        raise UsageError(f"bad base image name {shown(base)}", "give a name like busybox:latest")
    values = Values(reserved=frozenset(item.partition("=")[0] for item in config.env))
    engine_labels: dict[str, str] = {}
    body: list[list[str] | None] = [
        env_line(config, values),
        label_line({**config.labels, **labels}, values, engine_labels),
        workdir_line(config.workdir, values),
        expose_line(config.exposed_ports),
        volume_line(config.volumes, values),
        stop_signal_line(config.stop_signal),
    ]
    argv_check("SHELL", config.shell)
    argv_check("ENTRYPOINT", config.entrypoint)
    argv_check("CMD", config.cmd)
    if config.shell:
        body.append(["SHELL ", *json_pieces(config.shell)])
    body.append(healthcheck_line(config.healthcheck))
    if config.user:
        body.append(["USER ", *values.path(config.user, "USER")])
    # Always: an image without ENTRYPOINT must not inherit the base's.
    body.append(["ENTRYPOINT ", *json_pieces(config.entrypoint or ())])
    if config.cmd is not None:
        body.append(["CMD ", *json_pieces(config.cmd)])

    head = [[f"FROM {base}"], *([f"ARG {name}"] for name in values.build_args)]
    head.append([f"ADD {ROOTFS_MEMBER} /"])
    lines = [fold(pieces, pieces[0].strip()) for pieces in [*head, *body] if pieces is not None]
    payload = json.dumps(values.build_args) + json.dumps(engine_labels)
    if len(payload) > MAX_ENGINE_PAYLOAD:
        raise DockerfileError(
            f"the image's values with newlines ({', '.join(values.needs_engine[:3])}) "
            f"are too large to pass to the engine ({len(payload)} bytes)",
            REFUSED_HINT,
        )
    return MicroDockerfile(
        text="\n".join(lines) + "\n",
        build_args=dict(values.build_args),
        labels=engine_labels,
        needs_engine=tuple(values.needs_engine),
    )


__all__ = ["DockerfileError", "MicroDockerfile", "render_dockerfile"]
