"""Shared test configuration: the suite runs pytest inside pytest with ``pytester``."""

from __future__ import annotations

import sys
from pathlib import Path

# In-process pytester runs unload modules first imported inside them; PyYAML's C loader does
# not survive being imported twice, so import it once for the whole suite.
import yaml  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))
