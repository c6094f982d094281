import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx_models  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Never touch the user's model cache from a test, and let no test's variables reach
    the next: a command run in-process (app.main) sets OpenCV's log levels in os.environ,
    which every server a later test starts would inherit (FFmpeg silenced at DEBUG)."""
    saved = dict(os.environ)
    monkeypatch.setenv("STREAMDETECT_HOME", str(tmp_path / "home"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_yolov2_model(model_dir):
    return onnx_models.tiny_yolov2(model_dir / "tiny_yolov2_random.onnx")


@pytest.fixture(scope="session")
def red_square_model(model_dir):
    return onnx_models.red_square(model_dir / "red_square.onnx")
