"""examples/export_models.py rewrites the checked-in example models byte for byte (and checks TF1 == TF2)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.tf
@pytest.mark.slow
def test_export_is_deterministic_and_matches_the_checked_in_models(tmp_path: Path) -> None:
    # A fresh process: function names in saved_model.pb depend on what the process traced before.
    subprocess.run(
        [sys.executable, str(REPO / "examples" / "export_models.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    checked_in = REPO / "examples" / "models"
    exported = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert exported == sorted(p.relative_to(checked_in) for p in checked_in.rglob("*") if p.is_file())
    different = [str(p) for p in exported if not filecmp.cmp(tmp_path / p, checked_in / p, shallow=False)]
    assert different == [], "run `python examples/export_models.py` and commit the models"
