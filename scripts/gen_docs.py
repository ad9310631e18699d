"""Regenerate completions/ and man/ from the CLI (``make docs``). The golden test fails when they drift."""

from __future__ import annotations

from pathlib import Path

from mlsrv.cli.app import app
from mlsrv.cli.docs import completion_scripts, man_pages

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    for folder, files in (("completions", completion_scripts(app)), ("man", man_pages(app))):
        target = ROOT / folder
        target.mkdir(exist_ok=True)
        for stale in target.iterdir():
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            (target / name).write_text(text)
        print(f"wrote {len(files)} files to {folder}/")


if __name__ == "__main__":
    main()
