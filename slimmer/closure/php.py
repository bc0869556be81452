"""PHP: the files a script includes, when their paths are literal.

Only the PHP parts of a file (`<?php ... ?>`, `<?= ... ?>`) are read;
comments, strings and heredocs are tokens, not text to search. An
`include`, `include_once`, `require` or `require_once` whose operand is a
string literal, `__DIR__`, `dirname(__FILE__)` or `dirname(__DIR__)`
joined with `.` is resolved; any other operand (a variable, a function
call) is computed. An include inside braces (a function, a branch) is
lazy.

Resolution is PHP's: an absolute path as it is; `./x` and `../x` from the
working directory (the image's WORKDIR, or the script's own dir as a web
server's PHP runs it); any other relative path along include_path ('.'
being both), then the including script's own dir. Every match is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from slimmer.closure.common import Ref, join_clean, short
from slimmer.rootfs import RootFS, parent

INCLUDES = frozenset({"include", "include_once", "require", "require_once"})
DIR_TOKEN = "\0dir\0"
_IDENT = re.compile(r"[A-Za-z_\x80-\uffff][\w\x80-\uffff]*")
_OPEN = re.compile(r"<\?(?:php\b|=)?", re.IGNORECASE)
_HEREDOC = re.compile(r"<<<[ \t]*([\"']?)([A-Za-z_]\w*)\1")


@dataclass(frozen=True)
class Token:
    kind: str  # ident, str, istr (interpolated), var, punct, end (of a PHP part)
    value: str
    line: int


def _string(text: str, index: int, quote: str) -> tuple[str, int, bool]:
    """A quoted string from its opening quote: value, end index, interpolated."""
    out = []
    index += 1
    interpolated = False
    while index < len(text) and text[index] != quote:
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if quote == "'" and following not in "'\\":
                out.append(char)
            else:
                out.append(following)
                index += 2
                continue
        elif quote == '"' and char == "$":
            interpolated = True
        out.append(char)
        index += 1
    return "".join(out), index + 1, interpolated


def tokens(text: str) -> Iterator[Token]:
    index = 0
    line = 1
    while True:
        opening = _OPEN.search(text, index)
        if opening is None:
            return
        line += text.count("\n", index, opening.end())
        index = opening.end()
        while index < len(text):
            char = text[index]
            if char == "\n":
                line += 1
                index += 1
            elif char.isspace():
                index += 1
            elif text.startswith("?>", index):
                yield Token("end", ";", line)
                index += 2
                break
            elif text.startswith(("//", "#"), index) and not text.startswith("#[", index):
                stop = min(
                    (p for p in (text.find("\n", index), text.find("?>", index)) if p >= 0),
                    default=len(text),
                )
                index = stop
            elif text.startswith("/*", index):
                stop = text.find("*/", index + 2)
                stop = len(text) if stop < 0 else stop + 2
                line += text.count("\n", index, stop)
                index = stop
            elif char in "'\"":
                value, stop, interpolated = _string(text, index, char)
                yield Token("istr" if interpolated else "str", value, line)
                line += text.count("\n", index, stop)
                index = stop
            elif (heredoc := _HEREDOC.match(text, index)) is not None:
                stop = re.compile(rf"^[ \t]*{heredoc.group(2)}\b", re.MULTILINE)
                end = stop.search(text, heredoc.end())
                stop_at = len(text) if end is None else end.end()
                yield Token("istr", "", line)
                line += text.count("\n", index, stop_at)
                index = stop_at
            elif char == "$":
                name = _IDENT.match(text, index + 1)
                stop = name.end() if name else index + 1
                yield Token("var", text[index:stop], line)
                index = stop
            elif (ident := _IDENT.match(text, index)) is not None:
                yield Token("ident", ident.group(0), line)
                index = ident.end()
            else:
                yield Token("punct", char, line)
                index += 1


def _operand(parts: list[Token]) -> str | None:
    """The path an include's operand makes, or None when it is computed."""
    out = []
    index = 0
    while index < len(parts):
        token = parts[index]
        words = [t.value for t in parts[index : index + 4]]
        if token.kind == "str":
            out.append(token.value)
        elif token.kind == "ident" and token.value == "__DIR__":
            out.append(DIR_TOKEN)
        elif (
            token.kind == "ident"
            and token.value.lower() == "dirname"
            and words[1:4]
            in (
                ["(", "__FILE__", ")"],
                ["(", "__DIR__", ")"],
            )
        ):
            out.append(DIR_TOKEN if words[2] == "__FILE__" else DIR_TOKEN + "/..")
            index += 3
        elif token.kind == "punct" and token.value in ".()":
            pass
        else:
            return None
        index += 1
    return "".join(out) if out else None


def parse_php(data: bytes) -> list[Ref]:
    refs = []
    stream = list(tokens(data.decode("utf-8", "replace")))
    depth = 0
    for index, token in enumerate(stream):
        if token.kind == "punct" and token.value in "{}":
            depth = max(0, depth + (1 if token.value == "{" else -1))
            continue
        if token.kind != "ident" or token.value.lower() not in INCLUDES:
            continue
        if index and stream[index - 1].kind == "punct" and stream[index - 1].value in ">:":
            continue  # ->require(), ::include(): a method
        parts = []
        for following in stream[index + 1 :]:
            if following.kind == "end" or (following.value == ";" and following.kind == "punct"):
                break
            parts.append(following)
        text = short(token.value + " " + " ".join(p.value for p in parts))
        refs.append(Ref(token.line, text, _operand(parts), "file", depth == 0))
    return refs


class PhpResolver:
    def __init__(self, fs: RootFS, include_path: tuple[str, ...], workdir: str = "/") -> None:
        self.fs = fs
        self.include_path = include_path
        self.workdir = workdir

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        if ref.name is None:
            return None
        here = parent(requester)
        name = ref.name.replace(DIR_TOKEN, here)
        if name.startswith("/"):
            candidates = [name]
        elif name.startswith(("./", "../")):
            candidates = [join_clean(self.workdir, name), join_clean(here, name)]
        else:
            candidates = []
            for directory in self.include_path:
                bases = [self.workdir, here] if directory == "." else [directory]
                candidates += [join_clean(base, name) for base in bases if base.startswith("/")]
            candidates.append(join_clean(here, name))
        found = [path for path in dict.fromkeys(candidates) if self.fs.exists(path)]
        return found or None
