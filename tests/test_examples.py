"""The example suites run as users run them: in their own git repository, by a real pytest.

Scaled down through the suites' environment variables (few samples and batches), so that
the SPDL suite, its optimization loop and the textmatch experiments take seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gitrepo import GitRepo, init_repo

EXAMPLES = Path(__file__).resolve().parent.parent / "example_suites"


def suite_files(name: str) -> dict[str, str]:
    root = EXAMPLES / name
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and not any(
            part == "__pycache__" or part.startswith(".") for part in path.relative_to(root).parts
        )
    }


def run_pytest(
    repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    environ.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=repo,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------
# spdl_pipeline

pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def spdl_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pytest.importorskip("spdl.pipeline")
    return {
        "AUTOPILOT_SPDL_ROUNDS": "4",
        "AUTOPILOT_SPDL_WARMUP": "1",
        "AUTOPILOT_SPDL_BATCHES": "1",
        "AUTOPILOT_SPDL_SAMPLES": "64",
        "AUTOPILOT_SPDL_DATA": str(tmp_path_factory.mktemp("spdl-data")),
    }


def test_spdl_suite_measures_step_time_bound_and_bottleneck(
    tmp_path: Path, spdl_env: dict[str, str]
) -> None:
    repo = init_repo(tmp_path / "repo", suite_files("spdl_pipeline"))
    status, output = run_pytest(repo.path, "--autopilot-json", "../out.json", env=spdl_env)
    assert status == 0, output
    assert "3 passed" in output
    data = json.loads((tmp_path / "out.json").read_text())
    metrics = data["metrics"]
    assert len(metrics["test_step_time"]["samples"]) == 4
    step = metrics["test_step_time"]["value"]
    bound = metrics["loader.lower_bound"]["value"]
    assert 0 < bound <= step, "the lower bound must not exceed what the loader achieved"
    assert metrics["loader.bound_ratio"]["value"] == pytest.approx(step / bound)
    cpu = sum(metrics[f"loader.cpu.{s}"]["value"] for s in ("fetch", "decode", "transform"))
    assert cpu > 0
    # The default loader.yaml fetches one sample at a time, each paying the 5 ms latency.
    assert metrics["spdl.stage.fetch.task_time"]["value"] >= 0.005
    notes = data["tests"]["tests/test_loader.py::test_step_time"]["notes"]
    assert notes[0].startswith("bottleneck: stage 'fetch' ")
    assert notes[1].startswith(f"lower bound {bound * 1e3:.1f} ms per batch")
    assert f"lower bound on this machine {bound * 1e3:.1f} ms" in output
    assert "spdl_pipeline: bottleneck: stage 'fetch'" in output


def test_spdl_profile_suite_records_step_time_and_each_stage(tmp_path: Path) -> None:
    """The suite of ``benchmarks/vs_profile_pipeline.py``: a 10 ms, a 3 ms and a GIL stage."""
    pytest.importorskip("spdl.pipeline")
    repo = init_repo(tmp_path / "repo", suite_files("spdl_profile"))
    env = {"AUTOPILOT_PROFILE_ROUNDS": "3", "AUTOPILOT_PROFILE_WARMUP": "1"}
    status, output = run_pytest(repo.path, "--autopilot-json", "../out.json", env=env)
    assert status == 0, output
    assert "2 passed" in output
    metrics = json.loads((tmp_path / "out.json").read_text())["metrics"]
    assert len(metrics["test_step_time"]["samples"]) == 3
    # The default pipeline.yaml runs one task per stage: 16 items x 10 ms of load per batch.
    assert metrics["test_step_time"]["value"] >= 0.16
    assert metrics["spdl.stage.load.task_time"]["value"] >= 0.010
    assert metrics["spdl.stage.prep.task_time"]["value"] >= 0.003
    assert metrics["spdl.stage.python.task_time"]["value"] > 0


def test_spdl_suite_fails_a_loader_that_drops_samples(
    tmp_path: Path, spdl_env: dict[str, str]
) -> None:
    files = suite_files("spdl_pipeline")
    signature = "def collate(items: list[tuple[int, npt.NDArray[np.float32]]]) -> Batch:\n"
    assert signature in files["loader.py"]
    files["loader.py"] = files["loader.py"].replace(
        signature, signature + "    items = items[1:]\n"
    )
    repo = init_repo(tmp_path / "repo", files)
    status, output = run_pytest(repo.path, "--benchmark-disable", "-q", env=spdl_env)
    assert status == 1, output
    assert "FAILED tests/test_loader.py::test_every_sample_once_per_epoch" in output
    assert "batch sizes [31, 31]" in output


def test_demo_script_runs_the_search_loop_and_reports_the_result(
    tmp_path: Path, spdl_env: dict[str, str]
) -> None:
    demo = EXAMPLES.parent / "scripts" / "demo.py"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    limits = ["--autopilot-rounds=1", "--autopilot-candidates=2"]
    proc = subprocess.run(
        [sys.executable, str(demo), "--dir", str(tmp_path), "--", *limits],
        env={**environ, **spdl_env},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    data = json.loads((tmp_path / "result.json").read_text())
    candidates = data["rounds"][0]["candidates"]
    # The live line of each candidate shows its objective change and the verdict it got.
    for candidate in candidates:
        live = next(line for line in lines if line.startswith(f"autopilot: {candidate['id']} "))
        assert " test_step_time " in live and " -> " in live, live
        assert f" {candidate['verdict']}" in live, (live, candidate["verdict"])
    note = "demo: the default loader's bottleneck: stage 'fetch'"
    assert any(line.startswith(note) for line in lines), proc.stdout
    before = next(line for line in lines if line.startswith("demo: before:"))
    assert "x the lower bound" in before
    speedup = next(line for line in lines if line.startswith("demo: speed-up "))
    before_s = data["baseline"]["metrics"]["test_step_time"]["value"]
    after_s = data["best"]["metrics"]["test_step_time"]["value"]
    shown = float(speedup.removeprefix("demo: speed-up ").split("x", 1)[0])
    assert shown == pytest.approx(before_s / after_s, abs=0.006), speedup
    result = next(line for line in lines if line.startswith("demo: result: branch "))
    assert "autopilot/fast-loader" in result and str(tmp_path / "repo") in result

    # The search proposed points of the typed space that are valid loaders, changing only
    # loader.yaml, and the loop left the demo repository's own branch alone.
    assert len(candidates) == 2
    for candidate in candidates:
        assert candidate["verdict"] in ("accepted", "rejected"), candidate
        assert candidate["metrics"]["tests.failed"]["value"] == 0
        assert "test_step_time" in candidate["metrics"]
    repo = GitRepo(tmp_path / "repo")
    assert repo.git("status", "--porcelain") == ""
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    if data["best"]["commit"] != data["baseline"]["commit"]:
        changed = repo.git("diff", "--name-only", "main", "autopilot/fast-loader").split()
        assert changed == ["loader.yaml"]


# --------------------------------------------------------------------------------------------
# textmatch


def run_textmatch(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any], GitRepo]:
    repo = init_repo(tmp_path / "repo", suite_files("textmatch"))
    status, output = run_pytest(
        repo.path, "--autopilot", "--autopilot-json=../out.json", "-q", "--tb=no", *args
    )
    return status, output, json.loads((tmp_path / "out.json").read_text()), repo


def value(metrics: dict[str, Any], name: str) -> float:
    return float(metrics[name]["value"])


def test_textmatch_keywords_optimizer_generalises_and_passes_the_gates(tmp_path: Path) -> None:
    status, output, data, repo = run_textmatch(tmp_path)
    assert status == 0, output
    baseline, best = data["baseline"]["metrics"], data["best"]["metrics"]
    assert (
        value(best, "intents.train.pass_rate") >= 0.9 > value(baseline, "intents.train.pass_rate")
    )
    assert value(best, "intents.val.pass_rate") >= 0.85 > value(baseline, "intents.val.pass_rate")
    assert all(gate["passed"] for gate in data["gates"])
    rules = repo.show("autopilot/intents", "rules.yaml")
    assert '"refund"' in rules and '"unsubscribe"' in rules


def test_textmatch_val_gate_catches_a_memorising_optimizer(tmp_path: Path) -> None:
    status, output, data, _ = run_textmatch(tmp_path, "--autopilot-optimizer=memorize")
    assert status == 1, output
    baseline, best = data["baseline"]["metrics"], data["best"]["metrics"]
    assert value(best, "intents.train.pass_rate") == 1.0
    # Whole-message phrases carry over only where a message is a single word ("Hi!").
    val_gain = value(best, "intents.val.pass_rate") - value(baseline, "intents.val.pass_rate")
    assert 0 <= val_gain < 0.1
    gates = {gate["metric"]: gate["passed"] for gate in data["gates"]}
    assert gates == {"intents.train.pass_rate": True, "intents.val.pass_rate": False}
    assert "FAIL intents.val.pass_rate" in output
