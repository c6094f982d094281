import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import onnx_models  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Never touch the user's model cache from a test."""
    monkeypatch.setenv("STREAMDETECT_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_yolov2_model(model_dir):
    return onnx_models.tiny_yolov2(model_dir / "tiny_yolov2_random.onnx")


@pytest.fixture(scope="session")
def red_square_model(model_dir):
    return onnx_models.red_square(model_dir / "red_square.onnx")
