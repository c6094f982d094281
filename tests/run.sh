#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them. As root on Debian or Ubuntu it
# installs the system's packages (nginx, Chromium, ...); elsewhere it names those missing, whose
# tests then skip with the reason. Python packages go into .venv/ (Debian 12 and Ubuntu 24.04
# refuse pip installs into the system's Python), Python 3.6 and the floors into .python36/ and
# .floors/ (docs/development.md). Arguments go to pytest: bash tests/run.sh tests/test_cli.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_PACKAGES=(nginx chromium fonts-dejavu-core shellcheck openssl mosquitto)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv "${SYSTEM_PACKAGES[@]}" >/dev/null \
        || apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
else
    for program in nginx chromium shellcheck openssl mosquitto; do
        command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] \
            || echo "not installed: $program (as root: apt-get install ${SYSTEM_PACKAGES[*]}); its tests skip" >&2
    done
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -r requirements-dev.txt
export PATH="$PWD/.venv/bin:$PATH"  # uwsgi, vermin, hadolint and uv; python3 is the venv's
bash tests/python36_env.sh
bash tests/floors_env.sh
exec python3 -m pytest -q "$@"
