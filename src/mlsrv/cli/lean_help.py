"""Import typer's help renderer without the two Rich modules mlsrv's help never uses.

``typer.rich_utils`` (which lays out every ``--help``) imports ``rich.markdown`` (and with it the whole
``markdown_it`` parser) and ``rich.traceback`` (with ``rich.pretty`` and ``rich.syntax``) at its top,
about a fifth of ``mlsrv --help``'s wall time. mlsrv's help is written in Rich markup, never Markdown,
and a traceback is only drawn for a crash. So while ``typer.rich_utils`` is imported, those two names
come from stand-in classes that import the real class on first use (a call or an attribute such as
``Traceback.from_exception``); the stand-in modules are removed again right after, so any later
``import rich.markdown`` gets the real module. Correct either way: if a stand-in is ever used it
forwards to the real class, only later.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

#: (module, class) pairs that ``typer.rich_utils`` imports at its top and mlsrv's help does not use.
UNUSED_AT_HELP_TIME: tuple[tuple[str, str], ...] = (("rich.markdown", "Markdown"), ("rich.traceback", "Traceback"))


class _ForwardOnUse(type):
    """Metaclass of a stand-in: calling it or reading an attribute imports the real class and forwards.

    A class (not a function) because ``typer.rich_utils`` uses the names in annotations such as
    ``Markdown | Text``, evaluated when its functions are defined.
    """

    _load_real: Callable[[], type]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - forwards whatever Rich returns
        return cls._load_real()(*args, **kwargs)

    def __getattr__(cls, attribute: str) -> Any:  # noqa: ANN401 - forwards whatever Rich returns
        return getattr(cls._load_real(), attribute)


def _stand_in(module: str, name: str) -> type:
    def load_real() -> type:
        real: type = getattr(importlib.import_module(module), name)
        return real

    return _ForwardOnUse(name, (), {"_load_real": staticmethod(load_real)})


def import_help_renderer() -> types.ModuleType:
    """``typer.rich_utils``, imported with stand-ins for the classes listed in :data:`UNUSED_AT_HELP_TIME`."""
    if "typer.rich_utils" in sys.modules:
        return sys.modules["typer.rich_utils"]
    stand_ins: dict[str, types.ModuleType] = {}
    for module, name in UNUSED_AT_HELP_TIME:
        if module in sys.modules:
            continue  # already paid for: the real one is used
        placeholder = types.ModuleType(module, f"stand-in for {module} while typer.rich_utils is imported")
        setattr(placeholder, name, _stand_in(module, name))
        stand_ins[module] = placeholder
    sys.modules.update(stand_ins)
    try:
        from typer import rich_utils
    finally:
        for module, placeholder in stand_ins.items():
            if sys.modules.get(module) is placeholder:
                del sys.modules[module]
    return rich_utils
