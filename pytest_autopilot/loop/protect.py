"""Check what a candidate actually changed, not what it was told to change.

The diff between the candidate's tree and its parent is computed by git (renames, deletions,
type and mode changes included). Every path on either side of a change must be inside the
rootdir, match a parameter glob and no protected glob; a symlink or a submodule anywhere in
the diff is refused outright, since either can make a parameter file stand for something
else. A refused candidate is a ``violation`` and is never evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_autopilot.config import AutopilotConfig, is_protected, matches, protected_globs
from pytest_autopilot.loop.workspace import GITLINK_MODE, SYMLINK_MODE, DiffEntry, Workspace
from pytest_autopilot.results import SessionResult


def violations(
    entries: Sequence[DiffEntry],
    workspace: Workspace,
    config: AutopilotConfig,
    incumbent: SessionResult,
) -> list[str]:
    """Why each offending change is refused; empty when the diff is within the rules.

    :param incumbent: the result of the state the candidate is compared with: its test
        modules and dataset files are protected along with the config's globs.
    """
    parameters = [spec.path for spec in config.parameters]
    protected = protected_globs(config, incumbent)
    problems: list[str] = []
    for entry in entries:
        if SYMLINK_MODE in (entry.old_mode, entry.new_mode):
            problems.append(f"{entry.describe()}: symlinks may not be added, changed or removed")
            continue
        if GITLINK_MODE in (entry.old_mode, entry.new_mode):
            problems.append(f"{entry.describe()}: submodules may not be changed")
            continue
        for path in entry.paths():
            rel = workspace.to_rootdir_path(path)
            if rel is None:
                problems.append(f"{entry.describe()}: {path} is outside the rootdir")
            elif is_protected(rel, protected):
                problems.append(f"{entry.describe()}: {rel} is protected")
            elif not matches(rel, parameters):
                problems.append(f"{entry.describe()}: {rel} matches no parameter glob")
    return problems
