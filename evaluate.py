"""`evaluate DATASET`: how good the model is on the user's own labelled pictures. Its detections
are those `detect` gives with the same options; the scores are COCO's (evaluation.py)."""
import json
import logging
import os
import sys
import time

import cv2
import numpy as np

from commands import why_not_an_image
from datasets import in_pixels, read_dataset
from evaluation import average_precision, summarise
from settings import detector_from_args

log = logging.getLogger("streamdetect")


def cmd_evaluate(args):
    detector = detector_from_args(args)
    samples = read_dataset(args.dataset, detector.labels, args.images)
    report = score(detector, samples)
    detector.close()
    print(json.dumps(report) if args.json else table(report))
    return 0 if report["images"] else 1


def score(detector, samples, **decode_options):
    """The report of `detector` on `samples`: mAP@0.5, mAP, per class AP@0.5, AP and objects,
    the pictures read, the backend, precision and model. Unreadable pictures are told and left out.
    `decode_options` as for Detector.decode (compare's conf_threshold)."""
    labels = detector.labels
    pictures = {label: [] for label in labels}  # label -> (scores, boxes, truths, ignore) of each picture
    objects = dict.fromkeys(labels, 0)
    read, noted_at = 0, time.monotonic()
    for number, sample in enumerate(samples, 1):
        image = cv2.imread(sample.path, cv2.IMREAD_COLOR) if os.path.isfile(sample.path) else None
        if image is None:
            print("error: {}: {}; left out".format(sample.path, why_not_an_image(sample.path)), file=sys.stderr)
            continue
        read += 1
        height, width = image.shape[:2]
        truths = in_pixels(sample, width, height)
        detections, _ = detector.detect(image, **decode_options)
        for label in labels:
            found = [d for d in detections if d.label == label]
            own = [truth for truth in truths if truth.label == label]
            objects[label] += sum(1 for truth in own if not truth.ignore)
            pictures[label].append((np.array([d.score for d in found], dtype=np.float64),
                                    np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4),
                                    np.array([truth.box for truth in own], dtype=np.float64).reshape(-1, 4),
                                    np.array([truth.ignore for truth in own], dtype=bool)))
        if time.monotonic() - noted_at > 10 or number == len(samples):  # a large dataset takes minutes
            noted_at = time.monotonic()
            log.info("evaluate: %d of %d pictures", number, len(samples))
    report = summarise({label: average_precision(pictures[label]) for label in labels})
    for label, row in report["per_class"].items():
        row["objects"] = objects[label]
    report.update(images=read, backend=detector.backend, precision=detector.engine.precision,
                  model=detector.model_name)
    return report


def table(report):
    """The report as a table for people: a line per class, then the means."""
    lines = ["{:<16} {:>8} {:>8} {:>12}".format("class", "AP@0.5", "AP", "objects")]
    for label, row in report["per_class"].items():
        lines.append("{:<16} {:>8.3f} {:>8.3f} {:>12}".format(label, row["ap50"], row["ap"], row["objects"]))
    lines.append("{:<16} {:>8.3f} {:>8.3f} {:>12}".format("mAP", report["map50"], report["map"],
                                                          "{} images".format(report["images"])))
    lines.append("({} on {}, {})".format(report["model"], report["backend"], report["precision"]))
    return "\n".join(lines)
