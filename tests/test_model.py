"""Engines, model checks at load time, and the verified model download."""
import hashlib
import http.server
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import drawing
import onnx_models
import yolo_tool
from errors import EngineError, ModelError
from get_engine import create_engine
from streaming import http_server, run_app
from yolo_tool import Detector, download, resolve_model


def test_onnxruntime_and_opencv_agree_on_the_real_architecture(tiny_yolov2_model):
    rng = np.random.RandomState(1)
    blob = (rng.rand(1, 3, 416, 416) * 255).astype(np.float32)
    ort = create_engine(tiny_yolov2_model, "onnxruntime").infer(blob)
    ocv = create_engine(tiny_yolov2_model, "opencv").infer(blob)
    assert ort.shape == ocv.shape == (1, 125, 13, 13)
    assert np.abs(ort).max() > 0.1  # a real signal, not zeros on both sides
    assert np.abs(ort - ocv).max() < 1e-3


def test_detector_reads_the_model_description(tiny_yolov2_model):
    detector = Detector(tiny_yolov2_model, backend="onnxruntime")
    assert (detector.input_h, detector.input_w, detector.num_classes) == (416, 416, 20)
    assert detector.engine.input_name == "image"
    assert detector.labels[14] == "person"


def test_custom_class_count_needs_matching_labels(tmp_path):
    model = onnx_models.red_square(tmp_path / "three.onnx", num_classes=3)
    assert Detector(model, backend="onnxruntime").labels == ["class0", "class1", "class2"]
    assert Detector(model, backend="opencv", labels=["crack", "pothole", "rut"]).num_classes == 3
    with pytest.raises(ModelError, match="predicts 3 classes but 20 labels"):
        Detector(model, backend="onnxruntime", labels=yolo_tool.VOC_LABELS)


def test_labels_file_is_utf8_in_any_locale_and_without_a_byte_order_mark(tmp_path):
    """Python 3.6 in the C locale (a service with no LANG) reads text files as ASCII; Notepad
    starts a UTF-8 file with a byte-order mark, which would become part of the first label."""
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"\xef\xbb\xbfcaf\xc3\xa9\r\n\r\nStra\xc3\x9fe\r\n\xe7\x8b\x97\r\n")
    environment = dict(os.environ, LANG="C", LC_ALL="C", PYTHONPATH=os.path.dirname(yolo_tool.__file__))
    script = "import yolo_tool, sys; print(ascii(yolo_tool.read_labels(sys.argv[1])))"
    read = subprocess.check_output([sys.executable, "-c", script, str(labels)], env=environment)
    assert read.decode().strip() == ascii(["caf\u00e9", "Stra\u00dfe", "\u72d7"])
    labels.write_bytes(b"crack\npothole\nr\xe9paration\n")  # Latin-1
    with pytest.raises(ModelError, match=r"labels.txt is not UTF-8 text \(line 3 has byte 0xe9\); save it as UTF-8"):
        yolo_tool.read_labels(str(labels))


def test_labels_beyond_ascii_are_drawn_readably(tmp_path, caplog):
    """OpenCV before 5 (the Jetson's) draws a '?' for each byte beyond ASCII."""
    def drawn(label):
        detection = yolo_tool.Detection(label, 2, 0.9, [100, 100, 300, 300])
        return drawing.draw_detections(np.zeros((480, 640, 3), np.uint8), [detection], [(255, 255, 255)] * 3)
    assert not np.array_equal(drawn("caf\u00e9"), drawn("caf??"))
    assert not np.array_equal(drawn("Stra\u00dfe"), drawn("Stra??e"))
    assert not np.array_equal(drawn("\u72d7"), drawn("???"))
    if not drawing._opencv_draws_unicode():
        assert np.array_equal(drawn("caf\u00e9"), drawn("cafe"))
        assert np.array_equal(drawn("\u72d7"), drawn("class 2"))
    model = onnx_models.constant_grid(tmp_path / "three.onnx", np.zeros((5 * 8, 13, 13)))
    with caplog.at_level("WARNING"):
        Detector(model, backend="onnxruntime", labels=["crack", "caf\u00e9", "\u72d7"])
    redrawn = [record.getMessage() for record in caplog.records if "draws ASCII only" in record.getMessage()]
    if drawing._opencv_draws_unicode():
        assert not redrawn
    else:
        assert redrawn == ["OpenCV {} draws ASCII only, so the pictures show caf\u00e9 as cafe, \u72d7 as class 2 "
                           "(the API gives the names)".format(cv2.__version__)]


def test_classes_keeps_only_the_named_ones(red_square_model):
    from streaming import red_square_scene
    scene = red_square_scene()
    detector = Detector(red_square_model, backend="onnxruntime", classes=["dog", "aeroplane"])
    found, _ = detector.detect(scene)
    assert found and {d.label for d in found} == {"aeroplane"}
    assert detector.class_names() == ["aeroplane", "dog"]  # as /api/stats reports them
    assert Detector(red_square_model, backend="onnxruntime").class_names() is None
    assert Detector(red_square_model, backend="onnxruntime", classes=["dog"]).detect(scene)[0] == []
    with pytest.raises(ModelError, match=r"--classes: aeroplan \(did you mean aeroplane\?\), persn \(did you mean "
                                         r"person\?\), unicorn are not among the classes of red_square.onnx: "
                                         "aeroplane, bicycle, "):
        Detector(red_square_model, backend="onnxruntime", classes=["aeroplan", "persn", "unicorn"])


def test_classes_in_another_case_name_the_class(red_square_model):
    from streaming import red_square_scene
    detector = Detector(red_square_model, backend="onnxruntime", classes=["Aeroplane", "DOG"])
    assert detector.class_names() == ["aeroplane", "dog"]
    assert {d.label for d in detector.detect(red_square_scene())[0]} == {"aeroplane"}
    twins = Detector(red_square_model, backend="onnxruntime",
                     labels=["Car", "car"] + ["c{}".format(i) for i in range(18)])
    assert twins.class_ids(["car", "Car"]) == [0, 1]
    with pytest.raises(ModelError, match=r"--classes: CAR \(did you mean Car or car\?\) is not among"):
        twins.class_ids(["CAR"])


def test_corrupt_model_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="^{} is not a readable ONNX model (.*); pass --model PATH to an ONNX "
                                         "file$".format(re.escape(str(path)))):
        Detector(str(path), backend="onnxruntime")


def test_missing_model_names_the_fix(tmp_path):
    with pytest.raises(ModelError, match="--model PATH"):
        Detector("/no/such/model.onnx")
    with pytest.raises(ModelError, match=r"^model '{0}' is a folder; pass --model PATH to an ONNX file \(this "
                                         r"folder has none\)$".format(re.escape(str(tmp_path)))):
        Detector(str(tmp_path))
    (tmp_path / "b.onnx").write_bytes(b"")
    (tmp_path / "a.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="is a folder; pass --model PATH to an ONNX file, such as {}$".format(
            re.escape(str(tmp_path / "a.onnx")))):
        Detector(str(tmp_path))


def test_output_channels_that_do_not_fit_the_anchors(tmp_path):
    model = onnx_models.constant_grid(tmp_path / "odd.onnx", np.zeros((126, 13, 13)))
    with pytest.raises(ModelError, match="126 channels"):
        Detector(model, backend="onnxruntime")


def test_a_model_that_loads_but_does_not_run_is_a_clear_error(tmp_path):
    model = onnx_models.mismatched_weights(tmp_path / "mismatched.onnx")
    with pytest.raises(ModelError, match=r"^mismatched.onnx loads but does not run on onnxruntime: .*Conv.*; check "
                                         r"the model, or try another --backend \(python3 app.py check lists them\)$"):
        Detector(model, backend="onnxruntime")
    result = run_app("detect", "-", "--model", model, "--backend", "onnxruntime", input="")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: mismatched.onnx loads but does not run on onnxruntime: ")


def _flat_output_model(path, input_shape):
    nodes = [helper.make_node("Flatten", ["image"], ["flat"])]
    graph = helper.make_graph(nodes, "flat", [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return str(path)


def test_wrong_output_rank_is_found_at_load(tmp_path):
    model = _flat_output_model(tmp_path / "flat.onnx", [1, 3, 32, 32])
    with pytest.raises(ModelError, match="output has shape"):
        Detector(model, backend="onnxruntime")


def test_non_image_input_is_found_at_load(tmp_path):
    model = _flat_output_model(tmp_path / "vector.onnx", [1, 300])
    with pytest.raises(ModelError, match=r"expected N x 3 x H x W"):
        Detector(model, backend="onnxruntime")


# --- download -------------------------------------------------------------

PAYLOAD = os.urandom(300000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# A Git LFS pointer: what a copy that is not the model looks like (an error page would do as well).
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + PAYLOAD_SHA.encode() + b"\nsize 300000\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/pointer":
            self.send_response(200)
            self.send_header("Content-Length", str(len(LFS_POINTER)))
            self.end_headers()
            self.wfile.write(LFS_POINTER)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        body = PAYLOAD[:len(PAYLOAD) // 3] if self.path == "/cut" else PAYLOAD
        self.wfile.write(body)
        if self.path == "/cut":
            self.wfile.flush()
            self.connection.close()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with http_server(_Handler) as (url, _):
        yield url


def test_download_verifies_and_saves(server, tmp_path):
    dest = tmp_path / "model.onnx"
    download(server + "/good", str(dest), PAYLOAD_SHA, len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(str(tmp_path)) == ["model.onnx"]


def test_download_with_wrong_checksum_is_rejected_and_removed(server, tmp_path):
    dest = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="SHA-256"):
        download(server + "/good", str(dest), "0" * 64, len(PAYLOAD))
    assert os.listdir(str(tmp_path)) == []


def test_interrupted_download_leaves_nothing(server, tmp_path):
    dest = tmp_path / "model.onnx"
    with pytest.raises(ModelError, match="run the command again|run again"):
        download(server + "/cut", str(dest), PAYLOAD_SHA, len(PAYLOAD))
    assert os.listdir(str(tmp_path)) == []


def test_a_disk_that_takes_no_more_is_named_not_the_network(server, tmp_path):
    """A write that fails (here: beyond a file-size limit, as a full disk fails) is no
    "check the internet connection"; the partial file goes."""
    import resource
    import signal
    import subprocess
    import sys

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails rather than the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
    dest = str(tmp_path / "model.onnx")
    result = subprocess.run([sys.executable, "-c", "import sys, yolo_tool; yolo_tool.download(*sys.argv[1:4], "
                             "size=int(sys.argv[4]))", server + "/good", dest, PAYLOAD_SHA, str(len(PAYLOAD))],
                            cwd=os.path.dirname(yolo_tool.__file__), preexec_fn=small_files,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "errors.ModelError: cannot save {} (File too large); it needs 0.3 MB of free space there: make "
        "room, or set STREAMDETECT_HOME to a folder that has it".format(dest))
    assert os.listdir(str(tmp_path)) == []


def test_no_network_names_the_url_and_the_alternative(tmp_path):
    url = "http://127.0.0.1:9/tinyyolov2-8.onnx"  # the discard port: nothing listens
    with pytest.raises(ModelError) as error:
        download(url, str(tmp_path / "model.onnx"), PAYLOAD_SHA, len(PAYLOAD))
    message = str(error.value)
    assert url in message and "--model PATH" in message and "\n" not in message
    assert os.listdir(str(tmp_path)) == []


def test_named_model_downloads_once_into_the_cache(server, tmp_path, monkeypatch):
    spec = yolo_tool.NamedModel("fake.onnx", [server + "/good"], PAYLOAD_SHA, len(PAYLOAD),
                                yolo_tool.VOC_LABELS, yolo_tool.VOC_ANCHORS, 1.0)
    monkeypatch.setitem(yolo_tool.NAMED_MODELS, "fake", spec)
    monkeypatch.setenv("STREAMDETECT_HOME", str(tmp_path / "home"))
    path = resolve_model("fake")
    assert path == str(tmp_path / "home" / "models" / "fake.onnx")
    assert open(path, "rb").read() == PAYLOAD
    monkeypatch.setitem(yolo_tool.NAMED_MODELS, "fake", yolo_tool.NamedModel(
        "fake.onnx", ["http://127.0.0.1:9/unreachable"], PAYLOAD_SHA, len(PAYLOAD), (), (), 1.0))
    assert resolve_model("fake") == path  # cached: no second download


def test_a_copy_that_cannot_be_had_leads_to_the_next(server, tmp_path, monkeypatch, caplog):
    """A copy that is not the model (a Git LFS pointer) or cannot be reached leads to the model's
    next copy; only when every copy fails is it an error."""
    unreachable = "http://127.0.0.1:9/tinyyolov2-8.onnx"  # the discard port: nothing listens
    monkeypatch.setitem(yolo_tool.NAMED_MODELS, "fake", yolo_tool.NamedModel(
        "fake.onnx", [server + "/pointer", unreachable, server + "/good"], PAYLOAD_SHA, len(PAYLOAD), (), (), 1.0))
    path = resolve_model("fake")
    assert open(path, "rb").read() == PAYLOAD and os.listdir(os.path.dirname(path)) == ["fake.onnx"]
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        "download of {}/pointer stopped at {} of {} bytes; trying the copy at {}".format(
            server, len(LFS_POINTER), len(PAYLOAD), unreachable),
        "cannot download {} (Connection refused); trying the copy at {}/good".format(unreachable, server)]
    os.remove(path)
    monkeypatch.setitem(yolo_tool.NAMED_MODELS, "fake", yolo_tool.NamedModel(
        "fake.onnx", [server + "/pointer", unreachable], PAYLOAD_SHA, len(PAYLOAD), (), (), 1.0))
    with pytest.raises(ModelError, match=r"^cannot download {} \(Connection refused\); check the internet "
                                         r"connection".format(re.escape(unreachable))):
        resolve_model("fake")
    assert os.listdir(os.path.dirname(path)) == []


def cached_fake_model(server, tmp_path, monkeypatch, content):
    """The named model "fake", served by `server`, with `content` already in its cache file."""
    spec = yolo_tool.NamedModel("fake.onnx", [server + "/good"], PAYLOAD_SHA, len(PAYLOAD),
                                yolo_tool.VOC_LABELS, yolo_tool.VOC_ANCHORS, 1.0)
    monkeypatch.setitem(yolo_tool.NAMED_MODELS, "fake", spec)
    monkeypatch.setenv("STREAMDETECT_HOME", str(tmp_path))
    cached = tmp_path / "models" / "fake.onnx"
    cached.parent.mkdir()
    cached.write_bytes(content)
    return cached


def test_an_incomplete_cached_model_is_downloaded_again(server, tmp_path, monkeypatch, caplog):
    cached = cached_fake_model(server, tmp_path, monkeypatch,
                               PAYLOAD[:10])  # what a copy cut short by a full disk would leave
    assert resolve_model("fake") == str(cached) and cached.read_bytes() == PAYLOAD
    assert "is incomplete (10 of {} bytes); downloading it again".format(len(PAYLOAD)) in caplog.text


def test_a_damaged_cached_model_is_downloaded_again(server, tmp_path, monkeypatch, caplog):
    """A cached model of the right size whose bytes have changed (an SD card's bit rot)."""
    cached = cached_fake_model(server, tmp_path, monkeypatch, bytes([PAYLOAD[0] ^ 1]) + PAYLOAD[1:])  # a bit flipped
    assert resolve_model("fake") == str(cached) and cached.read_bytes() == PAYLOAD
    assert "is damaged (its SHA-256 is not the model's); downloading it again" in caplog.text


def test_a_precision_the_backend_has_not_is_said(red_square_model, caplog):
    """--precision fp16 under --backend auto on a machine without TensorRT would otherwise
    be dropped without a word: on the CPU it is an error, which names the backends that have it."""
    with pytest.raises(EngineError, match="--precision fp16 is for TensorRT on a GPU; ONNX Runtime on the CPU "
                                          "runs fp32"):
        create_engine(red_square_model, "onnxruntime", precision="fp16")
    with pytest.raises(EngineError, match="--precision int8 is not OpenCV DNN's, which runs fp32: use --backend "
                                          "onnxruntime for int8, tensorrt for fp16"):
        create_engine(red_square_model, "opencv", precision="int8")
    create_engine(red_square_model, "opencv", precision="auto").close()
    assert "--precision" not in caplog.text


def test_onnxruntime_prefers_its_gpu_providers_when_present():
    from get_engine import onnxruntime_providers
    assert onnxruntime_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = onnxruntime_providers(everything, "/cache/engines")
    assert providers[0][0] == "TensorrtExecutionProvider"
    assert providers[0][1]["trt_engine_cache_path"] == "/cache/engines"
    assert providers[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnxruntime_providers(everything) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("cores, in_flight, threads", [(1, 1, 0), (2, 2, 1), (4, 2, 2)])
def test_onnxruntime_frames_in_flight_share_out_the_cores(tiny_yolov2_model, monkeypatch, cores, in_flight,
                                                          threads):
    import get_engine
    monkeypatch.setattr(get_engine, "usable_cores", lambda: cores)
    engine = create_engine(tiny_yolov2_model, "onnxruntime", frames_in_flight=0)  # automatic
    assert engine.frames_in_flight == in_flight
    assert engine.session.get_session_options().intra_op_num_threads == threads  # 0: ORT's own choice
    assert create_engine(tiny_yolov2_model, "onnxruntime").frames_in_flight == 1  # one caller: all cores


def test_onnxruntime_frames_side_by_side_give_each_frame_its_own_result(tiny_yolov2_model):
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.RandomState(3)
    blobs = [(rng.rand(1, 3, 416, 416) * 255).astype(np.float32) for _ in range(6)]
    alone = create_engine(tiny_yolov2_model, "onnxruntime", frames_in_flight=1)
    expected = [alone.infer(blob) for blob in blobs]
    together = create_engine(tiny_yolov2_model, "onnxruntime", frames_in_flight=2)
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(together.infer, blobs))
    for output, reference in zip(outputs, expected):
        assert np.abs(output - reference).max() < 1e-3
    assert np.abs(expected[0] - expected[1]).max() > 0.1  # different inputs, different outputs


def test_labels_of_boxes_side_by_side_do_not_cover_each_other():
    """Two boxes 60 px apart with labels wider than that, as in a crowd: the second label goes
    inside its box's top edge instead of over the first label; and no box's line crosses a label."""
    first, second = drawing.label_places([[100, 100, 220, 220], [160, 100, 280, 220]], [(80, 20)] * 2, 640, 480)
    assert first == (100, 80, 180, 100) and second == (160, 100, 240, 120)
    blue, green, red = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    detections = [yolo_tool.Detection("aeroplane", 0, 0.99, [100, 100, 220, 220]),
                  yolo_tool.Detection("bicycle", 1, 0.98, [160, 100, 280, 220]),
                  yolo_tool.Detection("bird", 2, 0.97, [150, 90, 300, 300])]  # its top line crosses the first label
    frame = drawing.draw_detections(np.zeros((480, 640, 3), np.uint8), detections, [blue, green, red])
    above = frame[82:98, 100:200].reshape(-1, 3).tolist()  # the first label (103 x 19 at 100, 81)
    assert list(blue) in above and list(green) not in above and list(red) not in above
    assert frame[104:116, 165:215].reshape(-1, 3).tolist().count(list(green)) > 100  # the second, in its box


def test_labels_stay_in_the_picture():
    sizes = [(100, 20)] * 3
    boxes = [[0, 0, 50, 50], [600, 200, 640, 260], [10, 460, 60, 480]]
    top_edge, right_edge, bottom_corner = drawing.label_places(boxes, sizes, 640, 480)
    assert top_edge == (0, 0, 100, 20)  # inside the top of a box at the picture's top
    assert right_edge == (540, 180, 640, 200)  # moved left to fit
    assert bottom_corner == (10, 440, 110, 460)  # above its box
