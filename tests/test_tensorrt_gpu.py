"""TensorRT on a real GPU against ONNX Runtime, on the real Tiny YOLOv2 architecture.

Runs only where TensorRT, pycuda and a CUDA device exist (a Jetson, a GPU
machine); elsewhere every test is skipped with the reason. On a Jetson Nano:

    python3 -m pytest -q tests/test_tensorrt_gpu.py
"""
import numpy as np
import pytest

from get_engine import _tensorrt_reason, create_engine


def _skip_reason():
    engine_class, reason = _tensorrt_reason()
    return None if engine_class is not None else reason


SKIP_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason="no TensorRT GPU here: {}".format(SKIP_REASON))


def frames():
    rng = np.random.RandomState(7)
    return [(rng.rand(1, 3, 416, 416) * 255).astype(np.float32) for _ in range(3)]


def test_fp32_engine_matches_onnx_runtime(tiny_yolov2_model, tmp_path):
    trt_engine = create_engine(tiny_yolov2_model, "tensorrt", cache_folder=str(tmp_path), precision="fp32")
    ort_engine = create_engine(tiny_yolov2_model, "onnxruntime")
    try:
        for blob in frames():
            np.testing.assert_allclose(trt_engine.infer(blob), ort_engine.infer(blob), atol=1e-3, rtol=0)
    finally:
        trt_engine.close()


def test_fp32_detections_are_identical(tiny_yolov2_model, tmp_path):
    from yolo_tool import Detector
    image = (np.random.RandomState(8).rand(480, 640, 3) * 255).astype(np.uint8)
    # At 0.15 the random weights give a few dozen boxes on this image (ONNX Runtime: 28).
    trt_detector = Detector(tiny_yolov2_model, backend="tensorrt", precision="fp32", conf_threshold=0.15)
    ort_detector = Detector(tiny_yolov2_model, backend="onnxruntime", conf_threshold=0.15)
    try:
        trt_found, _ = trt_detector.detect(image.copy())
        ort_found, _ = ort_detector.detect(image.copy())
        assert ort_found and [d.class_id for d in trt_found] == [d.class_id for d in ort_found]
        for a, b in zip(trt_found, ort_found):
            assert a.score == pytest.approx(b.score, abs=1e-3)
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
    finally:
        trt_detector.close()


def test_cached_engine_is_reused(tiny_yolov2_model, tmp_path):
    import os
    create_engine(tiny_yolov2_model, "tensorrt", cache_folder=str(tmp_path), precision="fp32").close()
    [name] = [n for n in os.listdir(str(tmp_path)) if n.endswith(".engine")]
    stamp = os.path.getmtime(os.path.join(str(tmp_path), name))
    create_engine(tiny_yolov2_model, "tensorrt", cache_folder=str(tmp_path), precision="fp32").close()
    assert os.path.getmtime(os.path.join(str(tmp_path), name)) == stamp
