"""Region-layer decoding checked against results worked out by hand.

Each case builds a model whose output is a known grid (tests/onnx_models.py
`constant_grid`), runs it through the whole Detector and compares the boxes
with the arithmetic written out below. Grid 13x13, VOC anchors, 20 classes.
"""
import math

import numpy as np
import pytest

import data_processing
import onnx_models
from yolo_tool import VOC_ANCHORS, Detector

PER_ANCHOR = 25  # 5 + 20 classes


def empty_grid():
    grid = np.zeros((125, 13, 13), dtype=np.float32)
    grid[4::PER_ANCHOR] = -20.0  # objectness ~0 everywhere
    return grid


def put_box(grid, anchor, row, col, tx=0.0, ty=0.0, tw=0.0, th=0.0, to=3.0, class_logits=None):
    base = anchor * PER_ANCHOR
    grid[base:base + 5, row, col] = [tx, ty, tw, th, to]
    grid[base + 5:base + 25, row, col] = 0.0
    for class_id, logit in (class_logits or {}).items():
        grid[base + 5 + class_id, row, col] = logit


def detect(tmp_path, grid, width=832, height=416, **kwargs):
    model = onnx_models.constant_grid(tmp_path / "grid.onnx", grid)
    detector = Detector(model, backend="onnxruntime", **kwargs)
    detections, _ = detector.detect(np.zeros((height, width, 3), dtype=np.uint8))
    return detections


def test_box_in_known_cell_and_anchor(tmp_path):
    grid = empty_grid()
    put_box(grid, anchor=1, row=4, col=6, tw=math.log(2.0), to=3.0, class_logits={7: 5.0})
    [det] = detect(tmp_path, grid)
    # centre x = (6 + sigmoid(0)) / 13 = 0.5 -> 416 px of 832; centre y = 4.5 / 13 * 416 = 144 px
    # width = e^ln2 * 3.42 / 13 * 832 = 437.76 px; height = e^0 * 4.41 / 13 * 416 = 141.12 px
    assert det.box == pytest.approx([197.12, 73.44, 634.88, 214.56], abs=0.01)
    # score = sigmoid(3) * e^5 / (e^5 + 19 * e^0) = 0.952574 * 0.886511 = 0.844467
    assert det.score == pytest.approx(0.844467, abs=1e-5)
    assert (det.class_id, det.label) == (7, "cat")


def test_overlapping_boxes_of_one_class_keep_the_best(tmp_path):
    grid = empty_grid()
    # two boxes 4 cells wide, one cell apart: IoU = 3 / 5 = 0.6 > 0.45
    put_box(grid, anchor=0, row=6, col=6, tw=math.log(4 / 1.08), to=4.0, class_logits={14: 8.0})
    put_box(grid, anchor=0, row=6, col=7, tw=math.log(4 / 1.08), to=2.0, class_logits={14: 8.0})
    detections = detect(tmp_path, grid, width=416, height=416)
    assert len(detections) == 1
    # the kept one is the stronger (col 6): centre 6.5 * 32 = 208 px, width 4 * 32 = 128 px
    assert detections[0].box[0] == pytest.approx(144.0, abs=0.01)
    assert detections[0].box[2] == pytest.approx(272.0, abs=0.01)


def test_overlapping_boxes_of_different_classes_are_both_kept(tmp_path):
    grid = empty_grid()
    put_box(grid, anchor=0, row=6, col=6, tw=math.log(4 / 1.08), to=4.0, class_logits={14: 8.0})
    put_box(grid, anchor=0, row=6, col=7, tw=math.log(4 / 1.08), to=2.0, class_logits={11: 8.0})
    detections = detect(tmp_path, grid, width=416, height=416)
    assert sorted(d.label for d in detections) == ["dog", "person"]
    # the second box: centre 7.5 * 32 = 240 px, 128 px wide
    dog = [d for d in detections if d.label == "dog"][0]
    assert dog.box[0] == pytest.approx(176.0, abs=0.01)


def test_a_class_filter_keeps_its_classes_and_their_suppression(tmp_path):
    grid = empty_grid()
    put_box(grid, anchor=0, row=6, col=6, tw=math.log(4 / 1.08), to=4.0, class_logits={14: 8.0})
    put_box(grid, anchor=0, row=6, col=7, tw=math.log(4 / 1.08), to=2.0, class_logits={11: 8.0})
    put_box(grid, anchor=0, row=6, col=8, tw=math.log(4 / 1.08), to=3.0, class_logits={11: 8.0})
    [dog] = detect(tmp_path, grid, width=416, height=416, classes=["dog"])
    assert dog.label == "dog" and dog.box[0] == pytest.approx(208.0, abs=0.01)  # the stronger, col 8
    assert sorted(d.label for d in detect(tmp_path, grid, width=416, height=416)) == ["dog", "person"]


def test_box_past_the_image_edge_is_clipped(tmp_path):
    grid = empty_grid()
    # bottom-right cell, anchor 4 (16.62 x 10.52 cells): reaches far past the edge
    put_box(grid, anchor=4, row=12, col=12, to=5.0, class_logits={6: 9.0})
    [det] = detect(tmp_path, grid, width=640, height=480)
    # centre x = 12.5 / 13 * 640 = 615.38; x1 = 615.38 - 16.62 / 2 / 13 * 640 = 206.28
    # centre y = 12.5 / 13 * 480 = 461.54; y1 = 461.54 - 10.52 / 2 / 13 * 480 = 267.32
    assert det.box == pytest.approx([206.28, 267.32, 640.0, 480.0], abs=0.02)


def test_softmax_not_sigmoid_scores_the_classes(tmp_path):
    grid = empty_grid()
    # two classes tie at logit 4: softmax gives each e^4 / (2 e^4 + 18) = 54.598 / 127.196 = 0.429243
    # (a sigmoid would give 0.98201 and pass the 0.5 threshold)
    put_box(grid, anchor=2, row=3, col=3, to=5.0, class_logits={0: 4.0, 1: 4.0})
    assert detect(tmp_path, grid) == []
    [det] = detect(tmp_path, grid, conf_threshold=0.3)
    # score = sigmoid(5) * 0.429243 = 0.993307 * 0.429243 = 0.426370; the first of a tie wins
    assert det.score == pytest.approx(0.426370, abs=1e-5)
    assert det.class_id == 0


@pytest.mark.parametrize("objectness_shift", [-3.0, 2.0])
def test_decoding_matches_scoring_cell_by_cell(objectness_shift):
    """Few candidates (a real scene) are gathered and scored, many (random weights, a low
    --conf) scored in place: both must give, cell by cell, sigmoid(to) times the best
    class's softmax, and the box of that cell and anchor."""
    random = np.random.RandomState(7)
    grid = (random.randn(125, 13, 13) * 2).astype(np.float32)
    grid[4::PER_ANCHOR] += objectness_shift
    many = (grid[4::PER_ANCHOR] >= 0).mean() > data_processing.GATHER_SHARE
    assert many == (objectness_shift > 0)  # each case takes its own path

    def sigmoid(x):
        return 1.0 / (1.0 + math.exp(-x))
    expected = []
    for anchor, (anchor_w, anchor_h) in enumerate(np.reshape(VOC_ANCHORS, (-1, 2))):
        for row in range(13):
            for col in range(13):
                tx, ty, tw, th, to = grid[anchor * PER_ANCHOR:anchor * PER_ANCHOR + 5, row, col].astype(float)
                logits = grid[anchor * PER_ANCHOR + 5:(anchor + 1) * PER_ANCHOR, row, col].astype(float)
                softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                score = sigmoid(to) * softmax.max()
                if score >= 0.5:
                    centre_x, centre_y = (col + sigmoid(tx)) / 13, (row + sigmoid(ty)) / 13
                    half_w, half_h = math.exp(tw) * anchor_w / 26, math.exp(th) * anchor_h / 26
                    expected.append((score, softmax.argmax(),
                                     [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h]))
    boxes, scores, class_ids = data_processing.decode_region(grid[None], VOC_ANCHORS, 0.5)
    assert len(expected) >= 5
    assert scores.tolist() == pytest.approx([score for score, _, _ in expected], rel=1e-5)
    assert class_ids.tolist() == [class_id for _, class_id, _ in expected]
    assert boxes.ravel().tolist() == pytest.approx([v for _, _, box in expected for v in box], rel=1e-5, abs=1e-6)


def test_nothing_above_threshold_gives_no_boxes():
    boxes, scores, classes = data_processing.postprocess(
        empty_grid()[None], VOC_ANCHORS, (640, 480))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


def test_nms_keeps_best_first_and_respects_classes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.7], dtype=np.float32)
    classes = np.array([0, 0, 1, 0])
    # box 1 (0.9) suppresses box 0 (IoU 9/11); box 2 is another class; box 3 is apart
    assert data_processing.nms_per_class(boxes, scores, classes, 0.45).tolist() == [1, 2, 3]


@pytest.mark.parametrize("count", [0, 1, 40, 500])
def test_nms_matches_greedy_suppression_by_hand(count):
    """Few candidates share one IoU matrix, many get one per class: both must give
    what suppressing box by box, best first, within each class gives."""
    random = np.random.RandomState(count)
    corners = random.rand(count, 2) * 0.8
    boxes = np.hstack([corners, corners + random.rand(count, 2) * 0.3]).astype(np.float32)
    scores = random.rand(count).astype(np.float32)
    classes = random.randint(0, 20, count)

    def iou(a, b):
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    expected = []
    for index in sorted(range(count), key=lambda i: -scores[i]):
        if all(classes[k] != classes[index] or iou(boxes[k], boxes[index]) <= 0.45 for k in expected):
            expected.append(index)
    assert data_processing.nms_per_class(boxes, scores, classes, 0.45).tolist() == expected
    if count > data_processing.ONE_MATRIX_MAX:
        assert len(expected) < count  # some were suppressed: the test can tell


def test_preprocess_gives_rgb_nchw_at_the_model_scale():
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, :] = (10, 20, 200)  # BGR: red
    frame[:240] = (250, 0, 0)  # top half blue
    blob = data_processing.preprocess(frame, (416, 320), scale=0.5)
    assert blob.shape == (1, 3, 416, 320) and blob.dtype == np.float32
    assert blob[0, :, 300, 100].tolist() == [100.0, 10.0, 5.0]  # R, G, B of the red half, halved
    assert blob[0, :, 50, 100].tolist() == [0.0, 0.0, 125.0]  # the blue half
    unscaled = data_processing.preprocess(frame, (416, 320))
    assert unscaled.dtype == np.float32 and unscaled[0, :, 300, 100].tolist() == [200.0, 20.0, 10.0]


def test_outputs_out_of_range_give_no_absurd_box_and_are_told_once(tmp_path, caplog):
    """A broken export or an FP16 engine that overflowed: sizes whose exp() is infinite, values
    that are no numbers. Before, they gave zero-area boxes, identical full-frame ones that NMS
    could not suppress (their areas inf or NaN) and a NumPy RuntimeWarning per frame."""
    import warnings
    grid = empty_grid()
    for col in range(13):  # a row of boxes as wide as exp(200) cells, one of -200: none is a box
        put_box(grid, anchor=0, row=3, col=col, tw=200.0, th=200.0, to=5.0, class_logits={2: 4.0})
        put_box(grid, anchor=1, row=5, col=col, tw=-200.0, th=-200.0, to=5.0, class_logits={3: 4.0})
    put_box(grid, anchor=2, row=8, col=2, to=5.0, class_logits={4: 4.0})
    grid[2 * PER_ANCHOR + 0, 8, 2] = np.nan  # a centre that is no number
    grid[3 * PER_ANCHOR + 4, 9, 9] = np.inf  # infinite objectness, and an infinite class logit
    grid[3 * PER_ANCHOR + 5 + 6, 9, 9] = np.inf
    put_box(grid, anchor=4, row=10, col=10, tw=math.log(2.0), to=4.0, class_logits={7: 6.0})  # a sound one
    model = onnx_models.constant_grid(tmp_path / "grid.onnx", grid)
    detector = Detector(model, backend="onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        for _ in range(3):
            detections, _ = detector.detect(np.zeros((416, 832, 3), dtype=np.uint8))
    assert [(d.class_id, d.label) for d in detections] == [(7, "cat")]
    boxes = np.array([d.box for d in detections])
    assert np.isfinite(boxes).all() and ((boxes[:, 2:] - boxes[:, :2]) >= 1).all()
    told = [r.getMessage() for r in caplog.records if "out of range" in r.getMessage()]
    assert len(told) == 1 and detector.output_problem in told[0]
    assert "boxes over 4 images a side" in told[0] and "values that are not numbers or infinite" in told[0]


def test_decoding_keeps_no_box_smaller_than_a_pixel_or_twice_the_same():
    grid = empty_grid()
    put_box(grid, anchor=0, row=6, col=6, tw=-12.0, th=-12.0, to=5.0, class_logits={1: 5.0})  # 0.0004 px
    for col, tx in ((4, 20.0), (5, -20.0)):  # the same box twice, of one class: NMS keeps one
        put_box(grid, anchor=4, row=6, col=col, tx=tx, tw=-1.0, th=-1.0, to=5.0, class_logits={1: 5.0})
    boxes, scores, class_ids = data_processing.postprocess(grid[None], VOC_ANCHORS, (416, 416))
    assert len(boxes) == 1 and (boxes[0, 2:] - boxes[0, :2] >= 1).all()
