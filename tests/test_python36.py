"""The runtime's tests again on Python 3.6 with the Jetson Nano's pins (JetPack 4.6.x has
Python 3.6). vermin (test_compat.py) checks our syntax and standard library; this checks that
the pinned Flask, NumPy, ONNX Runtime, OpenCV, simplejpeg and uWSGI work with our code."""
import os
import subprocess

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ENVIRONMENT = os.path.join(os.path.dirname(TESTS), ".python36", "bin")
PYTHON36 = os.path.join(ENVIRONMENT, "python")
# Every test of the runtime; not the benchmarks, the deployment linters or the GPU.
RUNTIME_TESTS = ["test_cli.py", "test_decoding.py", "test_model.py", "test_pipeline.py", "test_production.py",
                 "test_server.py", "test_tensorrt.py"]


@pytest.mark.skipif(not os.path.exists(PYTHON36), reason="no Python 3.6 environment: bash tests/python36_env.sh")
def test_runtime_tests_pass_on_python_3_6_with_its_pins():
    version = subprocess.check_output([PYTHON36, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
    assert version.decode().strip() == "3.6"
    # Its own uwsgi first on PATH: the production tests run the app under a Python 3.6 uWSGI.
    environment = dict(os.environ, PATH=ENVIRONMENT + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run([PYTHON36, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"] + RUNTIME_TESTS,
                            cwd=TESTS, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=480)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-6000:]
    print("Python 3.6:", summary)
