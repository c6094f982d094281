"""Running some of the test files again under another environment's Python (Python 3.6 with the
Nano's pins, Python 3.8 with the requirements' floors), and what that environment has."""
import os
import subprocess

from packaging.utils import canonicalize_name

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def installed_versions(python):
    """{package: version} of what `python`'s environment has installed."""
    freeze = subprocess.check_output([python, "-m", "pip", "freeze"], universal_newlines=True)
    return {canonicalize_name(name): version for name, version in
            (line.split("==") for line in freeze.splitlines() if "==" in line)}


def run_tests_under(python, test_files, timeout):
    """Run `test_files` (names in tests/) with `python`, its environment's bin first on PATH
    (its own uwsgi for the production tests); asserts that they pass, returns pytest's summary."""
    environment = dict(os.environ, PATH=os.path.dirname(python) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"] + test_files,
                            cwd=TESTS, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout.strip().splitlines()[-1]
