"""The static closure of interpreted code, as the ELF closure is for binaries.

For every source file the app was seen loading (and what it reaches), the
names it imports, requires, includes or runs are read without executing
anything and resolved against the image's own search paths, inside the
image root only:

    common.py     the shared model: what a file asks for (Ref), what was not
                  resolvable statically (Unresolved), how a file's language is
                  told (shebang, extension), bounded reads
    python.py     import / from-import at any depth, importlib.import_module,
                  __import__ (Python's ast; a line scanner for other syntax)
    perl.py       use / no / require / do, use lib, use parent/base; XS auto/
    ruby.py       require / require_relative / load / autoload
    node.py       require / import / export-from with Node's resolution
    php.py        include / require (_once) of literal paths
    shell.py      the commands at command position of a POSIX shell script
    paths.py      each runtime's search paths, read from the image
    walk.py       the transitive walk over all of them (`code_closure`)

A name that cannot be resolved statically (a computed import) is reported,
never guessed.
"""

from slimmer.closure.common import CodeClosure, Found, Language, Unresolved
from slimmer.closure.walk import ClosureRequest, code_closure

__all__ = [
    "ClosureRequest",
    "CodeClosure",
    "Found",
    "Language",
    "Unresolved",
    "code_closure",
]
