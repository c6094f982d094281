#!/usr/bin/env bash
# Makes .floors/: the oldest Python the README names (3.8) with the oldest release of each runtime
# dependency that requirements.txt allows there (their own dependencies at their newest, as pip
# would pair them), where tests/test_floors.py runs some of the runtime's tests: a floor that
# does not work (Flask 2.2 imports a name Werkzeug 3 dropped) is found here, not by a user.
# Usage: bash tests/floors_env.sh [path of a python3.8]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/find_python.sh
. tests/find_python.sh
find_python 3.8 tests/test_floors.py "$@"
# uv (requirements-dev.txt), as pip cannot be asked for the lowest versions.
python3 -m uv venv -q --seed --clear --python "$python" .floors
python3 -m uv pip install -q --python .floors/bin/python --resolution lowest-direct -r requirements.txt "pytest>=7"
echo "floors environment ready: $(.floors/bin/python --version 2>&1) in .floors/"
