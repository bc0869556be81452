"""Node: what a module requires or imports, and Node's resolution of it.

No JS parser from PyPI is both maintained for current syntax and small
enough for the sensor bundle (esprima's Python port stopped at ES2017;
tree-sitter needs compiled grammars), so a tokenizer reads the source: it
knows comments, strings, template literals (with `${}` nesting) and
regular expression literals, so a `require("x")` inside any of them is
text, not a call. On the tokens:

- `require("x")`, `require.resolve("x")`, `import("x")` (also with a
  template literal without substitutions), `import ... from "x"`,
  `import "x"`, `export ... from "x"`; a `require(...)`/`import(...)` of
  anything else is computed;
- one at brace depth 0 runs when the module is loaded; others are lazy.

Resolution follows Node's documented algorithm: builtins (`fs`,
`node:fs`) are the binary's own; `./x`, `../x` and `/x` as a file (`x`,
`x.js`, `x.json`, `x.node`, `x.mjs`, `x.cjs`) or a directory
(package.json `main`, then `index.*`); a bare name in every
`node_modules` from the requiring file's dir up, then the global folders,
with package.json `exports` (subpaths, `*` patterns, and every target of
the conditions node, require, import, default, module-sync) and
`imports` for `#name`. The package.json files on the way come too, as
does the nearest package.json of each module (Node reads its "type").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from slimmer.closure.common import Ref, join_clean, short
from slimmer.errors import PathError
from slimmer.rootfs import RootFS, basename, join, parent

BUILTINS = frozenset(
    [
        "assert",
        "async_hooks",
        "buffer",
        "child_process",
        "cluster",
        "console",
        "constants",
        "crypto",
        "dgram",
        "diagnostics_channel",
        "dns",
        "domain",
        "events",
        "fs",
        "http",
        "http2",
        "https",
        "inspector",
        "module",
        "net",
        "os",
        "path",
        "perf_hooks",
        "process",
        "punycode",
        "querystring",
        "readline",
        "repl",
        "stream",
        "string_decoder",
        "sys",
        "timers",
        "tls",
        "trace_events",
        "tty",
        "url",
        "util",
        "v8",
        "vm",
        "wasi",
        "worker_threads",
        "zlib",
        "test",
    ]
)
FILE_EXTENSIONS = ("", ".js", ".json", ".node", ".mjs", ".cjs")
INDEX_FILES = ("index.js", "index.json", "index.node")
CONDITIONS = ("node", "require", "import", "default", "module-sync", "node-addons")
MAX_PACKAGE_JSON = 1024 * 1024
# After these a `/` starts a regular expression, not a division.
REGEX_AFTER_WORDS = frozenset(
    [
        "return",
        "typeof",
        "instanceof",
        "in",
        "of",
        "new",
        "delete",
        "void",
        "throw",
        "case",
        "do",
        "else",
        "yield",
        "await",
    ]
)
_IDENT = re.compile(r"[A-Za-z_$\x80-\uffff][\w$\x80-\uffff]*")
_NUMBER = re.compile(r"\d[\w.]*|\.\d[\w]*")


@dataclass(frozen=True)
class Token:
    kind: str  # ident, str, tmpl (a template with substitutions: None value), num, punct, regex
    value: str | None
    line: int
    depth: int  # brace depth where it starts (template substitutions do not count)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.line = 1
        self.depth = 0
        self.templates: list[int] = []  # brace depths where a ${ of a template opened
        self.last: Token | None = None

    def emit(self, kind: str, value: str | None) -> Token:
        token = Token(kind, value, self.line, self.depth - len(self.templates))
        self.last = token
        return token

    def regex_allowed(self) -> bool:
        last = self.last
        if last is None:
            return True
        if last.kind in ("num", "str", "tmpl", "regex"):
            return False
        if last.kind == "ident":
            return last.value in REGEX_AFTER_WORDS
        return last.value not in (")", "]", "}")

    def skip_to(self, stop: int) -> None:
        self.line += self.text.count("\n", self.index, stop)
        self.index = stop

    def quoted(self, quote: str) -> str:
        text, index = self.text, self.index + 1
        out = []
        while index < len(text) and text[index] != quote and text[index] != "\n":
            if text[index] == "\\" and index + 1 < len(text):
                out.append(text[index + 1])
                index += 2
                continue
            out.append(text[index])
            index += 1
        self.skip_to(min(index + 1, len(text)))
        return "".join(out)

    def template(self) -> Token:
        """From a backtick, or from the `}` closing a substitution, to the end
        of the template or the next `${`."""
        text, index = self.text, self.index + 1
        out = []
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text):
                out.append(text[index + 1])
                index += 2
                continue
            if char == "`":
                self.skip_to(index + 1)
                return self.emit("tmpl", "".join(out))
            if text.startswith("${", index):
                self.skip_to(index + 2)
                self.templates.append(self.depth)
                self.depth += 1
                return self.emit("tmpl", None)
            out.append(char)
            index += 1
        self.skip_to(len(text))
        return self.emit("tmpl", None)

    def regex(self) -> Token:
        text, index = self.text, self.index + 1
        in_class = False
        while index < len(text) and text[index] != "\n":
            char = text[index]
            if char == "\\":
                index += 2
                continue
            if char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "/" and not in_class:
                break
            index += 1
        flags = _IDENT.match(text, index + 1)
        self.skip_to(flags.end() if flags else min(index + 1, len(text)))
        return self.emit("regex", None)

    def tokens(self) -> Iterator[Token]:
        text = self.text
        if text.startswith("#!"):
            self.skip_to(max(text.find("\n"), 0))
        while self.index < len(text):
            char = text[self.index]
            if char == "\n":
                self.line += 1
                self.index += 1
            elif char.isspace():
                self.index += 1
            elif text.startswith("//", self.index):
                stop = text.find("\n", self.index)
                self.index = len(text) if stop < 0 else stop
            elif text.startswith("/*", self.index):
                stop = text.find("*/", self.index + 2)
                self.skip_to(len(text) if stop < 0 else stop + 2)
            elif char in "'\"":
                yield self.emit("str", self.quoted(char))
            elif char == "`":
                yield self.template()
            elif char == "}" and self.templates and self.templates[-1] == self.depth - 1:
                self.templates.pop()
                self.depth -= 1
                yield self.template()
            elif char == "/" and self.regex_allowed():
                yield self.regex()
            elif (number := _NUMBER.match(text, self.index)) is not None:
                self.index = number.end()
                yield self.emit("num", number.group(0))
            elif (ident := _IDENT.match(text, self.index)) is not None:
                self.index = ident.end()
                yield self.emit("ident", ident.group(0))
            else:
                if char == "{":
                    self.depth += 1
                elif char == "}":
                    self.depth = max(0, self.depth - 1)
                self.index += 1
                yield self.emit("punct", char)


def _literal(token: Token | None) -> str | None:
    if token is not None and token.kind in ("str", "tmpl") and token.value is not None:
        return token.value
    return None


def parse_node(data: bytes) -> list[Ref]:
    text = data.decode("utf-8", "replace")
    stream = list(_Lexer(text).tokens())
    lines = text.splitlines()
    refs: list[Ref] = []

    def at(index: int) -> Token | None:
        return stream[index] if 0 <= index < len(stream) else None

    def add(token: Token, name: str | None, eager: bool) -> None:
        line = lines[token.line - 1] if token.line <= len(lines) else ""
        refs.append(Ref(token.line, short(line), name, "module", eager))

    for index, token in enumerate(stream):
        if token.kind != "ident" or token.value not in ("require", "import", "export"):
            continue
        before = at(index - 1)
        if before is not None and before.value == ".":
            continue
        following = at(index + 1)
        if token.value == "require":
            if (
                following is not None
                and following.value == "."
                and _word(at(index + 2)) == ("resolve")
            ):
                index += 2
                following = at(index + 1)
            if following is None or following.value != "(":
                continue
            closing = at(index + 3)
            literal = _literal(at(index + 2))
            computed = literal is None or closing is None or closing.value != ")"
            add(token, None if computed else literal, token.depth == 0)
        elif token.value == "import" and following is not None and following.value == "(":
            closing = at(index + 3)
            literal = _literal(at(index + 2))
            computed = literal is None or closing is None or closing.value not in (")", ",")
            add(token, None if computed else literal, False)
        elif token.value == "import" and _literal(following) is not None:
            add(token, _literal(following), True)
        else:
            name = _from_clause(stream, index)
            if name is not None:
                add(token, name, True)
    return refs


def _word(token: Token | None) -> str | None:
    return token.value if token is not None and token.kind == "ident" else None


def _from_clause(stream: list[Token], start: int) -> str | None:
    """The module of `import ... from "x"` / `export ... from "x"`."""
    for index in range(start + 1, min(len(stream), start + 400)):
        token = stream[index]
        if token.kind in ("str", "tmpl"):
            previous = stream[index - 1]
            return token.value if previous.kind == "ident" and previous.value == "from" else None
        if token.value in (";", "(", "=") or token.kind == "regex":
            return None
    return None


# -- resolution ------------------------------------------------------------------


def is_builtin(name: str) -> bool:
    return name.startswith("node:") or name.split("/", 1)[0] in BUILTINS


def split_package(name: str) -> tuple[str, str]:
    """`@scope/pkg/sub/x` -> (`@scope/pkg`, `./sub/x`); `pkg` -> (`pkg`, `.`)."""
    parts = name.split("/")
    count = 2 if name.startswith("@") else 1
    package = "/".join(parts[:count])
    rest = "/".join(parts[count:])
    return package, f"./{rest}" if rest else "."


def _targets(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value[:64]:
            yield from _targets(item)
    elif isinstance(value, dict):
        for key, target in value.items():
            if key in CONDITIONS:
                yield from _targets(target)


def map_subpath(exports: Any, subpath: str) -> list[str] | None:
    """Targets of `exports` (or `imports`) for a subpath; None when it is not
    exported."""
    if not isinstance(exports, dict) or not any(str(k).startswith((".", "#")) for k in exports):
        return list(_targets(exports)) if subpath == "." else None
    if subpath in exports:
        return list(_targets(exports[subpath]))
    best = None
    for key in exports:
        if "*" not in key:
            continue
        prefix, _, suffix = key.partition("*")
        matches = subpath.startswith(prefix) and subpath.endswith(suffix)
        longer = best is None or len(prefix) > len(best[0].partition("*")[0])
        if matches and len(subpath) >= len(key) - 1 and longer:
            best = (key, subpath[len(prefix) : len(subpath) - len(suffix)])
    if best is None:
        return None
    key, middle = best
    return [t.replace("*", middle) for t in _targets(exports[key])]


class NodeResolver:
    def __init__(self, fs: RootFS, global_dirs: tuple[str, ...]) -> None:
        self.fs = fs
        self.global_dirs = global_dirs
        self._packages: dict[str, dict[str, Any] | None] = {}

    def is_file(self, path: str) -> bool:
        try:
            return self.fs.stat(path).st_mode & 0o170000 == 0o100000
        except (PathError, OSError):
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return self.fs.stat(path).st_mode & 0o170000 == 0o040000
        except (PathError, OSError):
            return False

    def package_json(self, directory: str) -> dict[str, Any] | None:
        if directory not in self._packages:
            data: dict[str, Any] | None = None
            path = join(directory, "package.json")
            if self.is_file(path):
                try:
                    parsed = json.loads(self.fs.read_bytes(path, limit=MAX_PACKAGE_JSON))
                    data = parsed if isinstance(parsed, dict) else {}
                except (PathError, ValueError, RecursionError):
                    data = {}
            self._packages[directory] = data
        return self._packages[directory]

    def as_file(self, path: str) -> list[str]:
        for extension in FILE_EXTENSIONS:
            if self.is_file(path + extension):
                return [path + extension]
        return []

    def as_index(self, path: str) -> list[str]:
        for name in INDEX_FILES:
            if self.is_file(join(path, name)):
                return [join(path, name)]
        return []

    def as_directory(self, path: str) -> list[str]:
        package = self.package_json(path)
        found = [join(path, "package.json")] if package is not None else []
        main = package.get("main") if package else None
        if isinstance(main, str) and main:
            target = join_clean(path, main)
            hit = self.as_file(target) or self.as_index(target)
            if hit:
                return found + hit
        return found + self.as_index(path)

    def load(self, path: str) -> list[str]:
        return self.as_file(path) or self.as_directory(path)

    def scope(self, path: str) -> list[str]:
        """The nearest package.json above a module (Node reads its "type")."""
        directory = parent(path)
        while directory != "/" and basename(directory) != "node_modules":
            if self.package_json(directory) is not None:
                return [join(directory, "package.json")]
            directory = parent(directory)
        return []

    def module_dirs(self, start: str) -> list[str]:
        dirs = []
        directory = start
        while True:
            if basename(directory) != "node_modules":
                dirs.append(join(directory, "node_modules"))
            if directory == "/":
                break
            directory = parent(directory)
        return [*dirs, *self.global_dirs]

    def in_package(self, package_dir: str, subpath: str) -> list[str] | None:
        package = self.package_json(package_dir)
        manifest = [join(package_dir, "package.json")] if package is not None else []
        if package is not None and "exports" in package:
            targets = map_subpath(package["exports"], subpath)
            if targets is None:
                return None
            found = [join_clean(package_dir, t) for t in targets if t.startswith("./")]
            found = [p for p in found if self.is_file(p)]
            return manifest + found if found else None
        hit = self.load(join_clean(package_dir, subpath))
        return manifest + hit if hit else None

    def imports(self, requester: str, name: str) -> list[str] | None:
        directory = parent(requester)
        while directory != "/":
            package = self.package_json(directory)
            if package is not None:
                targets = map_subpath(package.get("imports"), name)
                if not targets:
                    return None
                found = []
                for target in targets:
                    if target.startswith("./"):
                        found += self.as_file(join_clean(directory, target))
                    else:
                        found += self.bare(directory, target) or []
                return found or None
            directory = parent(directory)
        return None

    def bare(self, start: str, name: str) -> list[str] | None:
        package, subpath = split_package(name)
        for directory in self.module_dirs(start):
            package_dir = join(directory, package)
            if self.is_dir(package_dir):
                found = self.in_package(package_dir, subpath)
                if found:
                    return found
            elif subpath == "." and (hit := self.as_file(package_dir)):
                return hit
        return None

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        name = ref.name
        if name is None:
            return None
        if is_builtin(name):
            return []
        if name.startswith("#"):
            found = self.imports(requester, name)
        elif name.startswith(("/", "./", "../")) or name in (".", ".."):
            found = self.load(join_clean(parent(requester), name)) or None
        else:
            found = self.bare(parent(requester), name)
        if not found:
            return None
        scopes = [
            s for path in found if path.endswith((".js", ".mjs", ".cjs")) for s in self.scope(path)
        ]
        return list(dict.fromkeys([*found, *scopes]))
