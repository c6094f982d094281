#!/usr/bin/env bash
# Makes .python36/: Python 3.6 (JetPack 4.6.x on the Jetson Nano) with the runtime's pins for it
# (the python_version < "3.7" lines of requirements*.txt, as on the Nano) and the OpenCV version
# JetPack has, where tests/test_python36.py runs the runtime's tests again.
# Usage: bash tests/python36_env.sh [path of a python3.6]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/find_python.sh
. tests/find_python.sh
find_python 3.6 tests/test_python36.py "$@"
"$python" -m venv .python36
# pip 21.3.1, the last for Python 3.6, knows the manylinux2014 wheels that pip 18 ignores.
.python36/bin/python -m pip install -q "pip==21.3.1"
.python36/bin/python -m pip install -q -r requirements-production.txt "pytest==7.0.1"
# The Nano's OpenCV is JetPack's 4.1.1 (the requirements skip pip's there): its pip build for
# x86-64 Python 3.6 stands in for it (without GStreamer), in place of pip's 4.6 for this machine.
.python36/bin/python -m pip install -q "opencv-python-headless==4.1.1.26"
echo "Python 3.6 environment ready: $(.python36/bin/python --version 2>&1) in .python36/"
