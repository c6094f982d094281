"""Average precision as COCO defines it (and pycocotools computes it): per class, detections
matched to labelled objects at IoU thresholds 0.50 to 0.95, 101-point interpolated precision,
at most 100 detections per picture and class, objects of all sizes; ignored objects (VOC's
difficult, COCO's crowds) are neither found nor missed, and may be matched by any number of
detections, by the share of the detection they cover."""
import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100
# The confidence threshold of evaluate (unless given) and of compare's mAP: every detection counts
# toward the precision-recall curve.
EVALUATE_CONF = 0.001


def overlaps(detections, truths, ignore):
    """IoU of every detection (rows) with every object (columns), boxes [x1, y1, x2, y2]; for an
    ignored object, the share of the detection it covers."""
    if not len(detections) or not len(truths):
        return np.zeros((len(detections), len(truths)))
    d, t = detections[:, None, :], truths[None, :, :]
    inter = (np.clip(np.minimum(d[..., 2], t[..., 2]) - np.maximum(d[..., 0], t[..., 0]), 0, None)
             * np.clip(np.minimum(d[..., 3], t[..., 3]) - np.maximum(d[..., 1], t[..., 1]), 0, None))
    detection_area = (d[..., 2] - d[..., 0]) * (d[..., 3] - d[..., 1])
    union = detection_area + (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1]) - inter
    union = np.where(ignore[None, :], detection_area, union)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(scores, boxes, truths, ignore):
    """One picture and class: (the detections' scores, best first and at most MAX_DETECTIONS,
    matched: thresholds x detections, ignored: thresholds x detections)."""
    order = np.argsort(-scores, kind="mergesort")[:MAX_DETECTIONS]
    scores, boxes = scores[order], boxes[order]
    by_ignore = np.argsort(ignore, kind="mergesort")  # objects that count first
    truths, ignore = truths[by_ignore], ignore[by_ignore]
    ious = overlaps(boxes, truths, ignore)
    matched = np.zeros((len(IOU_THRESHOLDS), len(scores)), dtype=bool)
    ignored = np.zeros_like(matched)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(len(truths), dtype=bool)
        for d in range(len(scores)):
            best, best_iou = -1, min(threshold, 1 - 1e-10)
            for g in range(len(truths)):
                if taken[g] and not ignore[g]:
                    continue
                if best > -1 and not ignore[best] and ignore[g]:
                    break  # a match with an object that counts beats any ignored one
                if ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best > -1:
                matched[t, d], ignored[t, d], taken[best] = True, ignore[best], True
    return scores, matched, ignored


def average_precision(pictures):
    """AP per IoU threshold (an array of 10) of one class over `pictures`, each (scores, boxes,
    truths, ignore) as arrays; None where the class has no object that counts."""
    counted = sum(int(np.count_nonzero(~ignore)) for _, _, _, ignore in pictures)
    if not counted:
        return None
    results = [match(*picture) for picture in pictures if len(picture[0]) or len(picture[2])]
    scores = np.concatenate([result[0] for result in results])
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([result[1] for result in results], axis=1)[:, order]
    ignored = np.concatenate([result[2] for result in results], axis=1)[:, order]
    true_positives = np.cumsum(matched & ~ignored, axis=1)
    false_positives = np.cumsum(~matched & ~ignored, axis=1)
    precisions = []
    for tp, fp in zip(true_positives, false_positives):
        recall = tp / counted
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or more
        at = np.searchsorted(recall, RECALL_POINTS, side="left")
        interpolated = np.zeros(len(RECALL_POINTS))
        reached = at < len(precision)
        interpolated[reached] = precision[at[reached]]
        precisions.append(interpolated.mean())
    return np.array(precisions)


def summarise(per_class):
    """{"map50", "map", "per_class": {label: {"ap50", "ap"}}} from {label: AP per threshold or None}:
    the means over the classes that have objects that count."""
    scored = {label: ap for label, ap in per_class.items() if ap is not None}
    table = {label: {"ap50": round(float(ap[0]), 4), "ap": round(float(ap.mean()), 4)}
             for label, ap in sorted(scored.items())}
    if not scored:
        return {"map50": 0.0, "map": 0.0, "per_class": table}
    stacked = np.array(list(scored.values()))
    return {"map50": round(float(stacked[:, 0].mean()), 4), "map": round(float(stacked.mean()), 4),
            "per_class": table}
