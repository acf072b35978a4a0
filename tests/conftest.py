"""Shared test configuration: the suite runs pytest inside pytest with ``pytester``."""

from __future__ import annotations

import sys
from pathlib import Path

# In-process pytester runs unload modules first imported inside them; PyYAML's C loader does
# not survive being imported twice, so import it once for the whole suite.
import yaml  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config: object) -> None:
    """Under xdist (``-n 2``), the sessions the tests start must not think they are workers
    themselves (pytest-benchmark disables itself in any process whose environment names an
    xdist worker), and each worker gets a temporary directory of its own: the loops its tests
    run take the machine-wide timing lock in it, so they don't take turns (or freeze each
    other) with another worker's loops, which would only slow both down."""
    import os
    import tempfile

    worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
    for name in ("PYTEST_XDIST_TESTRUNUID", "PYTEST_XDIST_WORKER_COUNT"):
        os.environ.pop(name, None)
    if worker:
        own = Path(tempfile.gettempdir()) / f"autopilot-tests-{os.getppid()}-{worker}"
        own.mkdir(exist_ok=True)
        os.environ["TMPDIR"] = str(own)
        tempfile.tempdir = None
        WORKER_TMP.append(own)


WORKER_TMP: list[Path] = []


def pytest_unconfigure(config: object) -> None:
    import shutil

    for own in WORKER_TMP:
        shutil.rmtree(own, ignore_errors=True)
