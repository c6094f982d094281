"""streamdetect: live Tiny YOLOv2 detection streamed to browsers.

This file is the command line (`python app.py --help`), the Flask app factory
and the WSGI callable `app` that uWSGI serves.
"""
import argparse
import json
import logging
import os
import sys

import cv2

from get_engine import BACKENDS, EngineError, ModelError
from yolo_tool import DEFAULT_MODEL, NAMED_MODELS, Detector, draw_detections, parse_anchors, \
    read_labels, resolve_model

log = logging.getLogger("streamdetect")

USER_ERRORS = (ModelError, EngineError)


def env(name, default):
    """A setting's default: $STREAMDETECT_<NAME> when set, else `default`."""
    return os.environ.get("STREAMDETECT_" + name, default)


def add_model_options(parser):
    group = parser.add_argument_group("model (each also read from $STREAMDETECT_<OPTION>)")
    group.add_argument("--model", default=env("MODEL", DEFAULT_MODEL),
                       help="ONNX file, or a known name ({}); default %(default)s, downloaded on "
                            "first use".format(", ".join(sorted(NAMED_MODELS))))
    group.add_argument("--backend", choices=BACKENDS, default=env("BACKEND", "auto"),
                       help="inference engine; auto picks the best one here and logs why "
                            "(default %(default)s)")
    group.add_argument("--labels", default=env("LABELS", None),
                       help="file with one class label per line (default: VOC's 20 labels)")
    group.add_argument("--anchors", default=env("ANCHORS", None),
                       help="anchor sizes 'w1,h1,w2,h2,...' in grid cells (default: VOC anchors)")
    group.add_argument("--input-scale", type=float, default=env("INPUT_SCALE", None),
                       help="multiplier from 0-255 pixels to the model's input range "
                            "(1 for the zoo model, 0.00392 for models trained on 0-1)")
    group.add_argument("--conf", type=float, default=float(env("CONF", 0.5)),
                       help="confidence threshold, 0-1 (default %(default)s)")
    group.add_argument("--iou", type=float, default=float(env("IOU", 0.45)),
                       help="per-class NMS IoU threshold, 0-1 (default %(default)s)")


def detector_from_args(args):
    """Build the Detector the model options describe."""
    for name in ("conf", "iou"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ModelError("--{} must be between 0 and 1".format(name))
    return Detector(
        model=args.model,
        backend=args.backend,
        labels=read_labels(args.labels) if args.labels else None,
        anchors=parse_anchors(args.anchors) if args.anchors else None,
        input_scale=args.input_scale,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
    )


def result_record(image, width, height, backend, inference_ms, detections):
    """The JSON object `detect` prints and /api/detect returns."""
    return {"image": image, "width": width, "height": height, "backend": backend,
            "inference_ms": round(inference_ms, 2), "detections": [d.to_dict() for d in detections]}


def cmd_detect(args):
    detector = detector_from_args(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    failures = 0
    for path in args.images:
        frame = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if frame is None:
            reason = "no such file" if not os.path.exists(path) else "not an image OpenCV can read"
            print("error: {}: {}".format(path, reason), file=sys.stderr)
            failures += 1
            continue
        detections, inference_ms = detector.detect(frame)
        height, width = frame.shape[:2]
        print(json.dumps(result_record(path, width, height, detector.backend, inference_ms,
                                       detections)), flush=True)
        if args.out:
            stem, ext = os.path.splitext(os.path.basename(path))
            ext = ext if ext.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".jpg"
            cv2.imwrite(os.path.join(args.out, stem + ext),
                        draw_detections(frame, detections, detector.colors))
    return 1 if failures else 0


def cmd_fetch_model(args):
    path = resolve_model(args.model)
    print(path)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Live object detection (Tiny YOLOv2) streamed to browsers. "
                    "With no command, 'serve' runs.")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"),
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default %(default)s")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    detect = commands.add_parser(
        "detect", help="detect objects in image files, print one JSON line per image",
        description="Detect objects in still images. Prints one JSON object per image "
                    "(image, width, height, backend, inference_ms, detections) and writes "
                    "annotated copies with --out. Unreadable files are reported on stderr "
                    "and make the exit status 1.")
    detect.add_argument("images", nargs="+", metavar="IMAGE")
    detect.add_argument("--out", metavar="DIR", help="write annotated images here")
    add_model_options(detect)
    detect.set_defaults(handler=cmd_detect)

    fetch = commands.add_parser(
        "fetch-model", help="download and verify the model, print its path",
        description="Download a named model into the cache ($STREAMDETECT_HOME, else "
                    "$XDG_CACHE_HOME/streamdetect), verify its SHA-256 and print its path.")
    fetch.add_argument("--model", default=env("MODEL", DEFAULT_MODEL),
                       help="model name (default %(default)s)")
    fetch.set_defaults(handler=cmd_fetch_model)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
