"""The offline commands: detect (pictures, videos, standard input), fetch-model,
build-engine, check and compare. Each takes the parsed arguments and returns an exit status."""
import json
import logging
import os
import platform
import re
import sys
import time

import cv2

from drawing import draw_detections
from errors import EngineError, ModelError
from get_engine import auto_backends
from pictures import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, decoded_picture, files_in
from settings import detector_from_args
from sources.opencv_source import opencv_has_gstreamer, reported_fps
from sources.v4l2 import resolve_source
from tracking import Tracker
from yolo_tool import DEFAULT_MODEL, NAMED_MODELS, cache_dir, cached_model, resolve_model, result_record

log = logging.getLogger("streamdetect")

STANDARD_INPUT = "-"  # `detect -`: the picture piped in


def annotated_path(out, path, video=False):
    """Where `detect --out` writes the annotated copy of `path` (of a video: an MJPG AVI)."""
    stem, ext = os.path.splitext(os.path.basename(path)) if path != STANDARD_INPUT else ("stdin", "")
    if video:
        return os.path.join(out, stem + ".avi")
    return os.path.join(out, stem + (ext if ext.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".jpg"))


def files_named(paths, extensions):
    """The files a command reads: those given, and for a folder its files with these extensions
    in name order (others there are left out, as a folder --source does; not its subfolders).
    A folder with none stays as given, for its error."""
    inputs = []
    for path in paths:
        found = files_in(path, extensions) if os.path.isdir(path) else []
        inputs.extend(found or [path])
    return inputs


def cmd_detect(args):
    if args.images.count(STANDARD_INPUT) > 1:
        print("error: - (standard input) is given twice; it holds one picture", file=sys.stderr)
        return 2
    args.images = files_named(args.images, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    videos = {path for path in args.images if is_video(path)}
    if not any(path == STANDARD_INPUT or os.path.isfile(path) for path in args.images):
        for path in args.images:  # said before the model loads, which can take minutes (a download, a TensorRT build)
            print("error: {}: {}".format(path, why_not_an_image(path)), file=sys.stderr)
        return 1
    problem = args.out and out_folder_problem(args.out, args.images, videos)
    if problem:
        print("error: " + problem, file=sys.stderr)
        return 2
    detector = detector_from_args(args)
    failures = written = 0
    for path in args.images:
        if path in videos:
            target = annotated_path(args.out, path, True) if args.out else None
            failed = detect_video(detector, path, target)
            written += 1 if target and not failed and os.path.isfile(target) else 0
        else:
            failed, wrote = detect_picture(detector, path, args.out)
            written += wrote
        failures += failed
    if args.out:
        log.info("%d annotated cop%s written to %s", written, "y" if written == 1 else "ies", args.out)
    return 1 if failures else 0


def out_folder_problem(out, paths, videos):
    """Why `detect --out` cannot write the annotated copies of `paths` (a copy that would
    overwrite its input or another's copy, a folder that cannot be made), else None."""
    written_by = {}  # annotated copy -> its input
    for path in paths:
        target = os.path.abspath(annotated_path(out, path, path in videos))
        if target == os.path.abspath(path):
            return "--out {} would overwrite {} with its annotated copy; choose another folder".format(out, path)
        other = written_by.setdefault(target, path)
        if os.path.abspath(other) != os.path.abspath(path):
            return "{} and {} would both be written to {}; run them with separate --out folders".format(
                other, path, annotated_path(out, path, path in videos))
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        return "cannot create --out {}: {}".format(out, exc.strerror)
    return None


def detect_picture(detector, path, out):
    """`detect` for a picture (or standard input): its JSON line, and its annotated copy in
    `out` if given. (1 if it fails, else 0; 1 if a copy was written, else 0)."""
    if path == STANDARD_INPUT:
        frame, why_not = picture_from_standard_input()
    else:
        frame = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        why_not = why_not_an_image(path) if frame is None else ""
    if frame is None:
        print("error: {}: {}".format(path, why_not), file=sys.stderr)
        return 1, 0
    detections, inference_ms = detector.detect(frame)
    height, width = frame.shape[:2]
    print(json.dumps(result_record(path, width, height, detector.backend, inference_ms,
                                   detections)), flush=True)
    if not out:
        return 0, 0
    target = annotated_path(out, path)
    if cv2.imwrite(target, draw_detections(frame, detections, detector.colors)):
        return 0, 1
    print("error: {}: cannot write {}".format(path, target), file=sys.stderr)
    return 1, 0


def detect_video(detector, path, target):
    """`detect` for a video: one JSON line per frame (its number and time added, and each
    detection its object's id), and its annotated copy written to `target` (an MJPG AVI) if
    given; 1 if that fails, else 0."""
    capture = cv2.VideoCapture(path)
    fps = reported_fps(capture)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    writer, failed, index, noted_at = None, 0, 0, time.monotonic()
    tracker = Tracker()  # each object keeps its id from frame to frame, by the video's own clock
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            detections, inference_ms = detector.detect(frame)
            tracker.update(detections, index / fps, index)
            height, width = frame.shape[:2]
            record = result_record(path, width, height, detector.backend, inference_ms, detections)
            record.update(frame=index, time=round(index / fps, 3))
            print(json.dumps(record), flush=True)
            if target and writer is None and not failed:
                writer = cv2.VideoWriter(target, cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
                if not writer.isOpened():
                    print("error: {}: cannot write {}".format(path, target), file=sys.stderr)
                    writer, failed = None, 1
            if writer is not None:
                writer.write(draw_detections(frame, detections, detector.colors))
            index += 1
            if time.monotonic() - noted_at > 10:  # a long video takes minutes: say how far it is
                noted_at = time.monotonic()
                log.info("%s: frame %d%s", path, index, " of {}".format(total) if total else "")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return failed


def picture_from_standard_input():
    """(frame or None, why not) of `detect -`: a picture piped in, as from `curl -s URL`."""
    if sys.stdin is None or sys.stdin.isatty():
        return None, "standard input is a terminal; pipe a picture in (curl -s URL | python app.py detect -)"
    data = sys.stdin.buffer.read()
    if not data:
        return None, "standard input is empty (did the command before the | fail?)"
    frame = decoded_picture(data)
    return frame, "" if frame is not None else "standard input holds no image that can be read (a video must be a file)"


def why_not_an_image(path):
    """What `path` is, for `detect`'s one-line error about an image it cannot read."""
    if re.match(r"[a-z][a-z0-9+.-]*://", path, re.IGNORECASE):
        return ("detect reads files: for a camera or stream, run 'serve --source URL' and read /api/events; "
                "for a picture, pipe it in: curl -s URL | python app.py detect -")
    if not os.path.exists(path):
        return "no such file"
    if os.path.isdir(path):
        return "a folder with no images or videos ({})".format(" ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "an empty file (0 bytes; a copy or download that failed?)"
    if path.lower().endswith(VIDEO_EXTENSIONS):
        return "not a video OpenCV can read (damaged, or in a codec this OpenCV lacks)"
    return "not an image OpenCV can read"


def is_video(path):
    """Whether OpenCV reads `path` as a video (whose first frame it can decode) and not as an
    image, which it would also open as a video of one frame (a TIFF, say). A name an image has
    is not tried: FFmpeg would print its own complaint about a damaged one."""
    if path.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path):
        return False
    has_image_reader = getattr(cv2, "haveImageReader", None)  # reads the signature alone
    if has_image_reader(path) if has_image_reader else cv2.imread(path) is not None:
        return False
    capture = cv2.VideoCapture(path)
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


def cmd_fetch_model(args):
    path = resolve_model(args.model)
    print(path)
    return 0


def cmd_build_engine(args):
    args.backend = "tensorrt"
    detector = detector_from_args(args)
    detector.close()
    if not os.path.isfile(detector.engine.engine_path):
        raise EngineError("the engine was built but could not be saved to {} (the log says why)"
                          .format(detector.engine.engine_path))
    print(detector.engine.engine_path)
    return 0


def cmd_check(args):
    """What this machine offers, and what `auto` will use."""
    print("Python        {} ({})".format(platform.python_version(), platform.machine()))
    print("OpenCV        {} (GStreamer: {}, dnn: {})".format(
        cv2.__version__, "yes" if opencv_has_gstreamer() else "no", "yes" if hasattr(cv2, "dnn") else "no"))
    usable, reasons = auto_backends()
    for reason in reasons:
        print("backend       " + reason)
    cameras = sorted(path for path in os.listdir("/dev") if path.startswith("video")) if os.path.isdir("/dev") else []
    print("cameras       " + (", ".join("/dev/" + c for c in cameras) or "none at /dev/video*"))
    print("auto backend  " + (usable[0] if usable else "none: pip install onnxruntime"))
    print("auto source   " + resolve_source("auto"))
    try:
        print("model cache   " + cache_dir())
        path, state = cached_model(DEFAULT_MODEL)
        print("model         {} ({}): {}".format(DEFAULT_MODEL, path, {
            "missing": "not downloaded yet ({:.0f} MB, at the first start or by fetch-model)".format(
                NAMED_MODELS[DEFAULT_MODEL].size / 1e6),
            "incomplete": "incomplete, downloaded again at the next start (or by fetch-model)",
            "damaged": "damaged (its SHA-256 is not the model's), downloaded again at the next start",
            "verified": "present, SHA-256 verified"}[state]))
    except ModelError as exc:  # reported, as a backend that cannot run is
        print("model cache   " + str(exc))
    return 0
