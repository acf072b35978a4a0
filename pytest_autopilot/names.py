"""The experiment-name rule, in one place for the config file, the flag and the workspace.

An experiment name becomes the branch ``autopilot/<name>``, a ref prefix and the directory
``.autopilot/<name>``: it must be safe in all three. Standard library only, so that the flag's
converter can use it without importing the rest of the package.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""Experiment and optimizer names: safe in a git ref and a directory name."""

EXPERIMENT_MAX_LENGTH = 100
"""Well under the 255 bytes a directory or ref component may have on common file systems."""

EXPERIMENT_EXPECTED = (
    f"a name of at most {EXPERIMENT_MAX_LENGTH} letters, digits, '.', '_' and '-' "
    "(it becomes the git branch autopilot/<name>)"
)
"""What an experiment name must be, as error messages say it after ``expected``."""


def is_experiment_name(name: str) -> bool:
    """Whether ``name`` may name an experiment (git refuses ``..``, a trailing ``.``/``.lock``)."""
    return (
        len(name) <= EXPERIMENT_MAX_LENGTH
        and NAME_RE.fullmatch(name) is not None
        and ".." not in name
        and not name.endswith((".", ".lock"))
    )
