"""A third-party module that another one imports at load time, loaded only
when it is used.

The docker SDK imports paramiko (and paramiko imports invoke) when it
loads, for ssh:// engines alone: that is about half the time `import
docker` takes, on every command that talks to an engine. While the SDK
loads, `paramiko` is a stand-in module; the SDK keeps a reference to it, and
its first attribute lookup (an ssh:// engine connecting) imports the real
module and answers from it from then on. importlib.util.LazyLoader cannot
do this on Python 3.11: the `import` statement itself reads the module's
`__spec__`, which makes it load.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is read."""

    def __getattr__(self, attribute: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attribute)


@contextmanager
def deferred(name: str) -> Iterator[None]:
    """While the block runs, `import NAME` gives a DeferredModule (when NAME
    is installed and not loaded yet); afterwards `import NAME` is the real
    import again."""
    if name in sys.modules or importlib.util.find_spec(name) is None:
        yield
        return
    stand_in = DeferredModule(name)
    sys.modules[name] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
