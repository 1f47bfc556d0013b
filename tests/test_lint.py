"""The tree stays ruff-clean (lint and format), as configured in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATHS = ["edgekd", "tests", "benchmarks", "examples"]


def test_ruff_check_and_format_are_clean():
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *PATHS], cwd=REPO, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *PATHS], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout[-3000:]
