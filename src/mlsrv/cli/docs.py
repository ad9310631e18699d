"""Generated documentation: shell completions and roff man pages, both derived from the live CLI.

``scripts/gen_docs.py`` writes them into ``completions/`` and ``man/``; ``tests/cli/test_generated.py``
regenerates them and diffs, so the checked-in files can never drift from the commands.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any, Final

import typer

from mlsrv import __version__

SHELLS: Final = {"bash": "mlsrv.bash", "zsh": "_mlsrv", "fish": "mlsrv.fish"}
EXIT_STATUS: Final = (
    ("0", "success"),
    ("1", "the request failed (the server answered with an error, or a CI gate was violated)"),
    ("2", "usage or configuration error (bad flag, file or input)"),
    ("3", "transport error (cannot connect, or the peer is not a model server)"),
)
#: A fixed date keeps regeneration reproducible; bump it with the version.
DATE: Final = datetime.date(2026, 11, 25)


def completion_scripts(app: typer.Typer) -> dict[str, str]:
    """``{file name: script}`` for bash, zsh and fish: what ``mlsrv --show-completion SHELL`` prints.

    Called through Typer's script builder directly, because ``--show-completion`` itself picks the
    shell by inspecting the parent process, which would make the files depend on who runs the build.
    The scripts call back into ``mlsrv`` for candidates, so they stay right as commands change.
    """
    from typer._completion_shared import get_completion_script

    del app  # the scripts are generic over the app; kept for a uniform generator signature
    return {
        name: get_completion_script(prog_name="mlsrv", complete_var="_MLSRV_COMPLETE", shell=shell) + "\n"
        for shell, name in SHELLS.items()
    }


def man_pages(app: typer.Typer) -> dict[str, str]:
    """``{file name: roff}``: ``mlsrv.1`` plus ``mlsrv-<command>.1`` for every visible command."""
    root = typer.main.get_command(app)
    commands = {name: cmd for name, cmd in getattr(root, "commands", {}).items() if not cmd.hidden}
    pages = {"mlsrv.1": _page("mlsrv", root, sorted(commands))}
    for name, command in sorted(commands.items()):
        pages[f"mlsrv-{name}.1"] = _page(f"mlsrv {name}", command, [])
    return pages


def _escape(text: str) -> str:
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in escaped.splitlines())


def _page(title: str, command: Any, subcommands: Iterable[str]) -> str:
    slug = title.replace(" ", "-")
    summary = (command.help or "").strip().splitlines()[0] if command.help else ""
    lines = [
        f'.TH {slug.upper()} 1 "{DATE.isoformat()}" "mlsrv {__version__}" "mlsrv manual"',
        ".SH NAME",
        f"{_escape(slug)} \\- {_escape(summary)}",
        ".SH SYNOPSIS",
        f".B {_escape(title)}",
        "[\\fIOPTIONS\\fR]" + (" \\fICOMMAND\\fR" if subcommands else ""),
        ".SH DESCRIPTION",
        _escape((command.help or "").strip()),
    ]
    subcommands = list(subcommands)
    if subcommands:
        lines.append(".SH COMMANDS")
        for name in subcommands:
            sub = command.commands[name]
            lines += [".TP", f".B {name}", _escape(((sub.help or "").strip().splitlines() or [""])[0])]
            lines.append(f"See \\fBmlsrv\\-{name}\\fR(1).")
    options = [p for p in command.params if getattr(p, "opts", None) and not getattr(p, "hidden", False)]
    if options:
        lines.append(".SH OPTIONS")
        for param in options:
            names = ", ".join(_escape(opt) for opt in [*param.opts, *param.secondary_opts])
            shown = _escape(param.metavar or param.name.upper())
            metavar = "" if getattr(param, "is_flag", False) else f" \\fI{shown}\\fR"
            default = getattr(param, "show_default", None)
            text = (getattr(param, "help", None) or "") + (f" [default: {default}]" if isinstance(default, str) else "")
            lines += [".TP", f"\\fB{names}\\fR{metavar}", _escape(text)]
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f".B {code}", _escape(meaning)]
    lines += [".SH SEE ALSO", "\\fBtensorflow_model_server\\fR(1), \\fBsaved_model_cli\\fR(1)", ""]
    return "\n".join(lines)
