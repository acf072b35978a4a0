"""Fixtures of the SPDL loader suite: the protected data spec, the generated data, the loader.

Environment variables scale the suite down for quick checks; unset, it runs as the demo does:

- ``AUTOPILOT_SPDL_ROUNDS`` (12) and ``AUTOPILOT_SPDL_WARMUP`` (2): timed and warm-up rounds
  of ``test_step_time``, and ``AUTOPILOT_SPDL_BATCHES`` (4): batches per round.
- ``AUTOPILOT_SPDL_SAMPLES``: samples per epoch instead of ``dataset.yaml``'s.
- ``AUTOPILOT_SPDL_DATA``: where the generated data is cached (default: a directory under the
  system's temp dir, named after the spec, shared by every session and worktree).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import synthetic
import yaml

ROOT = Path(__file__).parent

REPORT = pytest.StashKey[dict[str, Any]]()


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise pytest.UsageError(f"{name}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise pytest.UsageError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


@pytest.fixture(scope="session")
def spec() -> synthetic.Spec:
    spec = synthetic.Spec.from_yaml(yaml.safe_load((ROOT / "dataset.yaml").read_text()))
    samples = _env_int("AUTOPILOT_SPDL_SAMPLES", spec.num_samples, 1)
    return dataclasses.replace(spec, num_samples=samples)


@pytest.fixture(scope="session")
def rounds() -> tuple[int, int, int]:
    """(timed rounds, warm-up rounds, batches per round) of the step-time benchmark."""
    return (
        _env_int("AUTOPILOT_SPDL_ROUNDS", 12, 1),
        _env_int("AUTOPILOT_SPDL_WARMUP", 2, 0),
        _env_int("AUTOPILOT_SPDL_BATCHES", 4, 1),
    )


@pytest.fixture(scope="session")
def data_dir(spec: synthetic.Spec) -> Path:
    """The generated samples, made once per spec and reused: generation is not what we time."""
    fields = dataclasses.asdict(spec) | {"version": synthetic.VERSION}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    base = os.environ.get("AUTOPILOT_SPDL_DATA") or str(
        Path(tempfile.gettempdir()) / "pytest-autopilot-spdl"
    )
    target = Path(base) / digest
    if (target / "DONE").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
    synthetic.write_dataset(spec, scratch)
    (scratch / "DONE").write_text(json.dumps(fields) + "\n")
    try:
        scratch.rename(target)
    except OSError:  # another session won the race; its copy is identical
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def loader_config() -> Any:
    import loader

    return loader.LoaderConfig.load(ROOT / "loader.yaml")


@pytest.fixture
def open_loader(spec: synthetic.Spec, data_dir: Path, loader_config: Any) -> Iterator[Any]:
    """``open_loader(epochs=..., **build_options)``: a started pipeline, stopped afterwards."""
    import contextlib

    import loader

    storage = loader.Storage(data_dir, spec.latency)
    shape = loader.Shape(spec.height, spec.width, spec.channels, spec.crop)
    with contextlib.ExitStack() as stack:

        def start(epochs: int | None = 1, **build_options: Any) -> Any:
            return stack.enter_context(
                loader.running_loader(
                    loader_config,
                    storage,
                    shape,
                    num_samples=spec.num_samples,
                    batch_size=spec.batch_size,
                    seed=spec.seed,
                    epochs=epochs,
                    **build_options,
                )
            )

        yield start


@pytest.fixture
def suite_report(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Numbers for the end-of-session summary lines."""
    return request.config.stash.setdefault(REPORT, {})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    report = config.stash.get(REPORT, {})
    if "step_time" not in report:
        return
    write = terminalreporter.write_line
    write(
        f"spdl_pipeline: step time {report['step_time'] * 1e3:.1f} ms per batch of "
        f"{report['batch_size']} (median of {report['rounds']} rounds of "
        f"{report['batches_per_round']} batches); lower bound on this machine "
        f"{report['lower_bound'] * 1e3:.1f} ms = {report['cpu_per_batch'] * 1e3:.1f} ms of CPU "
        f"per batch / {report['cores']} cores; ratio {report['ratio']:.2f}"
    )
    if report.get("note"):
        write(f"spdl_pipeline: {report['note']}")
