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
  # Appends each phase's non-empty outcome as it happens (a run cut short still compares on
  # the tests it reached); compare() keeps the worst phase of each test.
  cat > "$WORK/compat_outcomes.py" <<'PY'
import os

def pytest_configure(config):
    global _config
    _config = config

def pytest_runtest_logreport(report):
    category = _config.hook.pytest_report_teststatus(report=report, config=_config)[0]
    if report.when == "call" or category not in ("", "passed"):
        with open(os.environ["COMPAT_OUTCOMES"], "a") as out:
            out.write(f"{report.nodeid}\t{category or 'passed'}\n")
PY
}

run() {
  local suite=$1 tag=$2 src dir
  case $suite in
    benchmark) src="$WORK/sdist/pytest_benchmark-$BENCH_VERSION" ;;
    xdist) src="$WORK/sdist/pytest_xdist-$XDIST_VERSION" ;;
  esac
  dir="$WORK/$suite-$tag"
  rm -rf "$dir" "$WORK/bt-$suite-$tag" "$WORK/$suite-$tag.raw" && cp -a "$src" "$dir"
  local pp="$WORK" args=()
  if [ "$suite" = benchmark ]; then
    pp="$dir/tests:$WORK"              # tox.ini: PYTHONPATH={toxinidir}/tests, pytest -vv --ignore=src
    args=(-vv --ignore=src)
  fi
  (cd "$dir" && env -u PYTEST_ADDOPTS COLUMNS=80 PYTHONUNBUFFERED=yes PYTHONPATH="$pp" \
     COMPAT_OUTCOMES="$WORK/$suite-$tag.raw" \
     nice -n 10 "$WORK/venv-$tag/bin/python" -m pytest "${args[@]}" -p compat_outcomes \
     -p no:cacheprovider --basetemp="$WORK/bt-$suite-$tag" >"$WORK/$suite-$tag.log" 2>&1) || true
  tail -1 "$WORK/$suite-$tag.log"
}

worst() {  # one line per test: its first non-passed outcome, else passed
  awk -F'\t' '!($1 in o) || o[$1] == "passed" { o[$1] = $2 } END { for (k in o) print k "\t" o[k] }' "$1" | sort
}

compare() {
  local rc=0
  for suite in benchmark xdist; do
    for tag in with without; do worst "$WORK/$suite-$tag.raw" >"$WORK/$suite-$tag.tsv"; done
    echo "== $suite: $(wc -l <"$WORK/$suite-with.tsv") tests with, $(wc -l <"$WORK/$suite-without.tsv") without"
    for tag in with without; do
      echo "   $tag: $(cut -f2 "$WORK/$suite-$tag.tsv" | sort | uniq -c | tr -s ' ' | tr '\n' ',')"
    done
    # A run cut short (deadline, kill) is compared on the tests both passes reached.
    local both; both=$(comm -12 <(cut -f1 "$WORK/$suite-with.tsv") <(cut -f1 "$WORK/$suite-without.tsv") | wc -l)
    echo "   reached by both passes: $both"
    if diff <(join -t $'\t' <(cut -f1 "$WORK/$suite-with.tsv") "$WORK/$suite-without.tsv") \
            <(join -t $'\t' <(cut -f1 "$WORK/$suite-without.tsv") "$WORK/$suite-with.tsv") >"$WORK/$suite.diff"; then
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
