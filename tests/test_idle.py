"""Installed but not asked for: records in memory only; no file, no output, no heavy import."""

from __future__ import annotations

import json
import re

import pytest

SUITE = """
import pytest

def test_ok(autopilot):
    autopilot.record("loss", 0.25)

@pytest.mark.parametrize("n", range(5))
def test_param(n):
    assert n != 3

@pytest.mark.skip(reason="later")
def test_skipped():
    pass
"""


def files(pytester: pytest.Pytester) -> list[str]:
    """Files in the test directory, without the ones pytester itself keeps per run."""
    skip = re.compile(r"runpytest-\d+|stdout|stderr")
    return sorted(
        str(p.relative_to(pytester.path))
        for p in pytester.path.rglob("*")
        if not skip.match(p.relative_to(pytester.path).parts[0])
    )


def normalized(text: str) -> list[str]:
    text = re.sub(r"in \d+\.\d+s", "in Xs", text)
    return [line for line in text.splitlines() if not line.startswith(("plugins:", "rootdir:"))]


def test_idle_output_and_files_equal_the_run_without_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    plain = SUITE.replace("test_ok(autopilot)", "test_ok()").replace("autopilot.record", "print")
    pytester.makepyfile(test_idle=plain)
    pytester.makepyfile(test_fixture=SUITE)
    args = ("-p", "no:cacheprovider", "-rA", "--junitxml", "j.xml", "test_idle.py")
    off = pytester.runpytest_subprocess(*args, "-p", "no:autopilot")
    files_off = files(pytester)
    idle = pytester.runpytest_subprocess(*args)
    assert idle.ret == off.ret == pytest.ExitCode.TESTS_FAILED
    assert normalized(idle.stdout.str()) == normalized(off.stdout.str())
    assert idle.stderr.str() == off.stderr.str()
    assert files(pytester) == files_off
    fixture_off = pytester.runpytest("-p", "no:autopilot", "test_fixture.py")
    fixture_off.stdout.fnmatch_lines(["*fixture 'autopilot' not found*"])


def test_idle_records_in_memory_without_heavy_imports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(
        """
        import json, sys
        from pytest_autopilot.plugin import plugin_key

        def pytest_unconfigure(config):
            plugin = config.stash.get(plugin_key, None)
            result = plugin.result() if plugin is not None else None
            with open("probe.json", "w") as f:
                json.dump({
                    "heavy": [m for m in ("yaml", "anthropic", "spdl") if m in sys.modules],
                    "metrics": {n: m.value for n, m in result.metrics.items()},
                }, f)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    assert not [line for line in result.outlines if line.startswith("autopilot")]
    probe = json.loads((pytester.path / "probe.json").read_text())
    assert probe == {
        "heavy": [],
        "metrics": {"loss": 0.25, "tests.passed": 5.0, "tests.failed": 1.0, "tests.total": 7.0},
    }
