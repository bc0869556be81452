"""Perl: what a script or module loads, and where perl finds it.

Read without perl: POD, heredoc bodies and what follows __END__/__DATA__
are skipped, then statements are matched where a statement can start.

- `use Module` / `no Module` (at any depth: perl runs them when it
  compiles the file), `use parent`/`use base` with their class lists
  (not with -norequire); `use lib LIST` adds its literal dirs to @INC for
  everything loaded afterwards (`$FindBin::Bin`, `$FindBin::RealBin` and
  `dirname(__FILE__)` are the script's own dir);
- `require Module`, `require "file.pl"`, `do "file.pl"`: eager unless
  inside the body of a sub (braces are counted, so a require in a BEGIN
  block or a top-level `if` runs when the file is compiled); `require
  $name` is computed.

A module is `Foo/Bar.pm` in every @INC dir that has it (@INC's order is
not recorded in the binary, so every copy is kept), with the XS parts in
any @INC dir's `auto/Foo/Bar/` (the .so, autosplit .al files).
"""

from __future__ import annotations

import re

from slimmer.closure.common import Hidden, Ref, code_lines, join_clean, line_of, short
from slimmer.errors import PathError
from slimmer.rootfs import RootFS, join, parent

HIDDEN = Hidden(
    block_start=re.compile(r"^=[a-zA-Z]"),  # POD, to =cut
    block_end="=cut",
    end=re.compile(r"^__(END|DATA)__\b"),
    heredoc=re.compile(r"<<~?([\"']?)([A-Za-z_]\w*)\1"),
)
_STATEMENT = re.compile(
    r"(?:^|(?<=[;{}]))[ \t]*(?P<verb>use|no|require|do)\b[ \t]*(?P<rest>[^;]*)", re.MULTILINE
)
_MODULE = re.compile(r"^([A-Za-z_]\w*(?:::\w+)*)(?![\w:])")
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_QW = re.compile(r"qw\s*(?:\(([^)]*)\)|\[([^\]]*)\]|\{([^}]*)\}|/([^/]*)/|<([^>]*)>)")
_SCRIPT_DIR = re.compile(
    r"\$FindBin::(?:Real)?Bin\b|(?:File::Basename::)?dirname\s*\(\s*__FILE__\s*\)"
)
SCRIPT_DIR_TOKEN = "\0script-dir\0"


_SUB_HEAD = re.compile(r"\bsub\b(?:\s+[\w:']+)?\s*(?:\([^)]*\))?\s*(?::\s*\w+\s*)*$")


def sub_bodies(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of the bodies of subs, named or not. Braces
    are counted as they come (balanced ones in strings do no harm)."""
    bodies = []
    stack: list[tuple[int, bool]] = []
    statement_start = 0
    for index, char in enumerate(text):
        if char == "{":
            head = text[statement_start:index]
            stack.append((index, _SUB_HEAD.search(head) is not None))
            statement_start = index + 1
        elif char == "}":
            if stack:
                start, is_sub = stack.pop()
                if is_sub:
                    bodies.append((start, index))
            statement_start = index + 1
        elif char == ";":
            statement_start = index + 1
    bodies += [(start, len(text)) for start, is_sub in stack if is_sub]
    return bodies


def _words(rest: str) -> list[str]:
    words: list[str] = []
    for match in _QW.finditer(rest):
        body = next(group for group in match.groups() if group is not None)
        words += body.split()
    for match in _QUOTED.finditer(_QW.sub("", rest)):
        words.append(match.group(1) if match.group(1) is not None else match.group(2))
    return words


def parse_perl(data: bytes) -> list[Ref]:
    text = code_lines(data.decode("utf-8", "replace"), HIDDEN)
    bodies = sub_bodies(text)
    refs: list[Ref] = []
    for match in _STATEMENT.finditer(text):
        verb, rest = match.group("verb"), match.group("rest").strip()
        line = line_of(text, match.start("verb"))
        statement = short(f"{verb} {rest}")
        offset = match.start("verb")
        in_sub = any(start < offset < end for start, end in bodies)
        eager = verb in ("use", "no") or not in_sub
        module = _MODULE.match(rest)
        if verb in ("use", "no"):
            if module is None or re.fullmatch(r"v?\d[\d._]*", module.group(1)):
                continue
            name = module.group(1)
            refs.append(Ref(line, statement, name, "module", True))
            args = rest[module.end() :]
            if name in ("parent", "base") and "-norequire" not in args:
                refs += [Ref(line, statement, w, "module", True) for w in _words(args)]
            elif name == "lib":
                dirs = tuple(_SCRIPT_DIR.sub(SCRIPT_DIR_TOKEN, w) for w in _words(args))
                refs.append(Ref(line, statement, "lib", "lib", True, extra=dirs))
            continue
        quoted = _QUOTED.match(rest)
        if quoted is not None:
            path = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
            computed = quoted.group(1) is not None and ("$" in path or "@" in path)
            refs.append(Ref(line, statement, None if computed else path, "file", eager))
        elif verb == "require" and module is not None:
            refs.append(Ref(line, statement, module.group(1), "module", eager))
        elif verb == "require":
            refs.append(Ref(line, statement, None, "module", eager))
    return refs


class PerlResolver:
    def __init__(self, fs: RootFS, inc: tuple[str, ...], workdir: str = "/") -> None:
        self.fs = fs
        self.inc = list(inc)
        self.workdir = workdir

    def _files_in(self, directory: str) -> list[str]:
        try:
            canonical = self.fs.resolve(directory).path
            names = self.fs.listdir(canonical)
        except (PathError, OSError):
            return []
        return [join(directory, n) for n in names if self.fs.exists(join(directory, n))]

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        if ref.kind == "lib":
            for directory in reversed(ref.extra):
                directory = directory.replace(SCRIPT_DIR_TOKEN, parent(requester))
                if not directory.startswith("/"):
                    directory = join(self.workdir, directory)
                if directory not in self.inc:
                    self.inc.insert(0, directory)
            return self.module("lib")
        if ref.name is None:
            return None
        if ref.kind == "file":
            return self.file(ref.name, requester)
        return self.module(ref.name)

    def module(self, name: str) -> list[str] | None:
        relative = name.replace("::", "/")
        found = [join(d, relative + ".pm") for d in self.inc]
        found = [path for path in found if self.fs.exists(path)]
        if not found:
            return None
        for directory in self.inc:
            found += self._files_in(join(directory, f"auto/{relative}"))
        return found

    def file(self, name: str, requester: str) -> list[str] | None:
        if name.startswith("/"):
            candidates = [name]
        elif name.startswith(("./", "../")):
            candidates = [join_clean(self.workdir, name), join_clean(parent(requester), name)]
        else:
            candidates = [join(d, name) for d in self.inc]
        found = [path for path in candidates if self.fs.exists(path)]
        return found or None
