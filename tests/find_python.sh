# shellcheck shell=bash
# Sourced by tests/*_env.sh. find_python X.Y TEST [PATH]: sets $python to PATH, else to pyenv's
# own Python X.Y (before PATH's pythonX.Y, which may be a pyenv shim that refuses to run); where
# none is found, says so and ends the script without error: the suite runs, and TEST says why it
# skipped. A PATH that is not a Python X.Y is an error.
find_python() {
    local version=$1 test=$2
    shopt -s nullglob
    local found=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version"*/bin/python"$version" python"$version")
    python=${3:-${found[0]:-}}
    if ! "$python" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$version'" 2>/dev/null; then
        if [ -n "${3:-}" ]; then
            echo "$3 is not a Python $version" >&2
            exit 1
        fi
        echo "no Python $version found (give the path of a python$version, e.g. from pyenv install" \
             "$version): $test will be skipped" >&2
        exit 0
    fi
}
