"""`compare`: one model on each backend and precision, side by side: median inference time, the
largest raw-output difference from the first row, whether the detections are the same, and with
a labelled dataset each row's mAP@0.5, so "optimised against original" is one table."""
import json
import os
import sys

import cv2
import numpy as np

from commands import files_named, why_not_an_image
from datasets import read_dataset
from errors import EngineError, ModelError
from evaluate import score
from evaluation import EVALUATE_CONF
from get_engine import auto_backends
from pictures import IMAGE_EXTENSIONS
from settings import detector_from_args
from sources.synthetic import SyntheticSource


def cmd_compare(args):
    backends = args.backends.split(",") if args.backends else auto_backends()[0]
    precisions = [name.strip() for name in args.precision.split(",") if name.strip()]
    images = compared_images(args)
    rows = []
    for backend in backends:
        for precision in precisions:
            args.backend, args.precision = backend, precision
            try:
                rows.append(measure(args, images))
            except EngineError as exc:  # a pair this machine cannot run: said, and the others go on
                print("{} {}: {}".format(backend, precision, exc), file=sys.stderr)
    if not rows:
        raise EngineError("no backend and precision asked for can run here")
    reference = rows[0]
    report = [{"backend": row["backend"], "precision": row["precision"], "median_ms": round(row["median_ms"], 2),
               "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(row["outputs"], reference["outputs"])),
               "same_detections": row["found"] == reference["found"], "map50": row["map50"],
               "detail": row["detail"], "model_outputs": row["model_outputs"]} for row in rows]
    print(json.dumps(report) if args.json else table(report, reference))
    return 0 if all(row["same_detections"] for row in report) else 1


def compared_images(args):
    """(name, picture) of the images given (a folder: its images), else of test:// frames."""
    images = []
    for path in files_named(args.images, IMAGE_EXTENSIONS):
        image = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if image is None:
            raise ModelError("{}: {}".format(path, why_not_an_image(path)))
        images.append((path, image))
    if not images:
        source = SyntheticSource("test://")
        images = [("test://#{}".format(i), source.scene(1000.0 + i * 0.7)) for i in range(args.frames)]
    return images


def measure(args, images):
    """One backend and precision: its outputs, detections and median time on `images`, and its
    mAP@0.5 on --dataset."""
    detector = detector_from_args(args)
    try:
        outputs, found, times = [], [], []
        for _, image in images:
            for _ in range(args.repeat):
                output, inference_ms = detector.infer(image)
                times.append(inference_ms)
            outputs.append(output)
            height, width = image.shape[:2]
            found.append([(d.class_id, round(d.score, 3), [round(v) for v in d.box])
                          for d in detector.decode(output, (width, height))])
        map50 = None
        if args.dataset:  # at evaluate's --conf, so that the rows' figures are evaluate's
            map50 = score(detector, read_dataset(args.dataset, detector.labels), conf_threshold=EVALUATE_CONF)["map50"]
        return {"backend": detector.backend, "precision": detector.engine.precision, "outputs": outputs,
                "found": found, "median_ms": float(np.median(times)), "map50": map50,
                "detail": detector.engine.detail, "model_outputs": detector.output_problem or "in range"}
    finally:
        detector.close()


def table(report, reference):
    lines = ["{:<12} {:<9} {:>10} {:>14} {:>16} {:>7}  {}".format(
        "backend", "precision", "median ms", "max |diff|", "same detections", "mAP@.5", "engine")]
    for row in report:
        lines.append("{:<12} {:<9} {:>10.2f} {:>14.2e} {:>16} {:>7}  {}".format(
            row["backend"], row["precision"], row["median_ms"], row["max_abs_diff"],
            "yes" if row["same_detections"] else "NO", "-" if row["map50"] is None else "{:.3f}".format(row["map50"]),
            row["detail"]))
        if row["model_outputs"] != "in range":
            lines.append("{:<12} {}".format("", row["model_outputs"]))
    lines.append("(differences and detections against the first row: {} {})".format(
        reference["backend"], reference["precision"]))
    return "\n".join(lines)
