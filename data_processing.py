"""Pre- and post-processing for Tiny YOLOv2, as pure vectorised NumPy.

Kept free of any engine or camera so that decoding can be tested with hand-made
tensors and timed on its own (the goal is well under a millisecond per frame).
"""
import cv2
import numpy as np


def preprocess(frame_bgr, input_hw, scale=1.0):
    """BGR frame -> float32 NCHW RGB blob of the model's size, pixels times `scale`."""
    height, width = input_hw
    resized = cv2.resize(frame_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    blob = np.empty((1, 3, height, width), dtype=np.float32)
    # Plane by plane (B, G, R into RGB order): contiguous copies, about half the time
    # of converting one strided, channel-reversed transpose; a plain copy when the
    # scale is 1 (the zoo model), which takes half the time of a multiplication.
    for channel, plane in enumerate(cv2.split(resized)):
        if scale == 1.0:
            blob[0, 2 - channel] = plane
        else:
            np.multiply(plane, np.float32(scale), out=blob[0, 2 - channel], casting="unsafe")
    return blob


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# Up to this share of the cells passing on objectness alone (a real model's scene:
# a handful of the 845), the candidates are gathered and scored; beyond (random
# weights, a low --conf), scoring every cell in place costs less (docs/design.md).
GATHER_SHARE = 0.2


def best_class_scores(channels):
    """sigmoid(to) times the best class's softmax, for channels on axis 1 (tx, ty, tw, th,
    to, then the class logits): that softmax is exp(0) / sum(exp(logits - best logit)),
    so no full softmax is needed."""
    logits = channels[:, 5:]
    return sigmoid(channels[:, 4]) / np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)


def decode_region(grid, anchors, conf_threshold):
    """Decode a Darknet region-layer output (1, A*(5+C), gh, gw).

    Channels are anchor-major: channel a*(5+C)+k holds tx, ty, tw, th, to,
    then C class logits. Returns (boxes, scores, class_ids) for every cell and
    anchor whose best class score reaches `conf_threshold`; boxes are
    normalised [x1, y1, x2, y2] (0..1 of the image, not yet clipped).
    score = sigmoid(to) * softmax(class logits)[best].
    """
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 2)
    num_anchors = anchors.shape[0]
    _, channels, grid_h, grid_w = grid.shape
    num_classes = channels // num_anchors - 5
    cells = grid.reshape(num_anchors, 5 + num_classes, grid_h, grid_w)

    # The class softmax is at most 1, so sigmoid(to) bounds the score: only the cells
    # whose raw objectness reaches logit(threshold) can pass.
    objectness_logits = cells[:, 4]
    if conf_threshold <= 0.0:
        candidates = np.ones(objectness_logits.shape, dtype=bool)
    elif conf_threshold >= 1.0:
        candidates = np.zeros(objectness_logits.shape, dtype=bool)
    else:
        candidates = objectness_logits >= np.log(conf_threshold / (1.0 - conf_threshold))
    count = np.count_nonzero(candidates)
    if count == 0:
        empty = np.zeros((0,), dtype=np.float32)
        return np.zeros((0, 4), dtype=np.float32), empty, np.zeros((0,), dtype=np.int64)

    # Scores first, boxes only for the candidates that pass.
    if count <= candidates.size * GATHER_SHARE:
        anchor_idx, rows, cols = np.nonzero(candidates)
        picked = cells[anchor_idx, :, rows, cols].astype(np.float32)  # (n, 5 + C)
        scores = best_class_scores(picked)
        keep = scores >= conf_threshold
        picked, scores, anchor_idx, rows, cols = picked[keep], scores[keep], anchor_idx[keep], rows[keep], cols[keep]
    else:
        cells = cells.astype(np.float32, copy=False)
        every_score = best_class_scores(cells)  # (A, gh, gw)
        anchor_idx, rows, cols = np.nonzero((every_score >= conf_threshold) & candidates)
        picked = cells[anchor_idx, :, rows, cols]
        scores = every_score[anchor_idx, rows, cols]
    class_ids = picked[:, 5:].argmax(axis=1)

    centre_x = (cols + sigmoid(picked[:, 0])) / grid_w
    centre_y = (rows + sigmoid(picked[:, 1])) / grid_h
    half_w = np.exp(picked[:, 2]) * anchors[anchor_idx, 0] / grid_w / 2.0
    half_h = np.exp(picked[:, 3]) * anchors[anchor_idx, 1] / grid_h / 2.0
    boxes = np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=1)
    return boxes.astype(np.float32), scores.astype(np.float32), class_ids


def pairwise_iou(boxes):
    """IoU of every pair of [x1, y1, x2, y2] rows, as an n x n matrix."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    inter_w = np.clip(np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]), 0, None)
    inter_h = np.clip(np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]), 0, None)
    inter = inter_w * inter_h
    areas = (x2 - x1) * (y2 - y1)
    union = areas[:, None] + areas[None] - inter
    return inter / np.maximum(union, 1e-12)


# Up to this many candidates one IoU matrix for all classes is the faster (fewest
# NumPy calls); beyond, one matrix per class (a twentieth of the pairs with 20
# classes; docs/design.md has the timings).
ONE_MATRIX_MAX = 160


def nms_per_class(boxes, scores, class_ids, iou_threshold):
    """Greedy NMS within each class; indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= ONE_MATRIX_MAX:
        # Boxes of different classes shifted apart by more than their extent never overlap.
        extent = float(np.abs(boxes).max()) + 1.0 if len(order) else 0.0
        boxes = boxes + (class_ids.astype(np.float32) * 2.0 * extent)[:, None]
        groups = [order]
    else:
        groups = [order[class_ids[order] == class_id] for class_id in np.unique(class_ids)]
    kept = np.zeros(len(scores), dtype=bool)
    for members in groups:  # each best first
        overlaps = pairwise_iou(boxes[members]) > iou_threshold
        suppressed = np.zeros(len(members), dtype=bool)
        for position, index in enumerate(members):
            if not suppressed[position]:
                kept[index] = True
                suppressed |= overlaps[position]
    return order[kept[order]]


# A box more than this many images wide or high is no prediction but an output out of range.
MAX_BOX_SIDE = 4.0


def postprocess(grid, anchors, image_size, conf_threshold=0.5, iou_threshold=0.45, class_filter=None,
                problems=None):
    """Model output -> (boxes in image pixels clipped to the image, at least a pixel a side,
    scores, class_ids), of the classes in `class_filter` only when one is given (before NMS,
    which is per class anyway, so that no other class costs it time).

    Candidates out of range (not finite, or over MAX_BOX_SIDE images a side: a broken export,
    an FP16 engine that overflowed) are left out, and with `problems`, a list, what was out
    of range is appended to it."""
    width, height = image_size
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range outputs are told once, not per frame
        if problems is not None and not np.isfinite(grid).all():
            problems.append("values that are not numbers or infinite")
        boxes, scores, class_ids = decode_region(grid, anchors, conf_threshold)
        if not len(scores):  # most frames of a quiet scene: none of the NMS and scaling below
            return boxes, scores, class_ids
        too_large = ((boxes[:, 2:] - boxes[:, :2]) > MAX_BOX_SIDE).any(axis=1)
        sane = np.isfinite(boxes).all(axis=1) & np.isfinite(scores) & ~too_large
    if too_large.any() and problems is not None:
        problems.append("boxes over {:g} images a side".format(MAX_BOX_SIDE))
    if class_filter is not None:
        sane &= np.isin(class_ids, class_filter)
    boxes, scores, class_ids = boxes[sane], scores[sane], class_ids[sane]
    keep = nms_per_class(boxes, scores, class_ids, iou_threshold)
    boxes = boxes[keep] * np.array([width, height, width, height], dtype=np.float32)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    visible = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
    return boxes[visible], scores[keep][visible], class_ids[keep][visible]
