"""absl's boolean flag spellings for the saved_model_cli-compatible commands (``show``, ``run``).

saved_model_cli parses its flags with absl, which accepts ``--all``, ``--noall``, ``--all=true`` and
``--all=false`` for a boolean. Click has the first two (declared as ``--all/--noall``); the ``=value``
forms are rewritten here before Click parses the command line. Values are read by the same table as
``mlsrv serve``'s TF-style booleans (:func:`mlsrv.flags.parse_value`), so both commands agree on what
``true``/``false`` may be spelled as.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperOption

from mlsrv import flags
from mlsrv.errors import EXIT_USAGE, ConfigError


def normalize_bool_args(params: Sequence[Any], args: Sequence[str]) -> list[str]:
    """Rewrite ``--flag=VALUE`` for the boolean flags in ``params`` to ``--flag`` or its ``--noflag`` form.

    Other arguments pass through untouched (values of options that take one are skipped, so a value that
    happens to look like ``--all=true`` is left alone); an invalid value raises ``ConfigError``.
    """
    spellings: dict[str, tuple[str, str | None]] = {}
    takes_value: set[str] = set()
    for param in params:
        if not isinstance(param, TyperOption):
            continue
        if param.is_bool_flag:
            negative = param.secondary_opts[0] if param.secondary_opts else None
            spellings.update({opt: (opt, negative) for opt in param.opts})
        elif not param.is_flag:
            takes_value.update(param.opts)
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            out += args[index - 1 :]
            break
        name, sep, value = arg.partition("=")
        if sep and name in spellings:
            positive, negative = spellings[name]
            truth = flags.parse_value(flags.Flag(name.lstrip("-"), bool, False, ""), value)
            if truth:
                out.append(positive)
            elif negative is not None:
                out.append(negative)
            continue  # --flag=false without a --noflag form: the default (False) stands
        out.append(arg)
        if arg in takes_value and index < len(args):
            out.append(args[index])
            index += 1
    return out


class AbslBoolCommand(TyperCommand):
    """A Typer command whose boolean flags also take absl's ``--flag=true|false`` (and ``--noflag``) forms."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # ctx: typer's (vendored) click Context
        try:
            args = normalize_bool_args(self.params, args)
        except ConfigError as error:
            from mlsrv.cli.runner import print_error

            print_error("UsageError", error.message)
            raise typer.Exit(EXIT_USAGE) from None
        result: Any = super().parse_args(ctx, args)
        return list(result)
