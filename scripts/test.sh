#!/usr/bin/env bash
# The project's test command: sets up .venv, installs the project with its test extra,
# then runs ruff, mypy --strict and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -n 2 "$@"   # two workers: the suite is mostly child sessions
