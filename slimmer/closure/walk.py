"""The transitive walk: from the source files the trace saw loaded (and the
other roots the file set gives), every file their statements name, and
every file those name, until nothing new is found.

Two kinds of file are read differently:

- the app's own code (no OS package owns it, and it is not the
  interpreter's standard library): every statement, at any depth, since a
  route that was never probed may run any function;
- the runtime's library (a file an OS package owns, or Python's stdlib):
  a module the app's own code imports directly is read in full, since the
  app may call any of its functions (`shutil.make_archive` imports zipfile
  when called); everything further is read only for what runs when the
  file is loaded (module-level imports, Perl's `use`), since what its
  functions import lazily is there for features the app does not call
  directly (measured: following those too doubles the Python stdlib kept).
  An import under `if __name__ == "__main__"` of a library module never
  runs. A library file the trace saw loaded and the app's code does not
  import directly is not read at all: what it loads when loaded, the trace
  saw.

Unresolved names are reported for the app's own code only (the standard
library's computed imports are many and not the app's).
"""

from __future__ import annotations

import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from slimmer.closure import paths
from slimmer.closure.common import (
    CodeClosure,
    Found,
    Language,
    Ref,
    Unresolved,
    interpreter_language,
    language_of,
    read_head,
    read_source,
    shebang_words,
)
from slimmer.closure.node import NodeResolver, parse_node
from slimmer.closure.perl import PerlResolver, parse_perl
from slimmer.closure.php import PhpResolver, parse_php
from slimmer.closure.python import PythonResolver, parse_python
from slimmer.closure.ruby import RubyResolver, parse_ruby
from slimmer.closure.shell import ShellResolver, parse_shell
from slimmer.errors import PathError
from slimmer.execpath import find_program
from slimmer.rootfs import RootFS

MAX_FILES = 20_000  # files read by one walk; beyond, the walk stops with a warning

PARSERS: dict[Language, Callable[[bytes], list[Ref]]] = {
    Language.PYTHON: parse_python,
    Language.PERL: parse_perl,
    Language.RUBY: parse_ruby,
    Language.NODE: parse_node,
    Language.PHP: parse_php,
    Language.SHELL: parse_shell,
}
# Looked up on the image's PATH when no interpreter of a language is known.
DEFAULT_INTERPRETERS: dict[Language, tuple[str, ...]] = {
    Language.PYTHON: ("python3", "python"),
    Language.PERL: ("perl",),
    Language.RUBY: ("ruby",),
    Language.NODE: ("node", "nodejs"),
    Language.PHP: ("php",),
}


class Resolver(Protocol):
    def resolve(self, ref: Ref, requester: str) -> list[str] | None: ...


@dataclass(frozen=True)
class Root:
    path: str  # canonical
    loaded: bool  # the trace saw it loaded


@dataclass(frozen=True, kw_only=True)
class ClosureRequest:
    roots: tuple[Root, ...]
    seen: tuple[str, ...] = ()  # canonical files the trace saw (Python's package roots)
    programs: tuple[str, ...] = ()  # canonical programs the app ran (its interpreters)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    packaged: Callable[[str], bool] = lambda path: False  # an OS package owns it


@dataclass(frozen=True)
class _Reader:
    """The file being read, and how."""

    path: str
    language: Language
    library: bool
    direct: bool  # the app's own code imports it: a library file read in full


class _Walker:
    def __init__(self, fs: RootFS, request: ClosureRequest) -> None:
        self.fs = fs
        self.request = request
        self.interpreters: dict[Language, list[str]] = {}
        for program in request.programs:
            language = interpreter_language(program)
            if language is not None:
                self.interpreters.setdefault(language, []).append(program)
        self.resolvers: dict[Language, Resolver] = {}
        self.python_paths: paths.PythonPaths | None = None
        # (path, loaded by the trace, imported by the app's own code)
        self.queue: deque[tuple[str, bool, bool]] = deque()
        self.done: dict[str, bool] = {}  # path -> read in full
        self.loaded = {root.path for root in request.roots if root.loaded}
        self.found: dict[str, Found] = {}
        self.programs: set[str] = set()
        self.unresolved: list[Unresolved] = []
        self.warnings: list[str] = []

    # -- interpreters and resolvers

    def interpreter(self, words: list[str]) -> str | None:
        """The canonical interpreter a #! line names (`env NAME` on PATH)."""
        name = words[0]
        program = (
            name
            if name.startswith("/")
            else find_program(self.fs, name, self.request.env.get("PATH"), self.request.workdir)
        )
        if program is None:
            return None
        try:
            return self.fs.resolve(program).path
        except PathError:
            return None

    def note_interpreter(self, language: Language, program: str) -> None:
        known = self.interpreters.setdefault(language, [])
        if program not in known:
            known.append(program)
            self.resolvers.pop(language, None)
            if language is Language.PYTHON:
                self.python_paths = None

    def interpreters_of(self, language: Language) -> list[str]:
        known = self.interpreters.get(language)
        if known:
            return known
        found = []
        for name in DEFAULT_INTERPRETERS.get(language, ()):
            program = self.interpreter([name])
            if program is not None:
                found.append(program)
                break
        return found

    def pythons(self) -> paths.PythonPaths:
        if self.python_paths is None:
            self.python_paths = paths.python_paths(
                self.fs,
                self.interpreters_of(Language.PYTHON),
                self.request.seen,
                self.request.env,
            )
        return self.python_paths

    def resolver(self, language: Language) -> Resolver:
        known = self.resolvers.get(language)
        if known is not None:
            return known
        fs, env, workdir = self.fs, self.request.env, self.request.workdir
        made: Resolver
        if language is Language.PYTHON:
            made = PythonResolver(fs, self.pythons())
        elif language is Language.PERL:
            inc = paths.perl_inc(fs, self.interpreters_of(language), env)
            made = PerlResolver(fs, inc, workdir)
        elif language is Language.RUBY:
            load_path = paths.ruby_load_path(fs, self.interpreters_of(language), env)
            made = RubyResolver(fs, load_path, workdir)
        elif language is Language.NODE:
            made = NodeResolver(fs, paths.node_globals(fs, self.interpreters_of(language), env))
        elif language is Language.PHP:
            made = PhpResolver(fs, paths.php_include_path(fs), workdir)
        else:
            made = ShellResolver(fs, env.get("PATH"), workdir)
        self.resolvers[language] = made
        return made

    def is_library(self, path: str, language: Language) -> bool:
        if self.request.packaged(path):
            return True
        return language is Language.PYTHON and self.pythons().is_stdlib(path)

    # -- the walk

    def run(self) -> CodeClosure:
        for root in self.request.roots:
            self.queue.append((root.path, root.loaded, False))
        while self.queue:
            path, loaded, direct = self.queue.popleft()
            if path in self.done and (self.done[path] or not direct):
                continue
            if len(self.done) >= MAX_FILES:
                self.warnings.append(
                    f"the code closure stopped after {MAX_FILES} files; "
                    "--include what the app needs beyond them"
                )
                break
            self.done[path] = direct
            self.visit(path, loaded, direct)
        return CodeClosure(
            found=tuple(sorted(self.found.values(), key=lambda f: f.path)),
            programs=tuple(sorted(self.programs)),
            unresolved=tuple(sorted(set(self.unresolved), key=lambda u: (u.requester, u.line))),
            warnings=tuple(dict.fromkeys(self.warnings)),
        )

    def visit(self, path: str, loaded: bool, direct: bool) -> None:
        head = read_head(self.fs, path)
        if head.startswith(b"\x7fELF"):
            self.programs.add(path)
            return
        language = language_of(path, head)
        if language is None:
            return
        words = shebang_words(head)
        if words:
            self.programs.add(path)
            interpreter = self.interpreter(words)
            if interpreter is not None:
                self.programs.add(interpreter)
                self.note_interpreter(language, interpreter)
        library = self.is_library(path, language)
        if loaded and library and not direct:
            return
        data = read_source(self.fs, path)
        if data is None:
            if not library:
                self.warnings.append(f"{path} is too large to read for its imports")
            return
        resolver = self.resolver(language)
        if isinstance(resolver, ShellResolver):
            resolver.script_path(path, data)
        reader = _Reader(path, language, library, direct)
        self.follow_all(PARSERS[language](data), reader)

    def follow_all(self, refs: list[Ref], reader: _Reader) -> None:
        guarded: dict[int, bool] = {}
        fallbacks = []
        for ref in refs:
            if reader.library and (ref.main or not (ref.eager or reader.direct)):
                continue
            if ref.fallback is not None:
                fallbacks.append(ref)
                continue
            resolved = self.follow(ref, reader, report=not reader.library)
            if ref.guard is not None:
                guarded[ref.guard] = guarded.get(ref.guard, True) and resolved
        for ref in fallbacks:
            if ref.fallback is not None and not guarded.get(ref.fallback, False):
                self.follow(ref, reader, report=False)

    def follow(self, ref: Ref, reader: _Reader, *, report: bool) -> bool:
        requester, language = reader.path, reader.language
        if ref.name is None:
            if report:
                self.unresolved.append(Unresolved(requester, ref.line, ref.text, "computed"))
            return False
        found = self.resolver(language).resolve(ref, requester)
        if found is None:
            if report:
                why = "not found in the image"
                self.unresolved.append(Unresolved(requester, ref.line, ref.text, why))
            return False
        for path in found:
            try:
                canonical = self.fs.resolve(path).path
                info = self.fs.lstat(canonical)
            except (PathError, OSError):
                continue
            if canonical not in self.loaded and path not in self.found:
                command = ref.kind == "command"
                self.found[path] = Found(path, requester, ref.line, ref.text, command)
            if stat.S_ISREG(info.st_mode):
                self.queue.append((canonical, canonical in self.loaded, not reader.library))
        return True


def code_closure(fs: RootFS, request: ClosureRequest) -> CodeClosure:
    """The files the roots' code imports, requires, includes or runs, and on."""
    return _Walker(fs, request).run()
