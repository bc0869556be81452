"""Python: what a module imports, and where the image's interpreter finds it.

The image's sources are parsed with the sensor's own CPython (`ast`), which
never executes them. Source of another Python version that this parser
refuses (Python 2, syntax newer than the sensor's) is read by a line
scanner instead: import statements are simple enough for it.

Found: `import a.b`, `from a import b` (and `a.b` when it is a submodule),
relative imports, `importlib.import_module("literal")` (with a literal
`package=`), `__import__("literal")`, at any depth. An import inside a
function or under `if __name__ == "__main__"` is lazy; one under `if
TYPE_CHECKING:` never runs and is skipped. An import in an `except
ImportError` handler is a fallback: it runs only when an import of the try
body fails, so it is followed only when one of those does not resolve.

Resolution is FileFinder's: in each search dir, a package (`a/__init__.*`)
or a module (an extension module `a.cpython-3XY-*.so` / `a.abi3.so` /
`a.so`, then `a.py`, then sourceless `a.pyc`); a directory without
`__init__` is a namespace portion, and the search goes on. The first hit in
search order wins. Each module's cached bytecode for the image's
interpreters comes along (`__pycache__/a.cpython-3XY.pyc`).

One computed import of the standard library is known: sysconfig imports
its build's `_sysconfigdata_<abi>_<platform>` module by a name it makes at
run time (zoneinfo's TZPATH comes from it), so the `_sysconfigdata_*`
modules beside sysconfig come with it.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from slimmer.closure.common import Ref, short
from slimmer.errors import PathError
from slimmer.rootfs import RootFS, basename, join, parent

CATCHES_IMPORT_ERROR = frozenset(
    {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
)
IMPORT_FUNCTIONS = frozenset({"import_module", "__import__"})

_IMPORT_LINE = re.compile(r"^([ \t]*)import[ \t]+(.+)$")
_FROM_LINE = re.compile(r"^([ \t]*)from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(.+)$")
_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def parse_python(data: bytes) -> list[Ref]:
    """The imports of a module's source; never raises on bad input."""
    # Decoded here, not by the parser: a coding cookie would make it look up
    # a codec, which the sealed sensor cannot import. Import statements are
    # ASCII; what else is not UTF-8 only needs to survive.
    text = data.decode("utf-8", "replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return scan_python(text)
    visitor = _Imports(text.splitlines())
    try:
        visitor.visit(tree)
    except RecursionError:
        return scan_python(text)
    return visitor.refs


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _is_main_guard(test: ast.expr) -> bool:
    if not isinstance(test, ast.Compare) or len(test.comparators) != 1:
        return False
    sides = [test.left, test.comparators[0]]
    names = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return names and main


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for kind in types:
        name = kind.id if isinstance(kind, ast.Name) else getattr(kind, "attr", None)
        if name in CATCHES_IMPORT_ERROR:
            return True
    return False


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class _Imports(ast.NodeVisitor):
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.refs: list[Ref] = []
        self.lazy = 0  # inside a function, lambda or main guard
        self.main = 0  # inside a main guard
        self.groups = 0
        self.guard: int | None = None
        self.fallback: int | None = None

    def text(self, node: ast.AST) -> str:
        number = getattr(node, "lineno", 1)
        return short(self.lines[number - 1]) if 0 < number <= len(self.lines) else ""

    def add(self, node: ast.AST, name: str | None, kind: str, extra: tuple[str, ...] = ()) -> None:
        self.refs.append(
            Ref(
                line=getattr(node, "lineno", 0),
                text=self.text(node),
                name=name,
                kind=kind,
                eager=self.lazy == 0,
                main=self.main > 0,
                guard=self.guard,
                fallback=self.fallback,
                extra=extra,
            )
        )

    def _lazy_visit(self, node: ast.AST) -> None:
        self.lazy += 1
        self.generic_visit(node)
        self.lazy -= 1

    visit_FunctionDef = _lazy_visit
    visit_AsyncFunctionDef = _lazy_visit
    visit_Lambda = _lazy_visit

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        if _is_main_guard(node.test):
            self.lazy += 1
            self.main += 1
            for child in node.body:
                self.visit(child)
            self.lazy -= 1
            self.main -= 1
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        self.groups += 1
        group = self.groups
        outer = (self.guard, self.fallback)
        self.guard, self.fallback = group, None
        for child in node.body:
            self.visit(child)
        for handler in node.handlers:
            if _catches_import_error(handler):
                self.guard, self.fallback = None, group
            else:
                self.guard, self.fallback = outer
            for child in handler.body:
                self.visit(child)
        self.guard, self.fallback = outer
        for child in [*node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, alias.name, "import")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        names = tuple(alias.name for alias in node.names if alias.name != "*")
        self.add(node, module, "from", names)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name in IMPORT_FUNCTIONS and node.args:
            literal = _literal(node.args[0])
            package = None
            if name == "import_module":
                given = node.args[1] if len(node.args) > 1 else None
                for keyword in node.keywords:
                    if keyword.arg == "package":
                        given = keyword.value
                package = _literal(given)
            if literal is not None and literal.startswith(".") and package is None:
                literal = None  # relative to a package only known at run time
            extra = (package,) if package else ()
            self.add(node, literal, "call", extra)
        self.generic_visit(node)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with their continuations (backslash, open parentheses) joined."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].split("#", 1)[0]
        while (line.rstrip().endswith("\\") or line.count("(") > line.count(")")) and (
            index + 1 < len(lines)
        ):
            index += 1
            line = line.rstrip().rstrip("\\") + " " + lines[index].split("#", 1)[0]
        index += 1
        yield number, line


def scan_python(text: str) -> list[Ref]:
    """Import statements found line by line, for source ast refuses."""
    refs = []
    for number, line in _logical_lines(text):
        statement = line.split(";", 1)[0].rstrip()
        match = _FROM_LINE.match(statement)
        if match:
            names = tuple(
                word.split()[0]
                for word in match.group(3).strip("() ").split(",")
                if word.split() and word.split()[0] != "*"
            )
            refs.append(
                Ref(
                    number,
                    short(statement),
                    match.group(2),
                    "from",
                    not match.group(1),
                    extra=names,
                )
            )
            continue
        match = _IMPORT_LINE.match(statement)
        if match:
            for part in match.group(2).split(","):
                words = part.split()
                if words and _NAME.match(words[0]):
                    refs.append(
                        Ref(number, short(statement), words[0], "import", not match.group(1))
                    )
    return refs


# -- resolution ------------------------------------------------------------------


@dataclass(frozen=True)
class PythonPaths:
    """Where the image's interpreters look for modules."""

    roots: tuple[str, ...]  # sys.path, in order
    stdlib: tuple[str, ...]  # lib/pythonX.Y dirs: the runtime's own library
    tags: tuple[str, ...]  # cache tags: cpython-311

    def is_stdlib(self, path: str) -> bool:
        for directory in self.stdlib:
            if path.startswith(directory + "/"):
                rest = path[len(directory) + 1 :]
                return not rest.startswith(("site-packages/", "dist-packages/"))
        return False


@dataclass
class _Hit:
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)  # package dirs (or namespace portions)
    package: bool = False


class PythonResolver:
    def __init__(self, fs: RootFS, paths: PythonPaths) -> None:
        self.fs = fs
        self.paths = paths
        self._listing: dict[str, frozenset[str]] = {}
        self._suffixes = tuple(f".{tag}-" for tag in paths.tags)

    def names(self, directory: str) -> frozenset[str]:
        known = self._listing.get(directory)
        if known is None:
            try:
                known = frozenset(self.fs.listdir(self.fs.resolve(directory).path))
            except (PathError, OSError):
                known = frozenset()
            self._listing[directory] = known
        return known

    def is_dir(self, path: str) -> bool:
        try:
            return self.fs.stat(path).st_mode & 0o170000 == 0o040000
        except (PathError, OSError):
            return False

    def with_bytecode(self, source: str) -> list[str]:
        directory, name = parent(source), basename(source)
        cache = join(directory, "__pycache__")
        stem = name.removesuffix(".py")
        listed = self.names(cache) if "__pycache__" in self.names(directory) else frozenset()
        found = [source]
        for tag in self.paths.tags:
            compiled = f"{stem}.{tag}.pyc"
            if compiled in listed:
                found.append(join(cache, compiled))
        return found

    def extension(self, names: frozenset[str], part: str) -> str | None:
        for name in sorted(names):
            if not (name.startswith(part + ".") and name.endswith(".so")):
                continue
            middle = name[len(part) : -len(".so")]
            if middle in ("", ".abi3") or any(middle.startswith(s[:-1]) for s in self._suffixes):
                return name
        return None

    def find_part(self, dirs: list[str], part: str) -> _Hit | None:
        portions = []
        for directory in dirs:
            names = self.names(directory)
            if part in names and self.is_dir(join(directory, part)):
                package = join(directory, part)
                inner = self.names(package)
                init = self.module_file(package, inner, "__init__")
                if init is not None:
                    return _Hit(init, [package], True)
                portions.append(package)
                continue
            module = self.module_file(directory, names, part)
            if module is not None:
                return _Hit(module)
        return _Hit([], portions, True) if portions else None

    def module_file(self, directory: str, names: frozenset[str], part: str) -> list[str] | None:
        extension = self.extension(names, part)
        if extension is not None:
            return [join(directory, extension)]
        if f"{part}.py" in names:
            return self.with_bytecode(join(directory, f"{part}.py"))
        if f"{part}.pyc" in names:
            return [join(directory, f"{part}.pyc")]
        return None

    def find(self, dotted: str, dirs: list[str]) -> _Hit | None:
        """All files importing `dotted` loads (each package's __init__ on the way)."""
        total = _Hit()
        for part in dotted.split("."):
            if not part or ((total.files or total.dirs) and not total.package):
                return None
            hit = self.find_part(dirs, part)
            if hit is None:
                return None
            total = _Hit([*total.files, *hit.files], hit.dirs, hit.package)
            dirs = hit.dirs
        return total

    def companions(self, files: list[str]) -> list[str]:
        """What the stdlib loads by computed names along with a module."""
        found = []
        for path in files:
            if basename(path) == "sysconfig.py" and self.paths.is_stdlib(path):
                directory = parent(path)
                for name in sorted(self.names(directory)):
                    if name.startswith("_sysconfigdata_") and name.endswith(".py"):
                        found += self.with_bytecode(join(directory, name))
        return found

    def base_dirs(self, requester: str, level: int) -> list[str] | None:
        directory = parent(requester)
        for _ in range(level - 1):
            if directory == "/":
                return None
            directory = parent(directory)
        return [directory]

    def resolve(self, ref: Ref, requester: str) -> list[str] | None:
        """The files a ref loads; None when its module is not in the image."""
        name = ref.name or ""
        level = len(name) - len(name.lstrip("."))
        module = name[level:]
        dirs: list[str] | None = list(self.paths.roots)
        if ref.kind == "call" and level and ref.extra:
            package = self.find(ref.extra[0], dirs)
            if package is None or not package.dirs:
                return None
            dirs = self.base_dirs(join(package.dirs[0], "__init__.py"), level)
        elif level:
            dirs = self.base_dirs(requester, level)
        if dirs is None:
            return None
        hit = self.find(module, dirs) if module else _Hit([], dirs, True)
        if hit is None:
            return None
        files = list(hit.files) or list(hit.dirs)  # a namespace package: its dirs
        files += self.companions(files)
        if ref.kind == "from" and hit.package:
            for submodule in ref.extra:
                sub = self.find_part(hit.dirs, submodule)
                if sub is not None:
                    files += sub.files
        return files
