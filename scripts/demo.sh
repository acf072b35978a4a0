#!/usr/bin/env bash
# The main job in one command: make an SPDL data loader fast with `pytest --autopilot`.
#
# Sets up .venv in the project (creating it with $PYTHON, default python3, if needed),
# installs pytest-autopilot with the [spdl] extra into it, then runs scripts/demo.py, which
# tunes example_suites/spdl_pipeline in a scratch git repository with the built-in search
# optimizer (no API key needed). Arguments go to scripts/demo.py (--dir PATH, -- pytest args).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}

if [[ ! -x .venv/bin/python ]]; then
    echo "demo: creating .venv with $python"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        echo "demo: pytest-autopilot needs Python >= 3.10; set PYTHON to one" >&2
        exit 2
    }
    "$python" -m venv .venv
fi

stamp=.venv/.autopilot-demo-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]] \
    || ! .venv/bin/python -c 'import pytest_autopilot.plugin, spdl.pipeline, numpy' 2>/dev/null; then
    echo "demo: installing pytest-autopilot[spdl] into .venv"
    .venv/bin/python -m pip install --quiet -e '.[spdl]'
    touch "$stamp"
fi

exec .venv/bin/python scripts/demo.py "$@"
