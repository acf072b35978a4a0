"""A one-commit git repository holding a small suite: what the loop benchmarks run on."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

IGNORE = "__pycache__/\n.pytest_cache/\n.benchmarks/\n"


def commit_suite(root: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (plus ``pytest.ini`` and ``.gitignore``) to ``root`` and commit them."""
    for name, text in {"pytest.ini": "[pytest]\n", ".gitignore": IGNORE, **files}.items():
        (root / name).write_text(text)
    for args in (
        ["init", "--quiet"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "--quiet", "-m", "suite"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
