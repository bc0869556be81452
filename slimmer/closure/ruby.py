"""Ruby: what a file requires, and where ruby finds it.

`require "x"`, `require_relative "x"`, `load "x.rb"` and `autoload :C,
"x"` with a literal name (an interpolated or variable name is computed).
A statement at the start of a line runs when the file is loaded; an
indented one (in a method or block) maybe later. `=begin`/`=end` blocks,
comments, heredoc bodies and what follows __END__ are skipped.

`x` is `x.rb` or `x.so` (or `x` itself when it has one of those
extensions) in every $LOAD_PATH dir that has it, the installed gems' lib
dirs included; `require_relative` is from the requiring file's dir.
"""

from __future__ import annotations

import re

from slimmer.closure.common import Hidden, Ref, code_lines, join_clean, line_of, short
from slimmer.rootfs import RootFS, join, parent

_STATEMENT = re.compile(
    r"(?:^|(?<=[;(]))[ \t]*(?P<verb>require_relative|require|load|autoload)\b"
    r"[ \t(]*(?P<rest>[^\n;]*)",
    re.MULTILINE,
)
_AUTOLOAD_NAME = re.compile(r"^:?\w+\s*,\s*")
_LITERAL = re.compile(r"^(?:\"([^\"]*)\"|'([^']*)')")
HIDDEN = Hidden(
    block_start=re.compile(r"^=begin\b"),
    block_end="=end",
    end=re.compile(r"^__END__\b"),
    heredoc=re.compile(r"<<[~-]?([\"'`]?)([A-Z_][A-Z0-9_]*)\1"),
)
EXTENSIONS = (".rb", ".so")


def parse_ruby(data: bytes) -> list[Ref]:
    text = code_lines(data.decode("utf-8", "replace"), HIDDEN)
    refs = []
    for match in _STATEMENT.finditer(text):
        verb, rest = match.group("verb"), match.group("rest").strip()
        if verb == "autoload":
            named = _AUTOLOAD_NAME.match(rest)
            if named is None:
                continue
            rest = rest[named.end() :]
        start = text.rfind("\n", 0, match.start("verb")) + 1
        eager = start == match.start("verb") and verb != "autoload"
        literal = _LITERAL.match(rest)
        name = None
        if literal is not None:
            name = literal.group(1) if literal.group(1) is not None else literal.group(2)
            if literal.group(1) is not None and "#{" in name:
                name = None
        elif not rest or rest[0] in "=.)":  # a method of that name, not a call with a name
            continue
        kind = "relative" if verb == "require_relative" else "file" if verb == "load" else "feature"
        refs.append(
            Ref(line_of(text, match.start("verb")), short(f"{verb} {rest}"), name, kind, eager)
        )
    return refs


class RubyResolver:
    def __init__(self, fs: RootFS, load_path: tuple[str, ...], workdir: str = "/") -> None:
        self.fs = fs
        self.load_path = load_path
        self.workdir = workdir

    def candidates(self, base: str) -> list[str]:
        if base.endswith(EXTENSIONS):
            return [base]
        return [base + extension for extension in EXTENSIONS]

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        name = ref.name
        if name is None:
            return None
        if ref.kind == "relative":
            bases = [join_clean(parent(requester), name)]
        elif name.startswith("/"):
            bases = [name]
        elif name.startswith(("./", "../")):
            bases = [join_clean(self.workdir, name)]
        else:
            bases = [join(directory, name) for directory in self.load_path]
            if ref.kind == "file":
                bases.append(join(self.workdir, name))
        found = []
        for base in bases:
            paths = [base] if ref.kind == "file" else self.candidates(base)
            found += [path for path in paths if self.fs.exists(path)]
        return found or None
