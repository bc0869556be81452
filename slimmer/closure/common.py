"""What every language's closure shares: the names a source file asks for,
how a file's language is told, bounded reads, and the result."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from slimmer.errors import PathError
from slimmer.rootfs import RootFS, basename, join

# A source file larger than this is not read (a generated bundle, data with
# a source extension): it is reported, and what it names is not followed.
MAX_SOURCE_BYTES = 4 * 1024 * 1024
MAX_TEXT = 120  # characters of a statement kept for the report


class Language(StrEnum):
    PYTHON = "python"
    PERL = "perl"
    RUBY = "ruby"
    NODE = "node"
    PHP = "php"
    SHELL = "shell"


EXTENSIONS: dict[str, Language] = {
    ".py": Language.PYTHON,
    ".pm": Language.PERL,
    ".pl": Language.PERL,
    ".rb": Language.RUBY,
    ".js": Language.NODE,
    ".mjs": Language.NODE,
    ".cjs": Language.NODE,
    ".php": Language.PHP,
    ".phtml": Language.PHP,
    ".sh": Language.SHELL,
    ".bash": Language.SHELL,
}

# The interpreter a #! line names, by its file name.
INTERPRETERS: tuple[tuple[re.Pattern[str], Language], ...] = (
    (re.compile(r"python(\d+(\.\d+)?)?[a-z]?$"), Language.PYTHON),
    (re.compile(r"perl(\d+(\.\d+)*)?$"), Language.PERL),
    (re.compile(r"ruby(\d+(\.\d+)*)?$"), Language.RUBY),
    (re.compile(r"node(js)?$"), Language.NODE),
    (re.compile(r"php(\d+(\.\d+)?)?(-cgi)?$"), Language.PHP),
    (re.compile(r"(sh|bash|dash|ash|ksh|mksh|posh)$"), Language.SHELL),
)


@dataclass(frozen=True)
class Ref:
    """A name a source file asks for, as it wrote it."""

    line: int
    text: str  # the statement, shortened
    name: str | None  # the literal name; None: computed at run time
    kind: str = ""  # what kind of name, for the language's resolver
    eager: bool = True  # runs when the file is loaded (not only when a function is called)
    main: bool = False  # runs only when the file is the program (Python's __main__ guard)
    guard: int | None = None  # Python: in the try body of this group
    fallback: int | None = None  # Python: in a handler of this group that catches ImportError
    extra: tuple[str, ...] = ()  # language-specific (from-import names, use lib dirs)


@dataclass(frozen=True)
class Unresolved:
    """A name kept code asks for that slim did not resolve: computed at run
    time, or not in the image."""

    requester: str
    line: int
    text: str
    why: str


@dataclass(frozen=True)
class Found:
    """A file the closure keeps, and the statement that asked for it."""

    path: str  # as found (links on the way are the caller's to keep)
    requester: str
    line: int
    text: str
    command: bool = False  # a command a shell script runs, not something imported

    @property
    def detail(self) -> str:
        what = "command of" if self.command else "import closure of"
        return f"{what} {self.requester}:{self.line} ({self.text})"


@dataclass(frozen=True)
class CodeClosure:
    found: tuple[Found, ...]  # sorted by path
    programs: tuple[str, ...]  # ELF files and scripts found: the ELF closure's inputs
    unresolved: tuple[Unresolved, ...]
    warnings: tuple[str, ...] = ()


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def shebang_words(head: bytes) -> list[str] | None:
    """The words of a #! line, the interpreter of `env` first; None without one."""
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "surrogateescape").split()
    if words and basename(words[0]) == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return rest
    return words


def interpreter_language(program: str) -> Language | None:
    name = basename(program)
    for pattern, language in INTERPRETERS:
        if pattern.match(name):
            return language
    return None


def language_of(path: str, head: bytes) -> Language | None:
    """A file's language: its #! line first, then its extension."""
    words = shebang_words(head)
    if words:
        return interpreter_language(words[0])
    if head.startswith(b"\x7fELF"):
        return None
    name = basename(path)
    dot = name.rfind(".")
    return EXTENSIONS.get(name[dot:]) if dot > 0 else None


def read_head(fs: RootFS, canonical: str, size: int = 256) -> bytes:
    try:
        return fs.read_bytes(canonical, limit=size)
    except PathError:
        return b""


def read_source(fs: RootFS, canonical: str) -> bytes | None:
    """A source file's bytes; None when it cannot be read or is too large."""
    try:
        data = fs.read_bytes(canonical, limit=MAX_SOURCE_BYTES + 1)
    except PathError:
        return None
    return data if len(data) <= MAX_SOURCE_BYTES else None


def join_clean(directory: str, name: str) -> str:
    """Join a relative name written in source to a dir, without its `.`
    parts (`..` stays: only the root's resolution may undo it)."""
    if name.startswith("/"):
        return name
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return join(directory, "/".join(parts)) if parts else directory


@dataclass(frozen=True)
class Hidden:
    """What a line-oriented scripting language (Perl, Ruby) hides from its
    code: documentation blocks, heredoc bodies, comment lines, the data
    after an end marker."""

    block_start: re.Pattern[str]  # a line that opens a documentation block
    block_end: str  # the start of the line that closes it
    end: re.Pattern[str]  # the line after which nothing is code
    heredoc: re.Pattern[str]  # an opening heredoc; its last group is the terminator


def code_lines(text: str, hidden: Hidden) -> str:
    """The source with what is not code blanked (lines kept, so line
    numbers stay); a heredoc terminator may be indented."""
    out: list[str] = []
    block = False
    heredoc: str | None = None
    for line in text.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            out.append("")
        elif block or hidden.block_start.match(line):
            block = not line.startswith(hidden.block_end)
            out.append("")
        elif hidden.end.match(line):
            break
        elif line.lstrip().startswith("#"):
            out.append("")
        else:
            match = hidden.heredoc.search(line)
            heredoc = match.group(match.lastindex or 0) if match else None
            out.append(line)
    return "\n".join(out)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def is_elf(fs: RootFS, canonical: str) -> bool:
    return read_head(fs, canonical, 4) == b"\x7fELF"
