"""POSIX shell scripts: the commands they run, found by their position.

A small lexer splits the script into words and operators the way sh does
(quotes, backslashes, `$(...)`, backticks, `${...}`, `$((...))`, comments,
here-documents, here-strings), and a parser walks the token stream keeping
track of command position: the first word of a simple command that is not
an assignment or a redirection, after `;`, `&`, `|`, `&&`, `||`, `(`,
newlines and the reserved words that start a list (`if then else elif do
while until ! {`). `case` patterns, `for ... in` word lists, `[[ ... ]]`,
`(( ... ))`, function names and shell builtins are not commands.
Wrappers (`env`, `exec`, `command`, `nohup`, `nice`, `timeout`, `xargs`,
`sudo`, `stdbuf`, `setsid`, `time`) run the word after their options too;
`.` and `source` read a script. The commands of `$(...)` and backticks are
found the same way. A command word with an expansion (`$cmd`, `"$@"`) is
computed. A command inside a function body is lazy.

A command is looked up the way the shell does: a name with a slash as a
path (from the working dir, or the script's dir), any other through PATH:
the image's ENV PATH (or the default one), with the dirs the script itself
puts in PATH by a literal assignment searched first.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from slimmer.closure.common import Ref, short
from slimmer.execpath import DEFAULT_PATH, find_program
from slimmer.rootfs import RootFS, join, parent

BUILTINS = frozenset(
    [
        ".",
        ":",
        "[",
        "alias",
        "bg",
        "bind",
        "break",
        "builtin",
        "caller",
        "cd",
        "command",
        "compgen",
        "complete",
        "compopt",
        "continue",
        "declare",
        "dirs",
        "disown",
        "echo",
        "enable",
        "eval",
        "exec",
        "exit",
        "export",
        "false",
        "fc",
        "fg",
        "getopts",
        "hash",
        "help",
        "history",
        "jobs",
        "kill",
        "let",
        "local",
        "logout",
        "mapfile",
        "popd",
        "printf",
        "pushd",
        "pwd",
        "read",
        "readarray",
        "readonly",
        "return",
        "set",
        "shift",
        "shopt",
        "source",
        "suspend",
        "test",
        "times",
        "trap",
        "true",
        "type",
        "typeset",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "wait",
    ]
)
WRAPPERS = frozenset(
    [
        "env",
        "exec",
        "command",
        "nohup",
        "nice",
        "timeout",
        "xargs",
        "sudo",
        "stdbuf",
        "setsid",
        "time",
        "chrt",
        "ionice",
    ]
)
STARTS_LIST = frozenset(["if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"])
ENDS_COMMAND = frozenset(["fi", "done", "esac", "}"])
CONTROL_OPS = frozenset([";", "&", "|", "&&", "||", "|&", "(", ")", "\n", ";;", ";&", ";;&"])
REDIRECTIONS = ("<<<", "<<-", "<<", ">>", "&>>", "&>", ">&", "<&", "<>", ">|", "<", ">")
OPERATORS = ("&&", "||", ";;&", ";;", ";&", "|&", *REDIRECTIONS, ";", "&", "|", "(", ")")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")


@dataclass
class Word:
    text: str  # with quotes and backslashes removed
    literal: bool  # nothing in it is expanded at run time
    quoted: bool  # some of it was quoted (a quoted word is never a reserved word)
    line: int
    assignment: bool = False  # NAME=value (the name unquoted)


@dataclass(frozen=True)
class Op:
    text: str
    line: int


Token = Word | Op


class _Lexer:
    def __init__(self, text: str, line: int = 1) -> None:
        self.text = text
        self.index = 0
        self.line = line
        self.subs: list[tuple[str, int]] = []  # bodies of $(...) and `...`, with their line
        self.heredocs: list[tuple[str, bool]] = []

    def matching(self, start: int, opening: str, closing: str) -> int:
        """The index after the `closing` that ends what opened before `start`."""
        depth, index, text = 1, start, self.text
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 2
                continue
            if char == "'" and opening == "(":
                stop = text.find("'", index + 1)
                index = len(text) if stop < 0 else stop + 1
                continue
            if char == '"' and opening != '"':
                index = self.matching(index + 1, '"', '"')
                continue
            if char == closing and (opening != closing or depth == 1):
                depth -= 1
                if depth == 0:
                    return index + 1
            elif char == opening and opening != closing:
                depth += 1
            index += 1
        return len(text)

    def skip_heredocs(self) -> None:
        lines = self.text[self.index :].split("\n")
        consumed = 0
        for delimiter, strip_tabs in self.heredocs:
            while consumed < len(lines):
                line = lines[consumed]
                consumed += 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
        self.heredocs = []
        skipped = "\n".join(lines[:consumed])
        self.index += len(skipped) + (1 if consumed < len(lines) else 0)
        self.line += consumed

    def word(self) -> Word:
        text, start_line = self.text, self.line
        assignment = _ASSIGNMENT.match(text, self.index) is not None
        out: list[str] = []
        literal, quoted = True, False
        while self.index < len(text):
            char = text[self.index]
            if char.isspace() or any(text.startswith(op, self.index) for op in OPERATORS):
                break
            if char == "\\":
                if text.startswith("\\\n", self.index):
                    self.line += 1
                else:
                    out.append(text[self.index + 1 : self.index + 2])
                self.index += 2
            elif char == "'":
                stop = text.find("'", self.index + 1)
                stop = len(text) if stop < 0 else stop
                out.append(text[self.index + 1 : stop])
                self.line += text.count("\n", self.index, stop)
                self.index = stop + 1
                quoted = True
            elif char == '"':
                stop = self.matching(self.index + 1, '"', '"')
                body = text[self.index + 1 : stop - 1]
                if "$" in body or "`" in body:
                    literal = False
                    self.find_subs(body, self.line)
                out.append(re.sub(r"\\([$`\"\\\n])", r"\1", body))
                self.line += body.count("\n")
                self.index = stop
                quoted = True
            elif char == "`":
                stop = self.matching(self.index + 1, "`", "`")
                self.subs.append((text[self.index + 1 : stop - 1], self.line))
                self.line += text.count("\n", self.index, stop)
                self.index = stop
                literal = False
            elif char == "$":
                literal = False
                self.dollar()
            else:
                out.append(char)
                self.index += 1
        return Word("".join(out), literal, quoted, start_line, assignment)

    def dollar(self) -> None:
        text, index = self.text, self.index
        if text.startswith("$((", index):
            stop = self.matching(index + 3, "(", ")")
            stop = self.matching(stop, "(", ")") if stop < len(text) else stop
        elif text.startswith("$(", index):
            stop = self.matching(index + 2, "(", ")")
            self.subs.append((text[index + 2 : stop - 1], self.line))
        elif text.startswith("${", index):
            stop = self.matching(index + 2, "{", "}")
        else:
            name = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*|[0-9@*#?$!-])?").match(text, index)
            stop = name.end() if name else index + 1
        self.line += text.count("\n", index, stop)
        self.index = stop

    def find_subs(self, body: str, line: int) -> None:
        inner = _Lexer(body, line)
        for _ in inner.tokens():
            pass
        self.subs += inner.subs

    def tokens(self) -> Iterator[Token]:
        text = self.text
        while self.index < len(text):
            char = text[self.index]
            if char == "\n":
                yield Op("\n", self.line)
                self.index += 1
                self.line += 1
                if self.heredocs:
                    self.skip_heredocs()
            elif char.isspace():
                self.index += 1
            elif char == "#":
                stop = text.find("\n", self.index)
                self.index = len(text) if stop < 0 else stop
            elif (
                op := next((o for o in OPERATORS if text.startswith(o, self.index)), None)
            ) is not None:
                self.index += len(op)
                yield Op(op, self.line)
                if op in ("<<", "<<-"):
                    while self.index < len(text) and text[self.index] in " \t":
                        self.index += 1
                    delimiter = self.word()
                    self.heredocs.append((delimiter.text, op == "<<-"))
            else:
                word = self.word()
                following = text[self.index : self.index + 1]
                if word.text.isdigit() and word.literal and following in ("<", ">"):
                    continue  # an IO number: part of the redirection
                yield word


@dataclass
class _State:
    command: bool = True  # at command position
    wrapper: str | None = None  # the wrapper whose operand comes next
    skip_until: str | None = None  # a word or op that ends a stretch of non-commands
    case_pattern: bool = False
    function_depth: int = 0
    brace_depth: int = 0
    function_braces: tuple[int, ...] = ()


def parse_shell(data: bytes) -> list[Ref]:
    text = data.decode("utf-8", "replace")
    return _parse(text, 1, text.splitlines())


def _parse(text: str, line: int, lines: list[str], lazy: bool = False) -> list[Ref]:
    lexer = _Lexer(text, line)
    stream = list(lexer.tokens())
    refs: list[Ref] = []
    state = _State()
    functions: set[str] = set()
    index = 0

    def statement(number: int) -> str:
        return short(lines[number - 1]) if 0 < number <= len(lines) else ""

    while index < len(stream):
        token = stream[index]
        index += 1
        if state.skip_until is not None:
            if (
                isinstance(token, Word) and token.text == state.skip_until and not token.quoted
            ) or (isinstance(token, Op) and token.text == state.skip_until):
                state.skip_until = None
                state.command = True
            continue
        if state.case_pattern:
            if isinstance(token, Op) and token.text == ")":
                state.case_pattern = False
                state.command = True
            elif isinstance(token, Word) and token.text == "esac" and not token.quoted:
                state.case_pattern = False
                state.command = False
            continue
        if isinstance(token, Op):
            if token.text in ("<<", "<<-"):
                continue  # the lexer took the delimiter
            if token.text in REDIRECTIONS:
                if index < len(stream) and isinstance(stream[index], Word):
                    index += 1
                continue
            if token.text in (";;", ";&", ";;&"):
                state.case_pattern = True
                continue
            if (
                token.text == "("
                and index < len(stream)
                and isinstance(stream[index], Op)
                and (stream[index].text == "(")
            ):
                state.skip_until = "\n"  # (( arithmetic ))
                continue
            if token.text in CONTROL_OPS:
                state.command = True
                state.wrapper = None
            continue
        if not state.command:
            continue
        word = token
        reserved = None if word.quoted or not word.literal else word.text
        if state.wrapper is None and word.assignment:
            continue
        if state.wrapper is None and reserved in ("{",):
            state.brace_depth += 1
            continue
        if state.wrapper is None and reserved == "}":
            state.brace_depth = max(0, state.brace_depth - 1)
            if state.function_braces and state.function_braces[-1] == state.brace_depth:
                state.function_braces = state.function_braces[:-1]
            state.command = False
            continue
        if state.wrapper is None and reserved in STARTS_LIST:
            continue
        if state.wrapper is None and reserved in ENDS_COMMAND:
            state.command = False
            continue
        if state.wrapper is None and reserved == "case":
            index = _skip_case_subject(stream, index)
            state.case_pattern = True
            continue
        if state.wrapper is None and reserved in ("for", "select"):
            state.skip_until = "do"
            continue
        if state.wrapper is None and reserved == "[[":
            state.skip_until = "]]"
            continue
        if state.wrapper is None and reserved == "function":
            if index < len(stream) and isinstance(stream[index], Word):
                functions.add(stream[index].text)
                index += 1
            state.function_braces = (*state.function_braces, state.brace_depth)
            continue
        if (
            index + 1 < len(stream)
            and isinstance(stream[index], Op)
            and stream[index].text == "("
            and isinstance(stream[index + 1], Op)
            and stream[index + 1].text == ")"
        ):
            functions.add(word.text)
            state.function_braces = (*state.function_braces, state.brace_depth)
            index += 2
            continue
        if (
            state.wrapper is not None
            and word.literal
            and _wrapper_argument(state.wrapper, word.text)
        ):
            continue
        eager = not lazy and not state.function_braces
        if word.literal and word.text in functions:
            state.command = False
            state.wrapper = None
            continue
        if word.literal and word.text in (".", "source"):
            target = stream[index] if index < len(stream) else None
            if isinstance(target, Word):
                name = target.text if target.literal else None
                refs.append(Ref(target.line, statement(target.line), name, "source", eager))
                index += 1
            state.command = False
            continue
        state.wrapper = None
        if word.literal and word.text in BUILTINS and word.text not in ("exec", "command"):
            state.command = False
            continue
        if word.literal and word.text == "command":
            following = stream[index] if index < len(stream) else None
            if isinstance(following, Word) and following.text.startswith("-"):
                state.command = False  # command -v / -V: a lookup, not a run
                continue
        if word.text not in ("exec", "command"):
            name = word.text if word.literal else None
            refs.append(Ref(word.line, statement(word.line), name, "command", eager))
        if word.literal and word.text in WRAPPERS:
            state.wrapper = word.text
            continue
        state.command = False
    for body, number in lexer.subs:
        refs += _parse(body, number, lines, lazy)
    return refs


def _skip_case_subject(stream: list[Token], index: int) -> int:
    """Past `WORD in` (and newlines) after `case`."""
    while index < len(stream):
        token = stream[index]
        index += 1
        if isinstance(token, Word) and token.text == "in" and not token.quoted:
            break
    while index < len(stream) and isinstance(stream[index], Op) and stream[index].text == "\n":
        index += 1
    if index < len(stream) and isinstance(stream[index], Op) and stream[index].text == "(":
        index += 1
    return index


def _wrapper_argument(wrapper: str, text: str) -> bool:
    """Whether a word after a wrapper is one of its options (not the command)."""
    if text.startswith("-"):
        return True
    if wrapper == "env" and _ASSIGNMENT.match(text):
        return True
    if wrapper in ("timeout", "nice", "chrt", "ionice", "xargs"):
        return bool(re.fullmatch(r"[0-9.]+[smhd]?|\{\}", text))
    return False


def path_assignments(data: bytes) -> list[str]:
    """Dirs a script puts in PATH by literal assignments (PATH=/opt/x/bin:$PATH)."""
    dirs: list[str] = []
    text = data.decode("utf-8", "replace")
    for match in re.finditer(r"(?:^|[\s;])(?:export\s+)?PATH=([\"']?)([^\s\"';]*)\1", text):
        dirs += [part for part in match.group(2).split(":") if part.startswith("/")]
    return list(dict.fromkeys(dirs))


class ShellResolver:
    def __init__(self, fs: RootFS, path: str | None, workdir: str = "/") -> None:
        self.fs = fs
        self.path = DEFAULT_PATH if path is None else path
        self.workdir = workdir
        self._extra: dict[str, str] = {}

    def script_path(self, requester: str, data: bytes) -> None:
        dirs = path_assignments(data)
        if dirs:
            self._extra[requester] = ":".join(dirs)

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        name = ref.name
        if name is None:
            return None
        search = ":".join(p for p in (self._extra.get(requester, ""), self.path) if p)
        if ref.kind == "source" and "/" in name:
            candidates = [join(self.workdir, name), join(parent(requester), name)]
            found = [c for c in candidates if self.fs.exists(c)]
            return found[:1] or None
        if "/" in name and not name.startswith("/"):
            for base in (self.workdir, parent(requester)):
                program = find_program(self.fs, join(base, name), None, base)
                if program is not None:
                    return [program]
            return None
        if ref.kind == "source":
            for directory in search.split(":"):
                candidate = join(directory or self.workdir, name)
                if candidate.startswith("/") and self.fs.exists(candidate):
                    return [candidate]
            candidate = join(parent(requester), name)
            return [candidate] if self.fs.exists(candidate) else None
        program = find_program(self.fs, name, search, self.workdir)
        return [program] if program is not None else None
