"""The runtime's tests again on Python 3.6 with the Jetson Nano's pins (JetPack 4.6.x has
Python 3.6) and JetPack's OpenCV version, 4.1.1. vermin (test_compat.py) checks our syntax and
standard library; this checks that the pinned Flask, NumPy, ONNX, ONNX Runtime, OpenCV,
simplejpeg and uWSGI work with our code."""
import os
import re
import subprocess

import pytest

from other_environment import ROOT, TESTS, installed_versions, run_tests_under
from pins import pins_for

ENVIRONMENT = os.path.join(ROOT, ".python36", "bin")
PYTHON36 = os.path.join(ENVIRONMENT, "python")
# Every test of the runtime; not the benchmarks, the deployment linters or the GPU.
RUNTIME_TESTS = ["test_cameras.py", "test_cli.py", "test_decoding.py", "test_hostile.py", "test_model.py",
                 "test_mqtt.py", "test_pipeline.py", "test_production.py", "test_server.py", "test_tensorrt.py", "test_tracking.py"]
needs_python36 = pytest.mark.skipif(not os.path.exists(PYTHON36),
                                    reason="no Python 3.6 environment: bash tests/python36_env.sh")


@needs_python36
def test_python_3_6_environment_has_the_pins():
    installed = installed_versions(PYTHON36)
    # The Nano's pins (aarch64: no pip OpenCV), and the OpenCV version of its JetPack.
    pins = {name: specifier.lstrip("=") for name, specifier in
            pins_for("3.6", "aarch64", ("requirements.txt", "requirements-production.txt")).items()}
    assert len(pins) >= 8 and "simplejpeg" in pins and "uwsgi" in pins and "opencv-python-headless" not in pins
    with open(os.path.join(TESTS, "python36_env.sh")) as script:
        pins["opencv-python-headless"] = re.search(r'"opencv-python-headless==([\d.]+)"', script.read()).group(1)
    assert pins["opencv-python-headless"].startswith("4.1.1")  # JetPack 4.6's
    stale = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not stale, "pinned vs installed {}: run bash tests/python36_env.sh again".format(stale)


@needs_python36
def test_runtime_tests_pass_on_python_3_6_with_its_pins():
    version = subprocess.check_output([PYTHON36, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    assert version.decode().strip() == "3.6"
    print("Python 3.6:", run_tests_under(PYTHON36, RUNTIME_TESTS, timeout=600))
