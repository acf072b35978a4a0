#!/usr/bin/env bash
# Issue 16 "Show": the test suites of pytest-benchmark and pytest-xdist give the same
# (nodeid, outcome) set with pytest-autopilot installed as without it.
#
# Two venvs that differ only by pytest-autopilot (pytester strips PYTEST_ADDOPTS, so
# `-p no:autopilot` would not reach the suites' inner runs; uninstalling does).
# Usage: benchmarks/compat_suites.sh [setup|run SUITE TAG|compare|all]
#   SUITE in {benchmark, xdist}, TAG in {with, without}.  `all` = setup, 4 runs, compare.
# Env: REPO (pytest-autopilot source, default: this checkout), WORK (default /tmp/compatrun),
#      BENCH_VERSION / XDIST_VERSION / PYTEST_VERSION (default: the versions pinned below).
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
WORK=${WORK:-/tmp/compatrun}
BENCH_VERSION=${BENCH_VERSION:-5.3.1}
XDIST_VERSION=${XDIST_VERSION:-3.8.0}
PYTEST_VERSION=${PYTEST_VERSION:-9.2.0}
PINS="pytest==$PYTEST_VERSION pytest-benchmark==$BENCH_VERSION pytest-xdist==$XDIST_VERSION"
# Test dependencies from pytest-benchmark's tox.ini/pyproject (dev group, extras aspect,
# elasticsearch, histogram) and pytest-xdist's `testing` extra.
TESTDEPS="pygal==3.1.3 pygaljs==1.0.2 setuptools freezegun nbmake aspectlib elasticsearch filelock"

setup() {
  mkdir -p "$WORK/sdist"
  for tag in with without; do
    [ -x "$WORK/venv-$tag/bin/python" ] || python3 -m venv "$WORK/venv-$tag"
    # Install the plugin's own dependencies in both venvs, so the plugin is the only difference.
    "$WORK/venv-$tag/bin/pip" install -q $PINS anthropic pyyaml $TESTDEPS
  done
  "$WORK/venv-with/bin/pip" install -q "$REPO" $PINS
  "$WORK/venv-with/bin/pip" download -q --no-deps --no-binary :all: \
    "pytest-benchmark==$BENCH_VERSION" "pytest-xdist==$XDIST_VERSION" -d "$WORK/sdist"
  (cd "$WORK/sdist" && for f in *.tar.gz; do tar xzf "$f"; done)
  # Records one outcome per test (worst phase) through pytest's own status hook.
  cat > "$WORK/compat_outcomes.py" <<'PY'
import os

_seen = {}

def pytest_runtest_logreport(report):
    config = _config
    category = config.hook.pytest_report_teststatus(report=report, config=config)[0]
    if report.when == "call" or category not in ("", "passed"):
        if _seen.get(report.nodeid, "passed") in ("", "passed"):
            _seen[report.nodeid] = category or "passed"

def pytest_configure(config):
    global _config
    _config = config

def pytest_unconfigure(config):
    with open(os.environ["COMPAT_OUTCOMES"], "w") as out:
        for nodeid, category in sorted(_seen.items()):
            out.write(f"{nodeid}\t{category}\n")
PY
}

run() {
  local suite=$1 tag=$2 src dir
  case $suite in
    benchmark) src="$WORK/sdist/pytest_benchmark-$BENCH_VERSION" ;;
    xdist) src="$WORK/sdist/pytest_xdist-$XDIST_VERSION" ;;
  esac
  dir="$WORK/$suite-$tag"
  rm -rf "$dir" "$WORK/bt-$suite-$tag" && cp -a "$src" "$dir"
  local pp="$WORK" args=()
  if [ "$suite" = benchmark ]; then
    pp="$dir/tests:$WORK"              # tox.ini: PYTHONPATH={toxinidir}/tests, pytest -vv --ignore=src
    args=(-vv --ignore=src)
  fi
  (cd "$dir" && env -u PYTEST_ADDOPTS COLUMNS=80 PYTHONUNBUFFERED=yes PYTHONPATH="$pp" \
     COMPAT_OUTCOMES="$WORK/$suite-$tag.tsv" \
     nice -n 10 "$WORK/venv-$tag/bin/python" -m pytest "${args[@]}" -p compat_outcomes \
     -p no:cacheprovider --basetemp="$WORK/bt-$suite-$tag" >"$WORK/$suite-$tag.log" 2>&1) || true
  tail -1 "$WORK/$suite-$tag.log"
}

compare() {
  local rc=0
  for suite in benchmark xdist; do
    echo "== $suite: $(wc -l <"$WORK/$suite-with.tsv") tests with, $(wc -l <"$WORK/$suite-without.tsv") without"
    for tag in with without; do
      echo "   $tag: $(cut -f2 "$WORK/$suite-$tag.tsv" | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
    done
    if diff <(sort "$WORK/$suite-without.tsv") <(sort "$WORK/$suite-with.tsv") >"$WORK/$suite.diff"; then
      echo "   identical"
    else
      echo "   differences (< without, > with):"; grep '^[<>]' "$WORK/$suite.diff"; rc=1
    fi
  done
  return $rc
}

case ${1:-all} in
  setup) setup ;;
  run) run "$2" "$3" ;;
  compare) compare ;;
  all) setup; for s in benchmark xdist; do for t in with without; do run $s $t; done; done; compare ;;
esac
