"""INT8 on ONNX Runtime (the CPU) with a model in the zoo's form (opset 8, IR 3 with its weights
among the inputs, ImageScaler first): quantized once, calibrated on pictures, cached, quantized
again when what it depends on changes; and detect, serve, evaluate and compare run it."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from sources.synthetic import SyntheticSource
from streaming import Server, get_json, run_app
from yolo_tool import Detector

quantization = pytest.importorskip("onnxruntime.quantization")
pytestmark = pytest.mark.skipif(not hasattr(pytest.importorskip("onnxruntime.quantization.shape_inference"),
                                            "quant_pre_process"), reason="ONNX Runtime before 1.13 cannot quantize")


@pytest.fixture
def calibration(tmp_path):
    folder = tmp_path / "calibration"
    folder.mkdir()
    source = SyntheticSource("test://")
    for number in range(12):
        cv2.imwrite(str(folder / "{:02d}.jpg".format(number)), source.scene(1000.0 + number * 0.9))
    return str(folder)


def int8_files(home):
    folder = os.path.join(home, "engines")
    return sorted(name for name in os.listdir(folder) if "-int8-" in name) if os.path.isdir(folder) else []


def test_the_int8_model_is_made_once_reused_and_made_again_when_its_inputs_change(
        tiny_yolov2_model, calibration, caplog, monkeypatch, tmp_path):
    home = str(tmp_path / "home")
    monkeypatch.setenv("STREAMDETECT_HOME", home)
    caplog.set_level(logging.INFO, logger="streamdetect.engine")
    frame = SyntheticSource("test://").scene(1234.5)
    fp32 = Detector(tiny_yolov2_model, backend="onnxruntime").infer(frame)[0]
    int8 = Detector(tiny_yolov2_model, backend="onnxruntime", precision="int8", calibration_images=calibration)
    assert int8.engine.precision == "int8" and int8.engine.detail.endswith(", int8")
    output = int8.infer(frame)[0]
    assert output.shape == fp32.shape and 0 < np.abs(output - fp32).max() < 0.25 * np.abs(fp32).max()
    first = int8_files(home)
    assert len(first) == 1 and "quantizing" in caplog.text
    caplog.clear()
    Detector(tiny_yolov2_model, backend="onnxruntime", precision="int8", calibration_images=calibration)
    assert int8_files(home) == first and "INT8 model from the cache" in caplog.text and "quantizing" not in caplog.text
    cv2.imwrite(os.path.join(calibration, "new.jpg"), SyntheticSource("test://").scene(2000.0))
    Detector(tiny_yolov2_model, backend="onnxruntime", precision="int8", calibration_images=calibration)
    second = int8_files(home)
    assert len(second) == 1 and second != first and "quantizing again" in caplog.text
    Detector(tiny_yolov2_model, backend="onnxruntime", precision="int8", calibration_images=calibration,
             input_scale=0.5)
    assert len(int8_files(home)) == 1 and int8_files(home) != second


def test_detect_evaluate_compare_and_serve_run_int8(tiny_yolov2_model, calibration, tmp_path):
    int8 = ["--precision", "int8", "--calibration-images", calibration]
    picture = tmp_path / "scene.jpg"
    cv2.imwrite(str(picture), SyntheticSource("test://").scene(1500.0))
    result = run_app("detect", str(picture), "--model", tiny_yolov2_model, "--backend", "onnxruntime", *int8)
    assert result.returncode == 0 and json.loads(result.stdout)["backend"] == "onnxruntime"
    (tmp_path / "scene.txt").write_text("14 0.5 0.5 0.3 0.6\n")
    result = run_app("evaluate", str(tmp_path), "--model", tiny_yolov2_model, "--json", *int8)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["precision"] == "int8" and report["images"] == 1
    result = run_app("compare", "--model", tiny_yolov2_model, "--backends", "onnxruntime", "--precision",
                     "fp32,int8", "--frames", "2", "--repeat", "2", "--dataset", str(tmp_path), "--json",
                     "--calibration-images", calibration)
    rows = json.loads(result.stdout)
    assert [(row["backend"], row["precision"]) for row in rows] == [("onnxruntime", "fp32"), ("onnxruntime", "int8")]
    assert rows[0]["max_abs_diff"] == 0 and rows[1]["max_abs_diff"] > 0
    assert all(set(row) >= {"median_ms", "same_detections", "map50"} and row["map50"] is not None for row in rows)
    with Server("serve", "--source", "test://?fps=20", "--model", tiny_yolov2_model, "--backend", "onnxruntime",
                *int8) as server:
        stats = get_json(server.port, "/api/stats")[1]
    assert stats["precision"] == "int8" and stats["frames_published"] > 0


def test_fp16_on_the_cpu_is_an_error_and_auto_stays_fp32(red_square_model, tmp_path):
    cv2.imwrite(str(tmp_path / "scene.jpg"), np.full((100, 100, 3), 90, np.uint8))
    result = run_app("detect", str(tmp_path / "scene.jpg"), "--model", red_square_model, "--backend",
                     "onnxruntime", "--precision", "fp16")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: --precision fp16 is for TensorRT on a GPU; ONNX Runtime on the CPU runs fp32 (auto) or int8")
    assert Detector(red_square_model, backend="onnxruntime").engine.precision == "fp32"
    result = run_app("detect", str(tmp_path / "scene.jpg"), "--model", red_square_model, "--backend",
                     "onnxruntime", "--precision", "int8")
    assert result.returncode == 2 and "--precision int8 on ONNX Runtime needs --calibration-images DIR" in \
        result.stderr
