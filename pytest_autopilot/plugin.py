"""pytest hooks only: options, configuration and wiring.

Installed and not asked for, the plugin only records in memory: no file, no output, no change
of exit status, and no import of ``yaml``, ``anthropic`` or ``spdl``. The flags switch on the
gate, the output files and the optimization loop; the loop itself lives in
:mod:`pytest_autopilot.loop` and is imported only for ``--autopilot``.

Every pytest run imports this module, :mod:`pytest_autopilot.options` (the flags) and
:mod:`pytest_autopilot.metrics`, nothing more of the package: datasets, config, gates and
reports are imported by the code paths that use them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_autopilot import metrics
from pytest_autopilot.options import (
    Flags,
    add_options,
    junit_xml,
    selection,
    showing_help,
    shown,
)

if TYPE_CHECKING:
    from pytest_autopilot.against import AgainstRun
    from pytest_autopilot.config import AutopilotConfig, DatasetSettings
    from pytest_autopilot.datasets import DatasetCatalog
    from pytest_autopilot.gates import Judgement
    from pytest_autopilot.proposals import GateStatus
    from pytest_autopilot.results import SessionResult

MARKER_HELP = (
    "dataset(path): one test item per case of a YAML or JSON Lines file (relative to the "
    "rootdir); the test takes the case mapping as its `case` argument. See pytest-autopilot."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_autopilot import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


plugin_key = pytest.StashKey["AutopilotPlugin"]()

COMPLETE_SESSION = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
"""Gates and the loop need a session that ran to its end (failing tests are fine: gates then
fail, and the loop's round 0 may be what the optimizer has to fix)."""


class AutopilotPlugin:
    """The session state of pytest-autopilot, kept in ``config.stash[plugin_key]``."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.flags = Flags(config)
        workerinput = getattr(config, "workerinput", None)
        self.worker = workerinput is not None
        workers = int(workerinput.get("workercount", 0)) if workerinput is not None else None
        self.recorder = metrics.SessionRecorder(config.rootpath, workers)
        self._datasets: DatasetCatalog | None = None
        self._autopilot_config: AutopilotConfig | None = None
        self._result: SessionResult | None = None
        self.baseline: SessionResult | None = None
        self.against: AgainstRun | None = None
        """``--autopilot-against``: REF's session, running alongside this one."""
        self.statuses: list[GateStatus] = []
        self.judgement: Judgement | None = None
        self.comparison: list[dict[str, Any]] = []
        self.comparison_title = ""
        self.notes: list[str] = []
        """What the user should know that is neither a verdict nor an error."""
        self.collect_only = bool(config.option.collectonly)
        self.deselected = 0
        self.errors: list[str] = []
        self.written: list[Path] = []
        self.helpers: list[object] = []
        """Hook objects registered for this session only (xdist, pytest-benchmark)."""

    def autopilot_config(self) -> AutopilotConfig:
        """``autopilot.yaml`` with the command-line overrides, read once and only when needed."""
        if self._autopilot_config is None:
            from pytest_autopilot.config import load_config

            loaded = load_config(self.config)
            flags = self.flags
            budget = loaded.budget
            if flags.rounds is not None:
                budget = dataclasses.replace(budget, rounds=flags.rounds)
            if flags.candidates is not None:
                budget = dataclasses.replace(budget, candidates=flags.candidates)
            self._autopilot_config = dataclasses.replace(
                loaded,
                budget=budget,
                optimizer=flags.optimizer or loaded.optimizer,
                experiment=flags.experiment or loaded.experiment,
            )
        return self._autopilot_config

    def _dataset_settings(self) -> DatasetSettings:
        return self.autopilot_config().datasets

    def result(self) -> SessionResult:
        """What this session measured (on an xdist worker: only its own tests)."""
        if self._result is None:
            self._result = self.recorder.result()
        return self._result

    def configure(self) -> None:
        """Fail fast, before any test runs, on a bad flag, config, baseline or loop setup."""
        if self.worker or showing_help(self.config):
            return
        flags = self.flags
        flags.check()
        html = getattr(self.config.option, "autopilot_html", None)
        if flags.loop or flags.json or flags.save or flags.report or html:
            from pytest_autopilot.preflight import check_before_tests

            check_before_tests(self.config, loop=flags.loop)
        if flags.gate or flags.loop:
            autopilot_config = self.autopilot_config()
            if flags.baseline is not None:
                from pytest_autopilot.benchjson import read_baseline

                self.baseline, self.notes = read_baseline(
                    flags.baseline,
                    autopilot_config.benchmark_statistic,
                    self.config.option.autopilot_baseline,
                )
            elif flags.against is not None:
                from pytest_autopilot import against

                timeout = autopilot_config.budget.candidate_timeout
                self.against = against.start(self.config, flags.against, timeout)
            elif flags.gate:
                from pytest_autopilot.gates import require_baseline

                require_baseline(autopilot_config, None)
            if flags.loop and not self.collect_only:
                from pytest_autopilot.loop.controller import prepare_loop

                prepare_loop(self.config, autopilot_config)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        definition = metafunc.definition
        if "dataset" not in definition.keywords:  # cheaper than the marker lookup below
            return
        marker = definition.get_closest_marker("dataset")
        if marker is not None:
            from pytest_autopilot.datasets import DatasetCatalog, DatasetError

            if self._datasets is None:
                self._datasets = DatasetCatalog(self.config.rootpath, self._dataset_settings)
            try:
                self._datasets.parametrize(metafunc, marker)
            except (DatasetError, pytest.UsageError) as exc:
                raise pytest.Collector.CollectError(str(exc)) from None

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        used = self._datasets.used if self._datasets is not None else set()
        self.recorder.collected(session.items, used)
        if self.recorder.benchmark_items:
            watcher = BenchmarkWatcher(self.recorder)
            self.config.pluginmanager.register(watcher, "autopilot-benchmark")
            self.helpers.append(watcher)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.worker:
            workeroutput: dict[str, Any] = self.config.workeroutput  # type: ignore[attr-defined]
            workeroutput["autopilot"] = self.recorder.worker_output()
            return
        flags = self.flags
        xml = junit_xml(self.config)
        if xml is not None:
            for name, value in metrics.junit_properties(self.result()):
                xml.add_global_property(name, value)
        if not (flags.gate or flags.loop or flags.json or flags.save or flags.report or flags.html):
            return
        result = self.result()
        loop_payload: dict[str, Any] | None = None
        try:
            if (flags.gate or flags.loop) and self.collect_only:
                self.notes.append(
                    f"--collect-only: collected {session.testscollected} "
                    + ("test; " if session.testscollected == 1 else "tests; ")
                    + ("no optimization loop was run" if flags.loop else "gates not checked")
                )
            elif flags.loop and not session.testscollected and selection(self.config):
                deselected = f" ({self.deselected} deselected)" if self.deselected else ""
                raise pytest.UsageError(
                    f"{selection(self.config)} selected no test{deselected}: nothing to "
                    "measure, so no optimization loop; change the selection"
                )
            elif (flags.gate or flags.loop) and session.exitstatus not in COMPLETE_SESSION:
                self.errors.append(
                    f"the session ended with exit status {int(session.exitstatus)} "
                    "(interrupted, or nothing collected): "
                    + ("no optimization loop" if flags.loop else "gates not checked")
                )
            elif flags.gate or flags.loop:
                if self.against is not None:
                    self.baseline = self.against.result()
                # In a loop without a baseline file, round 0 is its own baseline: the loop
                # judges relative gates against the baseline it measures itself.
                baseline = self.baseline if self.baseline is not None or not flags.loop else result
                self._judge(session, result, baseline)
                if flags.loop:
                    from pytest_autopilot.loop.controller import run_loop
                    from pytest_autopilot.preflight import check_objective

                    check_objective(self.autopilot_config(), result, self.config)

                    outcome = run_loop(self.config, self.autopilot_config(), result)
                    session.exitstatus = outcome.exit_status
                    loop_payload = outcome.payload
                    self._compare_loop(loop_payload)
        except pytest.UsageError as exc:
            self.errors.append(str(exc))
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
        if flags.json or flags.save or flags.report or flags.html:
            self._write(result, loop_payload, session)

    def _judge(
        self, session: pytest.Session, result: SessionResult, baseline: SessionResult | None
    ) -> None:
        """Gates, the rule for failing dataset cases, and the table against a baseline file."""
        from pytest_autopilot.gates import evaluate_gates, judge_failures

        config = self.autopilot_config()
        self.statuses = evaluate_gates(config, result, baseline)
        if self.against is not None and baseline is not None:
            from pytest_autopilot.against import paired_statuses

            self.statuses = paired_statuses(
                config, result, baseline, self.statuses, self.against.ref
            )
        self.judgement = judge_failures(config.gates, result)
        if self.baseline is not None:
            from pytest_autopilot.benchjson import with_statistics
            from pytest_autopilot.comparison import comparison_rows

            current = with_statistics(result, config.benchmark_statistic)
            self.comparison = comparison_rows(config, current, self.baseline, self.statuses)
            self.comparison_title = (
                "this run against the baseline file"
                if self.against is None
                else f"this run against {self.against.ref}, measured beside it"
            )
        if not self.flags.gate:
            return
        gates_pass = all(s.passed for s in self.statuses)
        if not self.judgement.tests_ok or not gates_pass:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        elif self.judgement.measured:
            session.exitstatus = pytest.ExitCode.OK

    def _compare_loop(self, payload: dict[str, Any]) -> None:
        """The loop's table: its best commit against the baseline it measured."""
        from pytest_autopilot.comparison import loop_comparison, paired_note

        config = self.autopilot_config()
        self.comparison = loop_comparison(config, payload)
        best = payload.get("best") or {}
        self.comparison_title = f"best ({best.get('id', 'best')}) against the baseline"
        note = paired_note(config, payload)
        if note is not None:
            self.notes.append(note)

    def _write(
        self, result: SessionResult, loop_payload: dict[str, Any] | None, session: pytest.Session
    ) -> None:
        from pytest_autopilot import report

        payload = report.build_payload(
            result, self.statuses, loop_payload, judgement=self.judgement
        )
        if self.comparison:
            payload["comparison"] = self.comparison
        if self.errors:
            payload["passed"] = False
            payload["error"] = "; ".join(self.errors)
        flags = self.flags
        try:
            self.written = report.write_outputs(
                payload,
                result,
                json_path=flags.json,
                save_path=flags.save,
                report_path=flags.report,
            )
            if flags.html is not None:
                from pytest_autopilot.html_report import write_html

                self.written.append(write_html(flags.html, payload, self.config))
        except OSError as exc:
            from pytest_autopilot.preflight import describe_write_error, output_paths

            self.errors.append(describe_write_error(exc, output_paths(self.config)))
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.worker:
            return
        lines: list[str] = []
        if self.flags.gate:
            from pytest_autopilot.report import gate_lines

            lines += gate_lines(self.statuses, self.baseline)
            if not self.statuses and not self.errors and not self.collect_only:
                lines.append("autopilot: no gates to check (add `gates:` to autopilot.yaml)")
        summary = self.judgement.summary() if self.judgement is not None else None
        if summary is not None and self.flags.gate:
            lines.append(f"autopilot: {summary}")
        if self.comparison:
            from pytest_autopilot.comparison import terminal_lines

            current = "best" if self.flags.loop else "this run"
            lines += terminal_lines(self.comparison, "autopilot:", self.comparison_title, current)
        lines += [f"autopilot: {note}" for note in self.notes]
        here = self.config.invocation_params.dir
        lines += [f"autopilot: wrote {shown(path, here)}" for path in self.written]
        lines += [f"autopilot: ERROR: {error}" for error in self.errors]
        if not lines:
            return
        terminalreporter.ensure_newline()
        for line in lines:
            red = line.startswith(("autopilot: FAIL", "autopilot: ERROR")) or line.endswith(
                "gates failed"
            )
            green = line.startswith("autopilot: PASS") or line.endswith("gates passed")
            terminalreporter.write_line(line, red=red, green=green)


class BenchmarkWatcher:
    """Registered only when the collection holds pytest-benchmark tests."""

    def __init__(self, recorder: metrics.SessionRecorder) -> None:
        self.recorder = recorder

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        if item.nodeid in self.recorder.benchmark_items:
            self.recorder.benchmark_done(item)


class XdistHooks:
    """The controller's side of pytest-xdist: merge what every worker recorded."""

    def __init__(self, recorder: metrics.SessionRecorder) -> None:
        self.recorder = recorder

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        data = getattr(node, "workeroutput", {}).get("autopilot")
        if data:
            self.recorder.merge_worker_output(data)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    plugin = AutopilotPlugin(config)
    plugin.configure()
    config.stash[plugin_key] = plugin
    config.pluginmanager.register(plugin, "autopilot-session")
    config.pluginmanager.register(plugin.recorder, "autopilot-recorder")
    plugin.helpers.append(plugin.recorder)
    if "PYTEST_AUTOPILOT_TIMING_LOCK" in os.environ and "PYTEST_AUTOPILOT_CHILD" in os.environ:
        from pytest_autopilot import timing

        timing.register(config)
    if not plugin.worker and config.pluginmanager.hasplugin("xdist"):
        xdist_hooks = XdistHooks(plugin.recorder)
        config.pluginmanager.register(xdist_hooks, "autopilot-xdist")
        plugin.helpers.append(xdist_hooks)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(plugin_key, None)
    if plugin is not None:
        if plugin.against is not None:
            plugin.against.close()
        del config.stash[plugin_key]
        for helper in plugin.helpers:
            config.pluginmanager.unregister(helper)
        config.pluginmanager.unregister(plugin)


@pytest.fixture
def autopilot(request: pytest.FixtureRequest) -> metrics.Recorder:
    """Record metrics (``record``), dataset scores (``score``) and notes (``feedback``)."""
    return request.config.stash[plugin_key].recorder.fixture(request.node.nodeid)
