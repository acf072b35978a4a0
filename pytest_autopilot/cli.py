"""``pytest-autopilot``: look at past experiments without running the suite.

``list``, ``show ID``, ``diff ID``, ``apply [ID]`` and ``clean``, from the record under
``.autopilot/`` and the experiment's git refs. Nothing here changes the user's files, except
``apply`` (a merge onto the current branch, only on a clean tree, as ``--autopilot-apply``) and
``clean`` (the experiment's own worktrees, refs and record, after confirmation).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pytest_autopilot.experiments import Candidate, Experiment, experiment_dirs, read_experiment


class CommandError(Exception):
    """A message for the user; the command exits 2 with it."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        repo = _repository(Path.cwd())
        return int(args.run(repo, args, sys.stdout))
    except CommandError as exc:
        print(f"pytest-autopilot: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-autopilot", description="Inspect pytest-autopilot experiments."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    experiment = argparse.ArgumentParser(add_help=False)
    experiment.add_argument(
        "-e", "--experiment", help="the experiment (default: the only one, or the one with ID)"
    )
    for name, run, help_text in (
        ("list", cmd_list, "experiments, their status and best candidate"),
        ("show", cmd_show, "a candidate's metrics, verdict, reason and parent"),
        ("diff", cmd_diff, "a candidate's change from its parent"),
        ("apply", cmd_apply, "merge a candidate (default: the best) into the current branch"),
        ("clean", cmd_clean, "remove an experiment's worktrees, refs and record"),
    ):
        command = sub.add_parser(name, help=help_text, parents=[experiment])
        command.set_defaults(run=run)
        if name in ("show", "diff"):
            command.add_argument("id", metavar="ID", help="candidate id, e.g. r2c1 (r0: baseline)")
        elif name == "apply":
            command.add_argument("id", metavar="ID", nargs="?", help="default: the best")
        elif name == "clean":
            command.add_argument("name", metavar="EXPERIMENT", nargs="?")
            command.add_argument("-y", "--yes", action="store_true", help="do not ask")
    return parser


def _git(repo: Path, *args: str, check: bool = True) -> str:
    from pytest_autopilot.loop.workspace import GitError, git

    try:
        return git(args, repo, check=check)
    except GitError as exc:
        raise CommandError(str(exc)) from None


def _repository(here: Path) -> Path:
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise CommandError(f"{here} is not inside a git repository")
    return Path(proc.stdout.strip())


def _experiments(repo: Path) -> list[Experiment]:
    return [read_experiment(d) for d in experiment_dirs(repo / ".autopilot")]


def _names(experiments: Sequence[Experiment]) -> str:
    return ", ".join(e.name for e in experiments) or "(none)"


def _choose(repo: Path, name: str | None, cid: str | None = None) -> Experiment:
    """The experiment named, else the one holding ``cid``, else the only one."""
    experiments = _experiments(repo)
    if name is not None:
        found = next((e for e in experiments if e.name == name), None)
        if found is None:
            raise CommandError(
                f"no experiment {name!r} under {repo / '.autopilot'}; "
                f"experiments: {_names(experiments)}"
            )
        return found
    if not experiments:
        raise CommandError(
            f"no experiment recorded under {repo / '.autopilot'} (run pytest --autopilot first)"
        )
    if cid is not None:
        holding = [e for e in experiments if e.find(cid) is not None]
        if len(holding) == 1:
            return holding[0]
        if not holding:
            raise CommandError(f"no candidate {cid!r} in {_ids_of_all(experiments)}")
        experiments = holding
    if len(experiments) > 1:
        raise CommandError(
            f"several experiments: {_names(experiments)}; choose one with --experiment NAME"
        )
    return experiments[0]


def _ids_of_all(experiments: Sequence[Experiment]) -> str:
    return "; ".join(f"experiment {e.name}: {', '.join(e.ids()) or '(none)'}" for e in experiments)


def _candidate(experiment: Experiment, cid: str) -> Candidate:
    cand = experiment.find(cid)
    if cand is None:
        raise CommandError(
            f"experiment {experiment.name} has no candidate {cid!r}; "
            f"candidates: {', '.join(experiment.ids()) or '(none)'}"
        )
    return cand


def _value(cand: Candidate | None, metric: str | None) -> str:
    from pytest_autopilot.report import fmt

    if cand is None or metric is None:
        return ""
    if cand.paired_value is not None:
        return f" {metric} {fmt(cand.paired_value)} (paired, on the baseline's scale)"
    entry = cand.metrics.get(metric)
    value = entry.get("value") if isinstance(entry, dict) else None
    return f" {metric} {fmt(value)}" if isinstance(value, (int, float)) else ""


def cmd_list(repo: Path, args: argparse.Namespace, out: TextIO) -> int:
    experiments = _experiments(repo)
    if not experiments:
        out.write(f"no experiment recorded under {repo / '.autopilot'}\n")
        return 0
    objective = _objective(repo)
    for e in experiments:
        best = e.find(e.best) if e.best else None
        best_text = "-" if best is None else f"{best.id}{_value(best, objective)}"
        if best is not None and best.id == "r0":
            best_text += " (nothing beat the baseline)"
        out.write(
            f"{e.name}: {e.status}; {len(e.candidates)} candidates; best {best_text}; "
            f"branch autopilot/{e.name}\n"
        )
    return 0


def cmd_show(repo: Path, args: argparse.Namespace, out: TextIO) -> int:
    from pytest_autopilot.report import fmt

    experiment = _choose(repo, args.experiment, args.id)
    cand = _candidate(experiment, args.id)
    parent = experiment.id_of_commit(cand.parent) or "-"
    lines = [
        f"{cand.id} of experiment {experiment.name}"
        + (f", round {cand.round}" if cand.round is not None else ""),
        f"verdict: {cand.verdict}" + (" (best)" if cand.id == experiment.best else ""),
        f"reason: {cand.reason or '-'}",
        f"commit: {cand.commit or '-'}",
        f"parent: {parent} ({cand.parent or '-'})",
    ]
    if cand.rationale:
        lines.append(f"rationale: {cand.rationale}")
    if cand.paired_value is not None:
        objective = _objective(repo) or "objective"
        lines.append(
            f"paired value: {objective} {fmt(cand.paired_value)} (its incumbent's times the "
            "ratio measured beside it, on the baseline's scale; the metrics below are its own "
            "session's)"
        )
    lines.append("metrics:")
    for name, entry in sorted(cand.metrics.items()):
        value = entry.get("value") if isinstance(entry, dict) else None
        shown = fmt(value) if isinstance(value, (int, float)) else "?"
        lines.append(f"  {name} = {shown}")
    if cand.gates:
        lines.append("gates:")
        for gate in cand.gates:
            verdict = "PASS" if gate.get("passed") else "FAIL"
            lines.append(f"  {verdict} {gate.get('metric')}: {gate.get('reason', '')}")
    out.write("\n".join(lines) + "\n")
    return 0


def cmd_diff(repo: Path, args: argparse.Namespace, out: TextIO) -> int:
    experiment = _choose(repo, args.experiment, args.id)
    cand = _candidate(experiment, args.id)
    if cand.commit is None or cand.parent is None:
        what = "is the baseline" if cand.id == "r0" else f"has no commit ({cand.verdict})"
        raise CommandError(f"{cand.id} of experiment {experiment.name} {what}: nothing to diff")
    out.write(_git(repo, "diff", "--no-color", "--no-ext-diff", "-M", cand.parent, cand.commit))
    out.write("\n")
    return 0


def cmd_apply(repo: Path, args: argparse.Namespace, out: TextIO) -> int:
    from pytest_autopilot.loop.workspace import Workspace

    experiment = _choose(repo, args.experiment, args.id)
    cid = args.id or experiment.best
    if cid is None or cid == "r0":
        out.write(
            f"experiment {experiment.name}: nothing to apply, no candidate beat the baseline\n"
        )
        return 0
    cand = _candidate(experiment, cid)
    if cand.commit is None:
        raise CommandError(f"{cid} of experiment {experiment.name} has no commit ({cand.verdict})")
    workspace = Workspace(repo, repo, experiment.name)
    head = workspace.head_commit()
    if head is not None and _is_ancestor(repo, cand.commit, head):
        out.write(f"{cid} ({cand.commit[:10]}) is already part of HEAD\n")
        return 0
    if not workspace.is_clean():
        raise CommandError(
            "the working tree has uncommitted changes; commit or stash them first "
            "(apply merges only onto a clean tree)"
        )
    ok, how = workspace.merge(cand.commit)
    if not ok:
        raise CommandError(f"merging {cid} failed, nothing changed: {how}")
    out.write(f"merged {cid} ({cand.commit[:10]}) of experiment {experiment.name} ({how})\n")
    return 0


def cmd_clean(repo: Path, args: argparse.Namespace, out: TextIO) -> int:
    from pytest_autopilot.loop.workspace import Workspace

    experiment = _choose(repo, args.name or args.experiment)
    if experiment.status == "running":
        raise CommandError(f"experiment {experiment.name} is running; stop it first")
    workspace = Workspace(repo, repo, experiment.name)
    refs = sorted(workspace.experiment_refs())
    worktrees = workspace.worktrees_dir
    what = (
        f"experiment {experiment.name}: {len(refs)} refs, "
        f"worktrees under {worktrees}, record {experiment.directory}"
    )
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"would remove {what}; confirm with --yes (no terminal to ask on)")
        answer = input(f"remove {what}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.write("nothing removed\n")
            return 1
    if worktrees.exists():
        for path in sorted(worktrees.iterdir()):
            workspace.remove_worktree(path)
        shutil.rmtree(worktrees, ignore_errors=True)
    workspace.git("worktree", "prune", check=False)
    workspace.delete_experiment_refs()
    shutil.rmtree(experiment.directory, ignore_errors=True)
    out.write(f"removed {what}\n")
    return 0


def _is_ancestor(repo: Path, commit: str, head: str) -> bool:
    proc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", commit, head], cwd=repo, capture_output=True
    )
    return proc.returncode == 0


def _objective(repo: Path) -> str | None:
    """The objective metric of the project's autopilot.yaml, to show values in ``list``."""
    try:
        import yaml

        data = yaml.safe_load((repo / "autopilot.yaml").read_text())
    except Exception:  # a missing or broken config only hides a value
        return None
    objective = data.get("objective") if isinstance(data, dict) else None
    metric = objective.get("metric") if isinstance(objective, dict) else None
    return metric if isinstance(metric, str) else None


if __name__ == "__main__":
    raise SystemExit(main())
