"""streamdetect: live Tiny YOLOv2 detection streamed to browsers.

This file is the command line (`python app.py --help`), the Flask app factory
and the WSGI callable `app` that uWSGI serves.
"""
import argparse
import atexit
import base64
import collections
import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import cv2
import numpy as np

from camera import CAPTURE_LIMITS, FLIPS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Camera, SourceError, TooManyViewers, \
    encode_opencv, files_in, fitted, number_in_range, open_source, quiet_opencv, reported_fps, resolve_source
from get_engine import BACKENDS, PRECISIONS, EngineError, ModelError
from yolo_tool import DEFAULT_MODEL, NAMED_MODELS, Detection, Detector, cache_dir, cached_model, draw_detections, \
    parse_anchors, read_labels, resolve_model, slip_for

log = logging.getLogger("streamdetect")


class ServerSetupError(Exception):
    """`serve` cannot start (a tool missing, a port taken); the message says what to do."""


USER_ERRORS = (ModelError, EngineError, SourceError, ServerSetupError)
BOUNDARY = "frame"
# How long /snapshot.jpg and /api/detections wait for a paused (--idle-stop) pipeline's
# first frame: a camera reopens in about a second, a network stream in a few.
WAKE_SECONDS = 10.0
# Uploads handled at once, from decoding one to answering: the detector takes them one or
# two at a time anyway, and each can hold ~150 MB (a 40-megapixel picture decoded, then
# drawn on), so more at once would only put a 4 GB Jetson's memory at risk. Others wait
# their turn, this long at most.
UPLOADS_AT_ONCE = 2
UPLOAD_WAIT_SECONDS = 30.0
# /video_feed?fps=N: at least one part a second, so that a viewer who has gone is
# still found within about a second by a failed write.
VIEWER_FPS_LIMITS = (1.0, 240.0)
# A stream viewer's data the kernel may hold unsent (keep_send_queue_short): a fraction of a
# second on a 2 Mbit/s link, and no wait between the writes of a fast one.
UNSENT_BYTES = 32768
# /video_feed?viewer=NAME, /api/stats?viewer=NAME: a page's name for its stream
VIEWER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

# The query parameters each page reads, and those it refuses with its own reason (?conf= of
# the stream: the picture is drawn once for every viewer); ?token= goes everywhere. A name
# close to one of them (?class=, ?confidence=, ?annotated=) is refused, not ignored: a script
# would take every class for the ones it asked. Other names pass, as cache busters (?t=...) do.
QUERY_PARAMETERS = {
    "index": (("fps",), ()),
    "video_feed": (("fps", "viewer"), ("classes", "conf", "iou", "annotate")),
    "api_events": (("fps", "viewer", "classes", "conf"), ("iou",)),
    "snapshot": (("annotate",), ("classes", "conf", "iou")),
    "api_stats": (("viewer",), ()),
    "api_detections": (("classes", "conf"), ("iou",)),
    "api_detect": (("annotate", "classes", "conf", "iou"), ()),
    "upload": (("classes", "conf", "iou"), ()),
    "healthz": ((), ()),
    "metrics": ((), ()),
    "api_docs": ((), ()),
}

# The routes a script uses, in the order the /api page lists them, each with its line there
# (the parameters it takes come from QUERY_PARAMETERS, its methods from the app's routes).
API_ROUTES = (
    ("video_feed", "the annotated stream, multipart/x-mixed-replace (put it in an <img>); each part carries "
                   "X-Frame-Seq and X-Captured-At; fps caps this viewer's frames per second"),
    ("snapshot", "the latest annotated frame as a JPEG; annotate=0: the camera's picture alone"),
    ("api_detections", "the latest frame's detections as JSON; classes and conf keep this reader's share of them"),
    ("api_events", "the detections of every new frame as server-sent events (curl -N, or EventSource in a "
                   "browser), one data: line of JSON per frame"),
    ("api_stats", "state, FPS, inference time, frame counters, viewers, backend and model as JSON"),
    ("api_detect", "an image (multipart field image, or the raw body) -> its detections as JSON, or the "
                   "annotated JPEG with annotate=1"),
    ("healthz", "200 while frames flow, else 503 with the reason (no token needed)"),
    ("metrics", "the stats and the objects of each class in the latest frame, in Prometheus' text format"),
)
QUERY_NAMES = frozenset(name for reads, _ in QUERY_PARAMETERS.values() for name in reads) | {"token"}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class FromEnvironment(str):
    """A setting as an environment variable gave it, so that an error can name the variable."""

    def __new__(cls, value, variable):
        text = str.__new__(cls, value)
        text.variable = variable
        return text


# The $STREAMDETECT_<NAME> settings: those with no option, then each option's as env() and
# env_switch() are called while the parser is built.
ENVIRONMENT_SETTINGS = {"HOME", "MODEL_URL", "TOKEN"}


def env(name, default):
    """A setting's default: $STREAMDETECT_<NAME> when set, else `default`."""
    ENVIRONMENT_SETTINGS.add(name)
    variable = "STREAMDETECT_" + name
    return FromEnvironment(os.environ[variable], variable) if variable in os.environ else default


def env_switch(name):
    """An on/off setting's default: $STREAMDETECT_<NAME> as 1, true, yes, on or 0, false, no, off
    (any case; unset is off), else argparse's kind of one-line error: 'False' must not mean on."""
    ENVIRONMENT_SETTINGS.add(name)
    variable = "STREAMDETECT_" + name
    value = os.environ.get(variable, "")
    word = value.strip().lower()
    if word in ("", "0", "false", "no", "off"):
        return False
    if word in ("1", "true", "yes", "on"):
        return True
    print("python app.py: error: ${}='{}' is neither 1, true, yes, on nor 0, false, no, off".format(variable, value),
          file=sys.stderr)
    sys.exit(2)


def quoted(text):
    """'text', and the variable it came from when it came from the environment."""
    return "'{}'{}".format(text, " (from ${})".format(text.variable) if isinstance(text, FromEnvironment) else "")


def ranged(kind, low, high=None):
    """An argparse type: a `kind` (int or float) from `low` to `high` (None: no limit)."""
    def parse(text):
        value = number_in_range(text, kind, low, high)
        if value is None:
            raise argparse.ArgumentTypeError("{} is not a {} {}".format(
                quoted(text), "whole number" if kind is int else "number",
                "of {} or more".format(low) if high is None else "from {} to {}".format(low, high)))
        return value
    return parse


def origins(text):
    """--cors-origins: 'https://a.example, http://b.example:3000/' -> the origins as a browser
    sends them; '*' for any."""
    found = [name.rstrip("/") for name in listed_names(text)]
    for name in found:
        if name != "*" and not re.match(r"^https?://[^/\s]+$", name):
            raise argparse.ArgumentTypeError("'{}' is not an origin like https://dash.example:3000 (or *){}".format(
                name, " (in ${})".format(text.variable) if isinstance(text, FromEnvironment) else ""))
    return found


def one_of(choices):
    """An argparse type for an option with `choices`: argparse checks those on the
    command line only, not in a default taken from the environment."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError("{} is not one of {}".format(quoted(text), ", ".join(choices)))
        return str(text)
    return parse


count = ranged(int, 0)
port_number = ranged(int, 1, 65535)


def add_model_options(parser):
    group = parser.add_argument_group("model (each also read from $STREAMDETECT_<OPTION>)")
    group.add_argument("--model", type=os.path.expanduser, default=env("MODEL", DEFAULT_MODEL),
                       help="ONNX file, or a known name ({}); default %(default)s, downloaded on "
                            "first use".format(", ".join(sorted(NAMED_MODELS))))
    group.add_argument("--backend", choices=BACKENDS, type=one_of(BACKENDS), default=env("BACKEND", "auto"),
                       help="inference engine; auto picks the best one here and logs why "
                            "(default %(default)s)")
    group.add_argument("--labels", type=os.path.expanduser, default=env("LABELS", None),
                       help="file with one class label per line (default: VOC's 20 labels)")
    group.add_argument("--anchors", default=env("ANCHORS", None),
                       help="anchor sizes 'w1,h1,w2,h2,...' in grid cells (default: VOC anchors)")
    group.add_argument("--input-scale", type=ranged(float, 0.0001, 255.0), default=env("INPUT_SCALE", None),
                       help="multiplier from 0-255 pixels to the model's input range "
                            "(1 for the zoo model, 0.00392 for models trained on 0-1)")
    group.add_argument("--precision", choices=PRECISIONS, type=one_of(PRECISIONS), default=env("PRECISION", "auto"),
                       help="TensorRT precision; auto = fp16 where the GPU has fast FP16, else fp32 "
                            "(default %(default)s)")
    group.add_argument("--workspace-mb", type=ranged(int, 1), default=env("WORKSPACE_MB", 256),
                       help="TensorRT builder workspace in MB (default %(default)s)")
    group.add_argument("--calibration-images", type=os.path.expanduser, default=env("CALIBRATION_IMAGES", None),
                       metavar="DIR",
                       help="TensorRT --precision int8: folder of typical images to calibrate with")
    group.add_argument("--conf", type=ranged(float, 0.0, 1.0), default=env("CONF", 0.5),
                       help="confidence threshold, 0-1 (default %(default)s)")
    group.add_argument("--iou", type=ranged(float, 0.0, 1.0), default=env("IOU", 0.45),
                       help="per-class NMS IoU threshold, 0-1 (default %(default)s)")
    group.add_argument("--classes", default=env("CLASSES", None), metavar="LABEL,LABEL",
                       help="report only these classes, e.g. person,car (default: all)")


def detector_from_args(args):
    """Build the Detector the model options describe."""
    in_flight = getattr(args, "frames_in_flight", 1)  # only the server runs frames side by side
    detector = Detector(
        model=args.model,
        backend=args.backend,
        labels=read_labels(args.labels) if args.labels else None,
        anchors=parse_anchors(args.anchors) if args.anchors else None,
        input_scale=args.input_scale,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        precision=args.precision,
        workspace_mb=args.workspace_mb,
        calibration_images=args.calibration_images,
        frames_in_flight=in_flight,
        classes=listed_names(args.classes),
    )
    if in_flight > 1 and detector.engine.frames_in_flight != in_flight:
        log.warning("--frames-in-flight %d is for ONNX Runtime; %s runs one frame at a time",
                    in_flight, detector.backend)
    return detector


def listed_names(text):
    """'person, car,' (--classes, ?classes=) -> ['person', 'car']."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def result_record(image, width, height, backend, inference_ms, detections):
    """The JSON object `detect` prints and /api/detect returns."""
    return {"image": image, "width": width, "height": height, "backend": backend,
            "inference_ms": round(inference_ms, 2), "detections": [d.to_dict() for d in detections]}


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
    if args.out:
        written_by = {}  # annotated copy -> its input
        for path in args.images:
            target = os.path.abspath(annotated_path(args.out, path, path in videos))
            if target == os.path.abspath(path):
                print("error: --out {} would overwrite {} with its annotated copy; choose another folder"
                      .format(args.out, path), file=sys.stderr)
                return 2
            other = written_by.setdefault(target, path)
            if os.path.abspath(other) != os.path.abspath(path):
                print("error: {} and {} would both be written to {}; run them with separate --out folders"
                      .format(other, path, annotated_path(args.out, path, path in videos)), file=sys.stderr)
                return 2
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            print("error: cannot create --out {}: {}".format(args.out, exc.strerror), file=sys.stderr)
            return 2
    detector = detector_from_args(args)
    failures = written = 0
    for path in args.images:
        if path in videos:
            target = annotated_path(args.out, path, True) if args.out else None
            failed = detect_video(detector, path, target)
            failures += failed
            written += 1 if target and not failed and os.path.isfile(target) else 0
            continue
        if path == STANDARD_INPUT:
            frame, why_not = picture_from_standard_input()
        else:
            frame = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
            why_not = why_not_an_image(path) if frame is None else ""
        if frame is None:
            print("error: {}: {}".format(path, why_not), file=sys.stderr)
            failures += 1
            continue
        detections, inference_ms = detector.detect(frame)
        height, width = frame.shape[:2]
        print(json.dumps(result_record(path, width, height, detector.backend, inference_ms,
                                       detections)), flush=True)
        if args.out:
            target = annotated_path(args.out, path)
            if cv2.imwrite(target, draw_detections(frame, detections, detector.colors)):
                written += 1
            else:
                print("error: {}: cannot write {}".format(path, target), file=sys.stderr)
                failures += 1
    if args.out:
        log.info("%d annotated cop%s written to %s", written, "y" if written == 1 else "ies", args.out)
    return 1 if failures else 0


def detect_video(detector, path, target):
    """`detect` for a video: one JSON line per frame (its number and time added), and its
    annotated copy written to `target` (an MJPG AVI) if given; 1 if that fails, else 0."""
    capture = cv2.VideoCapture(path)
    fps = reported_fps(capture)
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    writer, failed, index, noted_at = None, 0, 0, time.monotonic()
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            detections, inference_ms = detector.detect(frame)
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
    import platform
    from camera import opencv_has_gstreamer
    from get_engine import auto_backends
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


def cmd_compare(args):
    """One model on each backend: latency, largest raw-output difference, same detections?"""
    from get_engine import auto_backends
    backends = args.backends.split(",") if args.backends else auto_backends()[0]
    images = []
    for path in files_named(args.images, IMAGE_EXTENSIONS):
        image = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if image is None:
            raise ModelError("{}: {}".format(path, why_not_an_image(path)))
        images.append((path, image))
    if not images:
        from camera import SyntheticSource
        source = SyntheticSource("test://")
        images = [("test://#{}".format(i), source.scene(1000.0 + i * 0.7)) for i in range(args.frames)]
    results = []
    for backend in backends:
        args.backend = backend
        detector = detector_from_args(args)
        outputs, found, times = [], [], []
        for _, image in images:
            for _ in range(args.repeat):
                output, inference_ms = detector.infer(image)
                times.append(inference_ms)
            outputs.append(output)
            height, width = image.shape[:2]
            found.append([(d.class_id, round(d.score, 3), [round(v) for v in d.box])
                          for d in detector.decode(output, (width, height))])
        results.append((backend, detector.engine.detail, outputs, found, float(np.median(times))))
        detector.close()
    reference = results[0]
    report = []
    for backend, detail, outputs, found, median_ms in results:
        difference = max(float(np.abs(a - b).max()) for a, b in zip(outputs, reference[2]))
        report.append({"backend": backend, "detail": detail, "median_ms": round(median_ms, 2),
                       "max_abs_diff_vs_" + reference[0]: difference, "same_detections": found == reference[3]})
    if args.json:
        print(json.dumps(report))
    else:
        print("{:<12} {:>10} {:>14} {:>16}  {}".format("backend", "median ms", "max |diff|", "same detections",
                                                       "engine"))
        for row in report:
            print("{:<12} {:>10.2f} {:>14.2e} {:>16}  {}".format(
                row["backend"], row["median_ms"], row["max_abs_diff_vs_" + reference[0]],
                "yes" if row["same_detections"] else "NO", row["detail"]))
    return 0 if all(row["same_detections"] for row in report) else 1


# --- web ---------------------------------------------------------------------

class HttpError(Exception):
    """An error answered as JSON: {"error": message} with `status`."""

    def __init__(self, status, message):
        super(HttpError, self).__init__(message)
        self.status = status


class LastLine(logging.Handler):
    """The last line one thread (`thread`, an ident) logged at INFO or above."""

    def __init__(self):
        super(LastLine, self).__init__(logging.INFO)
        self.thread = None
        self.line = None

    def emit(self, record):
        if record.thread == self.thread:
            self.line = record.getMessage()


# The exit status of a server that ended itself because its source or an inference hangs (--exit-on-hang).
EXIT_HUNG = 3


def exit_for_a_new_process(reason):
    """End the process at once: a source's read or open, or an inference, that never returns holds
    the device, which only a new process can open again, and its thread would hold an orderly exit
    too. uWSGI's master starts a new worker; a supervisor (Docker's --restart, systemd's Restart=)
    a new server."""
    log.error("%s: a driver call that does not return holds the device until this process ends; exiting "
              "(status %d) for a new one (--exit-on-hang 0 keeps waiting instead)", reason, EXIT_HUNG)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    os._exit(EXIT_HUNG)


class Pipeline(object):
    """Builds the detector and Camera on first use, in the process that serves.

    Nothing starts at import or fork time (uWSGI imports this module, and a
    camera or CUDA context must not cross a fork). The first request starts it
    in the background, since loading a model or building an engine can take
    minutes; until then requests get 503 with what it is doing (the last line
    it logged), and after a failed start with the reason. A failed start is
    tried again after `retry_after` seconds.
    """

    def __init__(self, settings, retry_after=10.0):
        self.settings = settings
        self.retry_after = retry_after
        self.camera = None
        self.error = None
        self.failed_at = 0.0
        self.start_log = None  # a LastLine of the latest start: what it is doing
        self.starting = False
        self._lock = threading.Lock()

    def get(self):
        """The running Camera; HttpError 503 with the reason while there is none."""
        camera = self.camera
        if camera is not None:
            return camera
        with self._lock:
            if self.camera is not None:
                return self.camera
            if not self.starting and (not self.error or time.monotonic() - self.failed_at >= self.retry_after):
                self.starting = True
                self.start_log = LastLine()
                thread = threading.Thread(target=self._start_in_background, name="pipeline-start")
                thread.daemon = True
                thread.start()
            if self.starting:  # what it is doing: minutes of an engine build on a Nano, say
                raise HttpError(503, "starting: " + (self.start_log.line
                                                     or "checking the source and loading the model"))
            raise HttpError(503, self.error)

    def _start_in_background(self):
        self.start_log.thread = threading.get_ident()
        logging.getLogger("streamdetect").addHandler(self.start_log)
        try:
            self.start()
        except USER_ERRORS as exc:
            self.error, self.failed_at = "pipeline cannot start: {}".format(exc), time.monotonic()
            log.error("%s", self.error)
        except Exception as exc:
            self.error, self.failed_at = "pipeline cannot start: {!r}".format(exc), time.monotonic()
            log.exception("pipeline start failed")
        finally:
            logging.getLogger("streamdetect").removeHandler(self.start_log)
            self.starting = False

    def start(self):
        """Check the source, load the model and start the Camera (errors propagate). A source
        that cannot be (a file's name mistyped) is told before the model loads, which can take
        minutes (a download, a TensorRT build)."""
        settings = self.settings
        source = open_source(resolve_source(settings.source), settings.width, settings.height,
                             settings.fps, settings.loop, settings.flip)
        detector = detector_from_args(settings)
        self.camera = Camera(source, detector, jpeg_quality=settings.jpeg_quality,
                             idle_stop=settings.idle_stop, max_viewers=settings.max_viewers,
                             on_hang=exit_for_a_new_process if settings.exit_on_hang else None,
                             hang_seconds=settings.exit_on_hang).start()
        self.error = None
        atexit.register(self.stop)  # join the threads before the interpreter (and OpenCV) go away
        return self.camera

    def stop(self):
        if self.camera is not None:
            self.camera.stop()


def upload_too_large(max_upload_mb):
    """The 413 message, from the app and from nginx alike."""
    return "upload is larger than {:g} MB (--max-upload-mb)".format(max_upload_mb)


def read_body(stream, limit):
    """A request body of at most `limit` bytes: Werkzeug before 2.3 (Python 3.6's)
    applies MAX_CONTENT_LENGTH only to forms, and a WSGI read may return less
    than asked."""
    from werkzeug.exceptions import RequestEntityTooLarge
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    return b"".join(chunks)


BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


def picture_bytes(data):
    """The picture of an upload that holds none as sent: a browser script may send it in
    base64, bare, as a data: URL, or as JSON {"image": "..."}."""
    if data.lstrip()[:1] == b"{":
        try:
            data = json.loads(data.decode("utf-8"))["image"].encode("ascii")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeError):
            raise HttpError(400, 'a JSON upload is {"image": "<the picture in base64>"}')
    if data[:5] == b"data:":
        data = data.partition(b",")[2]
    if BASE64_TEXT.fullmatch(data):
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except ValueError:
            pass  # not base64 after all: said as not an image
    return data


def picture_size(data, max_pixels):
    """(width, height) of the picture `data` holds, read from its header; None if it holds none."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:
        raise HttpError(413, "image has too many pixels to decode safely; send at most {} pixels"
                             .format(max_pixels))
    except Exception:
        return None


def decode_upload(data, max_pixels):
    """Uploaded bytes -> BGR image, checking the pixel count before decoding."""
    if not data:
        raise HttpError(400, "no image received; send it as the multipart field 'image' or as the "
                             "raw request body")
    size = picture_size(data, max_pixels)
    if size is None:  # not a picture as sent: perhaps one in base64
        data = picture_bytes(data)
        size = picture_size(data, max_pixels)
    if size is None and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        raise HttpError(400, "the upload is a {} picture (as iPhones take), which cannot be read here; send it as "
                             "JPEG (on an iPhone: Settings > Camera > Formats > Most Compatible)"
                             .format(HEIF_BRANDS[data[8:12]]))
    if size is None:
        raise HttpError(400, "the upload is not an image (JPEG, PNG, BMP, WebP, ...)")
    width, height = size
    if width * height > max_pixels:
        raise HttpError(413, "image is {}x{} = {} pixels, over the limit of {} (--max-upload-pixels)"
                             .format(width, height, width * height, max_pixels))
    frame = decoded_picture(data)
    if frame is None:
        raise HttpError(400, "the upload is an image that cannot be decoded here; send a JPEG or PNG")
    return frame


# The brands of ISO media files that hold a picture (HEIF), after 'ftyp' at byte 4.
HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
               b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def decoded_picture(data):
    """The BGR picture `data` holds, by OpenCV, else by Pillow (the first of several) for a format
    OpenCV does not read: a GIF on an older OpenCV (JetPack's, and 4.6 of Python 3.6), TGA, ICO;
    None if neither can."""
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is not None:
        return frame
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except Exception:
        return None
    return np.ascontiguousarray(rgb[:, :, ::-1])


# The longest side of the picture the upload page shows: a phone's photo, 24 Mpx, would
# make a page of ~10 MB and take a Nano seconds to encode, for no more than a screen shows.
UPLOAD_PAGE_PIXELS = 1920
# libjpeg's largest side: a longer picture's annotated JPEG is scaled to it (a panorama's PNG may be longer).
JPEG_MAX_SIDE = 65500


def shown_smaller(frame, detections, longest):
    """(`frame` scaled down to at most `longest` pixels a side, the detections' boxes scaled alike)."""
    smaller = fitted(frame, (longest, longest))
    if smaller is frame:
        return frame, detections
    scale = float(smaller.shape[1]) / frame.shape[1]
    return smaller, [Detection(d.label, d.class_id, d.score, [v * scale for v in d.box]) for d in detections]


def create_app(settings=None, start=False):
    """The Flask app. `settings` is the `serve` command's namespace (default:
    read from $STREAMDETECT_* variables, as under uWSGI); `start` builds the
    pipeline now instead of at the first request."""
    from flask import Flask, Response, jsonify, render_template, request, url_for
    from werkzeug.exceptions import HTTPException

    settings = settings or settings_from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1024 * 1024)
    pipeline = Pipeline(settings)
    app.extensions["streamdetect"] = pipeline
    token = os.environ.get("STREAMDETECT_TOKEN", "")
    cors_origins = set(settings.cors_origins or ())
    max_pixels = settings.max_upload_pixels
    upload_places = threading.BoundedSemaphore(UPLOADS_AT_ONCE)

    @app.errorhandler(HttpError)
    def http_error(exc):
        response = jsonify(error=str(exc))
        response.status_code = exc.status
        if exc.status == 401:  # Basic: a browser asks for the token in its login prompt
            response.headers["WWW-Authenticate"] = 'Basic realm="streamdetect", charset="UTF-8"'
            response.headers.add("WWW-Authenticate", 'Bearer realm="streamdetect"')
        return response

    static_digests = {}

    @app.url_defaults
    def static_by_content(endpoint, values):
        """/static/NAME?v=DIGEST: after an upgrade the new page asks for its own script and
        style, not the ones a browser keeps from nginx's hour of caching."""
        if endpoint == "static" and "v" not in values:
            name = values["filename"]
            if name not in static_digests:
                with open(os.path.join(app.static_folder, name), "rb") as handle:
                    static_digests[name] = hashlib.sha1(handle.read()).hexdigest()[:10]
            values["v"] = static_digests[name]

    @app.errorhandler(HTTPException)
    def werkzeug_error(exc):
        if exc.code == 413:
            message = upload_too_large(settings.max_upload_mb)
            if request.endpoint == "upload":  # the browser's form: its page with the reason, not JSON
                return upload_page(error=message), 413
        elif exc.code == 405:
            message = "{} takes {}, not {}{}".format(
                request.path, " or ".join(sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"})), request.method,
                ": POST an image (curl -F image=@photo.jpg URL)" if request.path == "/api/detect" else "")
        elif exc.code == 404:
            path = request.path if len(request.path) <= 80 else request.path[:77] + "..."
            message = "Not Found: {} is no page of this server; it has {}".format(path, ", ".join(sorted(
                rule.rule + ("" if "GET" in rule.methods else " (POST)")
                for rule in app.url_map.iter_rules() if rule.endpoint != "static")))
        else:
            message = "{}: {}".format(exc.name, exc.description)
        response = jsonify(error=message)
        response.status_code = exc.code
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc):
        log.exception("unexpected error on %s", request.path)
        response = jsonify(error="internal error: {}; see the server log".format(type(exc).__name__))
        response.status_code = 500
        return response

    @app.before_request
    def check_token():
        if not token or request.path == "/healthz" or request.path.startswith("/static/") or cors_preflight():
            return None
        header = request.headers.get("Authorization", "")
        given = request.args.get("token", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):]
        elif request.authorization is not None and request.authorization.type == "basic":
            given = request.authorization.password or ""  # the login prompt's: any user name
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HttpError(401, "this server needs its token: send 'Authorization: Bearer TOKEN', add "
                                 "?token=TOKEN to the URL, or give it as the password (any user name)")
        return None

    @app.before_request
    def check_query():
        if request.endpoint not in QUERY_PARAMETERS or cors_preflight():
            return None
        reads, explains = QUERY_PARAMETERS[request.endpoint]
        for name in request.args:
            if name == "token" or name in reads or name in explains or (
                    name not in QUERY_NAMES and slip_for(name, QUERY_NAMES) is None):
                continue
            meant = slip_for(name, reads + explains + ("token",))
            raise HttpError(400, "{}= is no parameter of {}{}; it takes {}".format(
                name, request.path, " (did you mean {}=?)".format(meant) if meant else "",
                ", ".join(taken + "=" for taken in reads) if reads else "no parameters"))
        return None

    def cors_preflight():
        """A browser asking whether another origin's page may send this request: it sends no
        credentials, and its answer (Flask's automatic OPTIONS) carries no data."""
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    @app.after_request
    def allow_cross_origin(response):
        """--cors-origins: let these origins' pages read the answers (and send a token)."""
        origin = request.headers.get("Origin")
        if origin and ("*" in cors_origins or origin in cors_origins):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in cors_origins else origin
            response.headers["Access-Control-Expose-Headers"] = "X-Frame-Seq, X-Captured-At"
            if cors_preflight():
                response.headers["Access-Control-Allow-Methods"] = "GET, POST"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
                response.headers["Access-Control-Max-Age"] = "600"
        if cors_origins and "*" not in cors_origins:
            response.vary.add("Origin")  # a cache keeps one answer per origin
        return response

    @contextlib.contextmanager
    def upload_place():
        """One of UPLOADS_AT_ONCE places for an upload, held until it is answered."""
        if not upload_places.acquire(timeout=UPLOAD_WAIT_SECONDS):
            raise HttpError(503, "the server is busy with {} other uploads; try again in a moment"
                                 .format(UPLOADS_AT_ONCE))
        try:
            yield
        finally:
            upload_places.release()

    def received_upload():
        """(name, bytes, thresholds) of an upload, read and checked before an upload place is
        taken: a slow sender must not hold one while its body arrives."""
        thresholds = upload_thresholds()
        # Anything but a multipart form is the image itself, whatever its Content-Type:
        # `curl --data-binary @photo.jpg` labels it form-urlencoded, and parsing it as a
        # form would consume it.
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("image")
            if upload is None and len(request.files) == 1:  # -F file=@photo.jpg: the one file sent
                upload = next(iter(request.files.values()))
            if upload is None and request.files:
                raise HttpError(400, "the multipart upload has no field 'image' (it has {}); send the picture "
                                     "as 'image'".format(", ".join("'{}'".format(name) for name in request.files)))
            if upload is None:
                raise HttpError(400, "the multipart upload has no file (curl -F image=@photo.jpg sends one); "
                                     "a picture as the raw body needs another Content-Type")
            data = upload.read()
            if not data and upload.filename:  # a file that was sent empty, not a field left without one
                raise HttpError(400, "{} is an empty file (0 bytes); send the picture itself".format(upload.filename))
            return upload.filename or "upload", data, thresholds
        return "upload", read_body(request.stream, app.config["MAX_CONTENT_LENGTH"]), thresholds

    def detect_upload(name, data, thresholds):
        """(frame, detections, record, camera) of a received upload, in an upload place."""
        frame = decode_upload(data, max_pixels)
        camera = pipeline.get()
        classes = listed_names(request.args.get("classes"))
        if classes:
            try:
                thresholds["class_filter"] = camera.detector.class_ids(classes, asked_by="classes")
            except ModelError as exc:
                raise HttpError(400, str(exc))
        try:
            detections, inference_ms = camera.detect_image(frame, **thresholds)
        except RuntimeError as exc:
            raise HttpError(503, str(exc))
        height, width = frame.shape[:2]
        record = result_record(name, width, height, camera.detector.backend, inference_ms, detections)
        return frame, detections, record, camera

    def upload_thresholds():
        """?conf=N and ?iou=N of an upload: this picture's own thresholds, 0-1."""
        thresholds = {}
        for name, option in (("conf", "conf_threshold"), ("iou", "iou_threshold")):
            if name in request.args:
                thresholds[option] = fraction_asked(name)
        return thresholds

    def fraction_asked(name):
        """?name=N, a number from 0 to 1."""
        text = request.args[name]
        value = number_in_range(text, float, 0.0, 1.0)
        if value is None:
            raise HttpError(400, "{}={} is not a number from 0 to 1".format(name, text))
        return value

    def wanted_detections(camera):
        """?classes=person,car and ?conf=0.7 of a reader of the stream's detections, which the
        server decoded with its own --classes and --conf: only a narrower choice can be given."""
        detector = camera.detector
        class_ids = None
        names = listed_names(request.args.get("classes"))
        if names:
            try:
                class_ids = frozenset(detector.class_ids(names, asked_by="classes"))
            except ModelError as exc:
                raise HttpError(400, str(exc))
            reported = class_ids if detector.class_filter is None else set(detector.class_filter)
            unreported = [detector.labels[i] for i in sorted(class_ids - reported)]
            if unreported:
                raise HttpError(400, "classes: this server reports only {} (its --classes), not {}".format(
                    ", ".join(detector.class_names()), ", ".join(unreported)))
        least_score = fraction_asked("conf") if "conf" in request.args else None
        if least_score is not None and least_score < detector.conf_threshold:
            raise HttpError(400, "conf={:g} is below the server's --conf {:g}: the stream keeps only detections "
                                 "scoring {:g} or more (start the server with --conf {:g} for more)".format(
                                     least_score, detector.conf_threshold, detector.conf_threshold, least_score))
        if "iou" in request.args:
            raise HttpError(400, "iou= is for /api/detect uploads: the stream's boxes are merged at the server's "
                                 "--iou {:g}".format(detector.iou_threshold))
        return WantedDetections(class_ids, least_score)

    def annotation_asked(default, annotated, plain):
        """?annotate=1 or 0 (true/false, yes/no), else `default`; `annotated` and `plain` name
        the two answers for the error."""
        text = request.args.get("annotate", "1" if default else "0")
        if text.lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise HttpError(400, "annotate={} is not 1, true or yes ({}) nor 0, false or no ({})"
                                 .format(text, annotated, plain))
        return text.lower() in ("1", "true", "yes")

    def current_frame(camera, raw=False):
        """The latest frame for one who asks now: while --idle-stop has the pipeline paused,
        the first one captured after waking it, not one from before; with `raw`, the first
        that kept its picture before drawing. Waits up to WAKE_SECONDS for either."""
        paused = camera.state == "idle"
        if raw:
            camera.want_raw()
        camera.touch()
        frame = camera.latest_frame()
        woke_at, deadline = time.time(), time.monotonic() + WAKE_SECONDS
        # frames captured just before the pause may still be on their way: not those
        while frame is None or (paused and frame.captured_at < woke_at) or (raw and frame.raw is None):
            remaining = deadline - time.monotonic()
            newer = camera.wait_frame(frame.seq if frame is not None else 0, remaining) if remaining > 0 else None
            if newer is None:
                break
            frame = newer
        return frame

    def viewer_fps():
        """?fps=N: the most frames per second this viewer wants, or None."""
        text = request.args.get("fps")
        if text is None:
            return None
        max_fps = number_in_range(text, float, *VIEWER_FPS_LIMITS)
        if max_fps is None:
            raise HttpError(400, "fps={} is not a number from {:g} to {:g} (the most frames per second "
                                 "this viewer wants); for fewer, poll /snapshot.jpg"
                                 .format(text, *VIEWER_FPS_LIMITS))
        return max_fps

    def viewer_name():
        """?viewer=NAME: a page's name for its stream, by which it asks /api/stats whether the
        stream still reaches it; or None."""
        name = request.args.get("viewer")
        if name is not None and not VIEWER_NAME.match(name):
            raise HttpError(400, "viewer={}: a viewer's name is 1 to 64 letters, digits, - or _".format(name))
        return name

    @app.route("/")
    def index():
        """The live page, which the browser does not keep: a copy shown again (a duplicated tab,
        the back button) would stream under the first's viewer name. (The upload page is kept,
        so that going back to a result shows it, not a form resubmission.)"""
        max_fps = viewer_fps()
        response = Response(render_template("index.html", token=request.args.get("token", ""),
                                            fps="{:g}".format(max_fps) if max_fps else None,
                                            viewer=secrets.token_urlsafe(12)), mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    def stream_to_viewer(body, mimetype):
        """One more viewer's response: `body(camera, max_fps)` streamed until the viewer goes."""
        max_fps = viewer_fps()
        name = viewer_name()
        camera = pipeline.get()
        try:
            release = camera.join_viewer(name)
        except TooManyViewers as exc:
            raise HttpError(503, str(exc))
        keep_send_queue_short(request.environ)
        response = Response(body(camera, max_fps=max_fps), mimetype=mimetype)
        response.call_on_close(release)
        response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate, private"
        response.headers["Pragma"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        return response

    def refuse_detection_choices():
        """?classes=, ?conf=, ?iou= of a picture: it is drawn once for every viewer, with the server's own."""
        for name in ("classes", "conf", "iou"):
            if name in request.args:
                value = request.args[name]
                raise HttpError(400, "{0}={1}: the picture is drawn once for every viewer, with the server's own "
                                     "--{0}; start the server with --{0} {1}{2}".format(
                                         name, value, "" if name == "iou" else ", or read /api/detections?{}={} "
                                         "(or /api/events) for this choice alone".format(name, value)))

    @app.route("/video_feed")
    def video_feed():
        refuse_detection_choices()
        if "annotate" in request.args:
            raise HttpError(400, "annotate={}: the stream is drawn once for every viewer; /snapshot.jpg?annotate=0 "
                                 "gives the camera's picture alone".format(request.args["annotate"]))
        return stream_to_viewer(mjpeg_parts, "multipart/x-mixed-replace; boundary=" + BOUNDARY)

    @app.route("/api/events")
    def api_events():
        wanted = wanted_detections(pipeline.get())
        return stream_to_viewer(functools.partial(detection_events, wanted=wanted), "text/event-stream")

    @app.route("/snapshot.jpg")
    def snapshot():
        refuse_detection_choices()
        raw = not annotation_asked(True, "boxes, labels and stats drawn", "the camera's picture alone")
        camera = pipeline.get()
        frame = current_frame(camera, raw)
        if raw and (frame is None or frame.raw is None):
            raise HttpError(503, "no picture came from {} within {:g} s ({}); try again".format(
                camera.source.uri, WAKE_SECONDS, camera.last_error or camera.state))
        response = Response(encode_opencv(frame.raw, settings.jpeg_quality) if raw else frame.jpeg,
                            mimetype="image/jpeg")
        response.headers["Cache-Control"] = "no-cache, no-store"
        response.headers["X-Frame-Seq"] = str(frame.seq)
        response.headers["X-Captured-At"] = "{:.6f}".format(frame.captured_at)
        return response

    @app.route("/api/stats")
    def api_stats():
        name = viewer_name()
        camera = pipeline.get()
        stats = camera.stats()
        if name:
            stats["viewer_connected"] = camera.is_watching(name)
        return jsonify(stats)

    @app.route("/api/detections")
    def api_detections():
        camera = pipeline.get()
        wanted = wanted_detections(camera)
        return jsonify(frame_record(camera, current_frame(camera), wanted))

    @app.route("/api/detect", methods=["POST"])
    def api_detect():
        annotated = annotation_asked(False, "the annotated JPEG", "JSON")
        received = received_upload()
        with upload_place():
            frame, detections, record, camera = detect_upload(*received)
            if annotated:
                shown, detections = shown_smaller(frame, detections, JPEG_MAX_SIDE)
                draw_detections(shown, detections, camera.detector.colors)
                return Response(encode_opencv(shown, 90), mimetype="image/jpeg")
            return jsonify(record)

    @app.route("/api")
    def api_docs():
        given = request.args.get("token", "")
        routes = []
        for endpoint, what in API_ROUTES:
            rule = next(app.url_map.iter_rules(endpoint))
            methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
            routes.append({"path": rule.rule, "methods": methods, "what": what,
                           "takes": QUERY_PARAMETERS[endpoint][0],
                           "link": url_for(endpoint, token=given or None) if "GET" in methods else None})
        return render_template("api.html", token=given, needs_token=bool(token), routes=routes)

    def upload_page(**shown):
        return render_template("upload.html", token=request.args.get("token", ""), needs_token=bool(token),
                               max_bytes=app.config["MAX_CONTENT_LENGTH"],
                               too_large=upload_too_large(settings.max_upload_mb), **shown)

    @app.route("/upload", methods=["GET", "POST"])
    def upload():
        if request.method == "GET":
            return upload_page()
        try:
            received = received_upload()
            with upload_place():
                frame, detections, record, camera = detect_upload(*received)
                shown, detections = shown_smaller(frame, detections, UPLOAD_PAGE_PIXELS)
                draw_detections(shown, detections, camera.detector.colors)
                image = base64.b64encode(encode_opencv(shown, 90)).decode("ascii")
        except HttpError as exc:
            return upload_page(error=str(exc)), exc.status
        return upload_page(record=record, result_json=json.dumps(record, indent=2), image=image,
                           scaled_to="{}×{}".format(shown.shape[1], shown.shape[0]) if shown is not frame else None)

    @app.route("/healthz")
    def healthz():
        try:
            camera = pipeline.get()
        except HttpError as exc:
            return jsonify(status="starting" if pipeline.starting else "down", error=str(exc)), 503
        stats = camera.stats()
        healthy = camera.healthy()
        return jsonify(status="ok" if healthy else "unhealthy", state=stats["state"], fps=stats["fps"],
                       error=stats["last_error"]), 200 if healthy else 503

    @app.route("/metrics")
    def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST
        # content_type, not mimetype: Flask would add a second charset, which Prometheus 3 refuses to parse
        return Response(prometheus_text(pipeline.get()), content_type=CONTENT_TYPE_LATEST)

    if start:
        pipeline.start()
    return app


def keep_send_queue_short(environ):
    """Keep a stream viewer's frames in as few buffers as can be, so that each write waits
    while the viewer is behind and then takes the newest frame: for a viewer on a slow link
    the kernel's send buffer would grow to megabytes of old frames, seconds behind the camera.
    The development server's socket to the browser holds at most UNSENT_BYTES unsent (Linux's
    TCP_NOTSENT_LOWAT); under uWSGI, the socket to nginx gets a buffer that small (nginx's
    own: STREAM_SEND_BUFFER, and the stream buffer in nginx/streamdetect.conf)."""
    import socket
    try:
        if "werkzeug.socket" in environ and sys.platform.startswith("linux"):
            environ["werkzeug.socket"].setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_NOTSENT_LOWAT", 25),
                                                  UNSENT_BYTES)
        elif "uwsgi.version" in environ:
            import uwsgi
            connection = socket.fromfd(uwsgi.connection_fd(), socket.AF_UNIX, socket.SOCK_STREAM)  # a duplicate
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNSENT_BYTES)
            finally:
                connection.close()
    except OSError:  # not TCP (a test's socket pair), or a kernel older than 3.12: buffers as they are
        pass


def newest_frames(camera, max_fps=None, resend_after=1.0):
    """(frame, new) for one viewer: each frame as it is published, or, with
    `max_fps`, the newest one each 1/max_fps seconds (never a queue of old
    ones, for a slow link); after `resend_after` seconds without a new frame,
    the last one again (new False), so that a viewer who has gone is found by
    a failed write and proxies see traffic."""
    seq = 0
    frame = camera.latest_frame()
    interval, due = 1.0 / max_fps if max_fps else 0.0, time.monotonic()
    while True:
        if interval:
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due + interval, time.monotonic())
        newer = camera.wait_frame(seq, resend_after)
        if newer is not None:
            frame, seq = newer, newer.seq
        yield frame, newer is not None
        if camera.state == "stopped":
            return


def mjpeg_parts(camera, max_fps=None):
    """The multipart body: each part is followed at once by the next boundary
    (browsers paint a part when the next one's headers arrive)."""
    yield ("--" + BOUNDARY + "\r\n").encode()
    for frame, _ in newest_frames(camera, max_fps):
        yield frame.part


def detection_events(camera, wanted, max_fps=None):
    """Server-sent events: each new frame's detections (those `wanted`) as one event
    (its id the frame number), a comment line while none comes."""
    for frame, new in newest_frames(camera, max_fps):
        yield detection_event(camera, frame, wanted) if new else b": no new frame\n\n"


@functools.lru_cache(maxsize=8)
def detection_event(camera, frame, wanted):
    """A frame's event, made once for all its readers who want the same, as its JPEG part
    is (27 us a reader and frame here: 4 % of a core for 50 readers at 30 FPS otherwise)."""
    return "id: {}\ndata: {}\n\n".format(frame.seq, json.dumps(frame_record(camera, frame, wanted))).encode()


class WantedDetections(collections.namedtuple("WantedDetections", "class_ids least_score")):
    """Which detections of each frame a reader wants: of these class ids (None: all) scoring at
    least this (None: all)."""

    def keep(self, detections):
        return [detection for detection in detections
                if (self.class_ids is None or detection.class_id in self.class_ids)
                and (self.least_score is None or detection.score >= self.least_score)]


def frame_record(camera, frame, wanted):
    """A published frame's detections (those `wanted`) in `detect`'s JSON schema, plus which
    frame it is, when it was captured and whether it is live."""
    record = result_record(camera.source.uri, frame.width, frame.height, camera.detector.backend,
                           frame.inference_ms, wanted.keep(frame.detections))
    record.update(frame=frame.seq, captured_at=frame.captured_at, status=frame.status or "live")
    return record


def prometheus_text(camera):
    """The stats in Prometheus' text format, from a registry of our own."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class StatsCollector(object):
        def collect(self):
            stats = camera.stats()
            for name in ("frames_captured", "frames_decoded", "frames_inferred", "frames_dropped",
                         "frames_published", "reconnects"):
                yield CounterMetricFamily("streamdetect_" + name, name.replace("_", " "), value=stats[name])
            yield GaugeMetricFamily("streamdetect_fps", "frames per second delivered to viewers", value=stats["fps"])
            for name, help_text in (("inference", "inference time per frame"),
                                    ("wait", "capture to start of inference"),
                                    ("render", "decoding, drawing and encoding"),
                                    ("latency", "capture to publication")):
                yield GaugeMetricFamily("streamdetect_{}_seconds".format(name), help_text + ", moving average",
                                        value=round(stats[name + "_ms"] / 1000.0, 6))
            yield GaugeMetricFamily("streamdetect_viewers", "viewers connected to /video_feed or /api/events",
                                    value=stats["viewers"])
            yield GaugeMetricFamily("streamdetect_uptime_seconds", "time since the pipeline started",
                                    value=stats["uptime"])
            yield GaugeMetricFamily("streamdetect_source_up", "1 while the source streams",
                                    value=1.0 if stats["state"] == "streaming" else 0.0)
            # One series per state, 1 for the current one: a label that changed with the
            # state would end one series and begin another at every change.
            states = GaugeMetricFamily("streamdetect_state", "the pipeline's state", labels=["state"])
            for state in Camera.STATES:
                states.add_metric([state], 1.0 if stats["state"] == state else 0.0)
            yield states
            # Every class the server reports, 0 when absent: a series that vanished
            # could not be told from a stopped server in a graph or an alert.
            counts = collections.Counter(detection.label for detection in camera.latest_frame().detections)
            objects = GaugeMetricFamily("streamdetect_objects", "objects of each class in the latest frame",
                                        labels=["label"])
            for label in camera.detector.class_names() or camera.detector.labels:
                objects.add_metric([label], counts[label])
            yield objects

    registry = CollectorRegistry()
    registry.register(StatsCollector())
    return generate_latest(registry)


def settings_from_env():
    """The `serve` settings as $STREAMDETECT_* variables give them (uWSGI passes no argv)."""
    settings = build_parser().parse_args(["serve"])
    refuse_unknown_environment_settings()
    return settings


def refuse_unknown_environment_settings():
    """Exit with argparse's kind of one-line error on a $STREAMDETECT_* variable that is no
    setting: `-e STREAMDETECT_SOUCRE=rtsp://...` would otherwise stream another source. Called
    after build_parser(), which names the settings."""
    for variable in sorted(os.environ):
        name = variable[len("STREAMDETECT_"):]
        if variable.startswith("STREAMDETECT_") and name not in ENVIRONMENT_SETTINGS:
            meant = slip_for(name, sorted(ENVIRONMENT_SETTINGS))
            print("python app.py: error: ${} is no setting{}; the settings are the options of `python app.py "
                  "serve --help`, as $STREAMDETECT_MAX_VIEWERS for --max-viewers".format(
                      variable, " (did you mean $STREAMDETECT_{}?)".format(meant) if meant else ""),
                  file=sys.stderr)
            sys.exit(2)


ANSWERED_POLL = re.compile(r'"GET /(api/stats|api/detections|healthz)[?\s][^"]*" [23]\d\d ')
TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


def plain_request_log(record):
    """The development server's request log as nginx's in production: without the answered
    polls of the live page (two a second per open page) and of health checks, without the
    access token of a URL, and without the terminal colours Werkzeug adds even into files
    and the journal."""
    message = TOKEN_IN_URL.sub(r"\1***", record.getMessage())
    if not sys.stderr.isatty():
        message = TERMINAL_STYLE.sub("", message)
    record.msg, record.args = message, ()
    return not ANSWERED_POLL.search(message)


# At a stop, how long the development server lets viewers take the 'stopped' picture and the end
# of their streams before it exits (a viewer that never reads would otherwise hold it).
VIEWERS_LEAVE_SECONDS = 2.0


def cmd_serve(args):
    if args.production:
        return serve_production(args)
    require_free_port(args.host, args.port, "--port")
    app = create_app(args, start=True)
    camera = app.extensions["streamdetect"].camera
    log.info("serving on http://%s:%d/ (source %s, backend %s)", url_host(args.host, shown=True), args.port,
             camera.source.uri, camera.detector.backend)
    from werkzeug.serving import WSGIRequestHandler, run_simple

    class LettingFrozenClientsGo(WSGIRequestHandler):
        """A blocked write to a client that takes nothing (a frozen tab, a suspended
        laptop) would hold its thread and viewer place for good."""
        timeout = args.client_timeout

    def stop_as_on_ctrl_c(signum, frame):
        """SIGTERM (systemctl stop, docker stop, kill) ends as Ctrl-C does: the server
        closes and the pipeline stops in order, not killed mid-frame."""
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)
    logging.getLogger("werkzeug").addFilter(plain_request_log)
    try:
        run_simple(args.host, args.port, app, threaded=True, use_reloader=False,
                   request_handler=LettingFrozenClientsGo)
    finally:
        app.extensions["streamdetect"].stop()
        camera.wait_for_viewers_to_leave(VIEWERS_LEAVE_SECONDS)
        log.info("stopped")
    return 0


# --- production: uWSGI + nginx ---------------------------------------------------

APP_DIR = os.path.dirname(os.path.abspath(__file__))


def run_directory(port):
    """Where sockets, pids and generated configs live: /run (not /tmp, which
    systemd's PrivateTmp hides from nginx), else the user's runtime folder."""
    if os.geteuid() == 0:
        base = "/run/streamdetect"
    else:
        base = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or cache_dir("run"), "streamdetect")
    path = os.path.join(base, str(port))
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def fill_template(path, values):
    """A config file from the repository with its @NAME@ fields filled in."""
    with open(path) as handle:
        text = handle.read()
    for name, value in values.items():
        text = text.replace("@{}@".format(name), str(value))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError("{}: no value for {}".format(path, ", ".join(sorted(set(leftover)))))
    return text


def settings_environment(args):
    """The serve settings as $STREAMDETECT_* variables, for the app under uWSGI."""
    environment = {}
    for name, value in vars(args).items():
        if name.upper() not in ENVIRONMENT_SETTINGS or value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else ""
        elif isinstance(value, list):
            value = ",".join(value)
        environment["STREAMDETECT_" + name.upper()] = str(value)
    return environment


# nginx's send buffer for each browser, fixed (nginx has no TCP_NOTSENT_LOWAT): the kernel's
# autotuning lets it grow to 4 MB, 16 s of a stream on a 2 Mbit/s link. Fixed, it also bounds
# what is in flight: 128 KB, doubled by the kernel, is 1.7 MB/s at 150 ms of round trip, where
# a 640x480 stream at 30 FPS needs about 1.2 (arithmetic; no long link to measure here).
STREAM_SEND_BUFFER = " sndbuf=128k"


def nginx_listen(host, port, parameters=""):
    """nginx's `listen` directives for --host and `port`: all addresses for 0.0.0.0, IPv4
    and IPv6 for ::, an IPv6 address in brackets."""
    if host in ("", "0.0.0.0"):
        addresses = [str(port)]
    elif host == "::":
        addresses = [str(port), "[::]:{}".format(port)]
    else:
        addresses = ["{}:{}".format(url_host(host), port)]
    return "\n    ".join("listen {}{};".format(address, parameters) for address in addresses)


def url_host(host, shown=False):
    """--host as a URL has it: an IPv6 address in brackets; for all addresses, the one
    that reaches this machine (`shown`: localhost, for people)."""
    if host in ("", "0.0.0.0", "::"):
        return "localhost" if shown else "127.0.0.1"
    return "[{}]".format(host) if ":" in host else host


def nginx_version(nginx):
    """The version of the `nginx` binary as a tuple of numbers, () where `nginx -v`
    (which writes to stderr) does not tell."""
    try:
        said = subprocess.run([nginx, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", said)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def tls_listen(host, port, version):
    """The TLS `listen` directives, with HTTP/2: nginx 1.25.1 deprecated the `http2` parameter
    of `listen` (a warning at every start) for `http2 on;`, which older ones (the Nano's 1.14,
    Debian 12's 1.22) do not know."""
    if version >= (1, 25, 1):
        return nginx_listen(host, port, STREAM_SEND_BUFFER + " ssl") + "\n    http2 on;"
    return nginx_listen(host, port, STREAM_SEND_BUFFER + " ssl http2")


def write_production_configs(args, run_dir, nginx):
    """uWSGI and nginx configurations for these settings and that `nginx` binary, in `run_dir`."""
    owner = "{}:{}".format(os.geteuid(), os.getegid())
    user_line = ""
    if os.geteuid() == 0:  # nginx workers drop to nobody: give its group the socket
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        owner, user_line = "0:{}".format(nobody.pw_gid), "user nobody {};".format(group)
    tls = ""
    if args.tls_cert:
        tls = ("{}\n    ssl_certificate {};\n    ssl_certificate_key {};"
               .format(tls_listen(args.host, args.tls_port, nginx_version(nginx)),
                       os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key)))
    listen = nginx_listen(args.host, args.port, STREAM_SEND_BUFFER)
    threads = args.max_viewers + 16 if args.max_viewers else 256
    values = {
        "APP_DIR": APP_DIR, "RUN_DIR": run_dir, "THREADS": threads, "WORKER_CONNECTIONS": max(1024, 2 * threads + 64),
        "SOCKET_OWNER": owner, "STATS_PORT": args.stats_port, "USER_LINE": user_line,
        "LISTEN": listen, "TLS_SERVER": tls, "MAX_BODY": "{}k".format(int(args.max_upload_mb * 1024) + 1024),
        "TOO_LARGE_JSON": json.dumps({"error": upload_too_large(args.max_upload_mb)}),
        "PER_CLIENT": args.per_client_limit,
        "CLIENT_TIMEOUT": args.client_timeout,
    }
    static = os.path.join(run_dir, "static")  # a copy nginx's workers can read wherever the app lives
    if os.path.isdir(static):
        shutil.rmtree(static)
    shutil.copytree(os.path.join(APP_DIR, "static"), static)
    for name, template in (("uwsgi.ini", "app.ini"), ("nginx.conf", "nginx/nginx.conf"),
                           ("streamdetect.conf", "nginx/streamdetect.conf"), ("uwsgi_params", "nginx/uwsgi_params")):
        with open(os.path.join(run_dir, name), "w") as handle:
            handle.write(fill_template(os.path.join(APP_DIR, template), values))


def _die_with_parent():
    """In a child: get SIGTERM if the launcher dies, so nothing is orphaned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def require_free_port(host, number, option):
    """An error naming the option now, before the camera and model are opened, rather
    than the server failing to bind later (a second instance would collide on the
    default --stats-port, say)."""
    import errno
    import socket
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx, uWSGI and Werkzeug bind
        probe.bind((host or "0.0.0.0", number))
    except OSError as exc:
        hint = ("is another server (another streamdetect?) using it? Pass another " + option
                if exc.errno == errno.EADDRINUSE else "is {} an address of this machine (--host)?".format(host))
        raise ServerSetupError("cannot listen on {}:{} ({}); {}".format(host or "0.0.0.0", number, exc.strerror, hint))
    finally:
        probe.close()


def serve_production(args):
    """uWSGI (the app) behind nginx, both in the foreground, stopped together."""
    uwsgi, nginx = shutil.which("uwsgi"), shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not uwsgi or not nginx:
        raise ServerSetupError("--production needs uwsgi and nginx on PATH (pip install uwsgi; "
                               "apt-get install nginx); or run without --production")
    if args.tls_cert and not args.tls_key:
        raise ServerSetupError("--tls-cert needs --tls-key")
    listeners = [(args.host, args.port, "--port"), ("127.0.0.1", args.stats_port, "--stats-port")]
    if args.tls_cert:
        listeners.append((args.host, args.tls_port, "--tls-port"))
    options_by_port = collections.defaultdict(list)
    for _, number, option in listeners:
        options_by_port[number].append(option)
    for number, options in sorted(options_by_port.items()):
        if len(options) > 1:
            raise ServerSetupError("{} are the same port ({}); give each its own".format(" and ".join(options), number))
    for host, number, option in listeners:
        require_free_port(host, number, option)
    resolve_model(args.model)  # download here, in the foreground, with its progress bar
    run_dir = run_directory(args.port)
    write_production_configs(args, run_dir, nginx)
    check_nginx_config(nginx, run_dir)
    environment = dict(os.environ, **settings_environment(args))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    log.info("starting uWSGI and nginx (configs in %s)", run_dir)
    append_to_output_file()
    children = [subprocess.Popen([uwsgi, "--ini", os.path.join(run_dir, "uwsgi.ini")], env=environment,
                                 preexec_fn=_die_with_parent)]
    children.append(subprocess.Popen([nginx, "-p", run_dir, "-c", os.path.join(run_dir, "nginx.conf")],
                                     preexec_fn=_die_with_parent))
    status = 0
    try:
        status = _supervise(args, children, stopping)
    finally:
        _stop_children(children)
    return status


def check_nginx_config(nginx, run_dir):
    """nginx's own test of its configuration (a certificate that is none, say), before
    uWSGI starts: one line, rather than nginx failing while uWSGI loads the app."""
    test = subprocess.run([nginx, "-t", "-q", "-p", run_dir, "-c", os.path.join(run_dir, "nginx.conf")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if test.returncode != 0:
        reasons = re.findall(r"\[emerg\] (?:\d+#\d+: )?(.*)", test.stdout)
        raise ServerSetupError("nginx refuses its configuration: {}".format(
            reasons[0] if reasons else test.stdout.strip() or "nginx -t failed"))


def append_to_output_file():
    """nginx opens /dev/stdout again for its access log, appending; into a file that the
    shell opened without appending (`serve --production > server.log 2>&1`), our writes
    and uWSGI's, at their own offset, would overwrite nginx's lines. Make them append too."""
    import fcntl
    import stat
    if stat.S_ISREG(os.fstat(1).st_mode):
        fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_APPEND)


def _supervise(args, children, stopping):
    """Wait for the first healthy answer, then until a signal or a child's exit."""
    url = "http://{}:{}/healthz".format(url_host(args.host), args.port)
    ready, last_note = False, time.monotonic()
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log.error("%s exited with status %s; stopping", os.path.basename(child.args[0]),
                          child.returncode)
                return 1
        if not ready:
            answer = _health(url)
            if answer.get("status") == "down":
                print("error: {}".format(answer.get("error")), file=sys.stderr)
                return 2
            if answer.get("status") in ("ok", "unhealthy"):
                ready = True
                log.info("ready: http://%s:%d/ (%s%s)", url_host(args.host, shown=True), args.port, answer.get("state"),
                         ": " + answer["error"] if answer.get("error") else "")  # idle or reconnecting: why
            elif time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.info("waiting for the pipeline to start: %s", answer.get("error", "no answer yet"))
        time.sleep(0.2)
    return 0


def _health(url):
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen
    try:
        with urlopen(url, timeout=5) as response:
            return json.loads(response.read().decode())
    except HTTPError as exc:
        try:
            return json.loads(exc.read().decode())
        except ValueError:
            return {}
    except (URLError, OSError, ValueError):
        return {}


def _stop_children(children, grace=3.0):
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", os.path.basename(child.args[0]), grace)
            child.kill()
            child.wait(5)
    log.info("stopped")


COMMANDS = ("serve", "detect", "fetch-model", "build-engine", "check", "compare")


def add_serve_options(parser):
    group = parser.add_argument_group("server (each also read from $STREAMDETECT_<OPTION>)")
    group.add_argument("--host", default=env("HOST", "0.0.0.0"), help="address to listen on (default %(default)s)")
    group.add_argument("--port", type=port_number, default=env("PORT", 8080), help="default %(default)s")
    group.add_argument("--source", type=os.path.expanduser, default=env("SOURCE", "auto"),
                       help="0 or /dev/videoN (USB camera; also by a name udev keeps across replugging, "
                            "/dev/v4l/by-id/...), csi://0 (Jetson CSI camera), rtsp://... or "
                            "http://... (network stream, or a camera's snapshot URL), a video file, a folder of "
                            "images and videos, or test:// "
                            "(synthetic scene). auto: the first USB camera (by its by-id name), else test:// "
                            "(default %(default)s)")
    group.add_argument("--width", type=ranged(*CAPTURE_LIMITS["width"]), default=env("WIDTH", 640),
                       help="capture width asked of cameras; a larger frame, of any source but test://, is "
                            "shown scaled down to fit --width x --height (default %(default)s)")
    group.add_argument("--height", type=ranged(*CAPTURE_LIMITS["height"]), default=env("HEIGHT", 480),
                       help="capture height asked of cameras (default %(default)s)")
    group.add_argument("--fps", type=ranged(*CAPTURE_LIMITS["fps"]), default=env("FPS", 30),
                       help="capture rate asked of cameras and test:// (default %(default)s)")
    flips = sorted(FLIPS)
    group.add_argument("--flip", choices=flips, type=one_of(flips), default=env("FLIP", "none"),
                       help="turn each frame before detection, for a camera mounted upside down "
                            "(rotate-180) or sideways, or a mirror view (horizontal); a CSI camera "
                            "turns it in hardware (default %(default)s)")
    group.add_argument("--loop", action="store_true", default=env_switch("LOOP"),
                       help="repeat a video file without end (else it plays when its first viewer comes, "
                            "and again for one who joins after its end)")
    group.add_argument("--jpeg-quality", type=ranged(int, 1, 100), default=env("JPEG_QUALITY", 80),
                       help="stream JPEG quality 1-100 (default %(default)s)")
    group.add_argument("--max-viewers", type=count, default=env("MAX_VIEWERS", 100),
                       help="refuse stream viewers (/video_feed, /api/events) beyond this many with 503; 0 = no limit "
                            "(default %(default)s)")
    group.add_argument("--idle-stop", type=ranged(float, 0.0), default=env("IDLE_STOP", 0), metavar="SECONDS",
                       help="pause capture and inference after this long without viewers; 0 = never "
                            "(default %(default)s)")
    group.add_argument("--exit-on-hang", type=ranged(float, 0.0), default=env("EXIT_ON_HANG", 60), metavar="SECONDS",
                       help="end the server (exit status 3) when a live source has given no frame for this long "
                            "without failing, its opening has not returned, or an inference has not: a driver "
                            "call that never returns holds the camera or GPU until the process ends. Under "
                            "--production uWSGI starts a new worker at once; otherwise a supervisor (Docker's "
                            "--restart, systemd's Restart=) must start it again. 0 = keep waiting (default "
                            "%(default)s)")
    group.add_argument("--frames-in-flight", type=count, default=env("FRAMES_IN_FLIGHT", 0), metavar="N",
                       help="frames inferred at once by ONNX Runtime on the CPU, each on its share of "
                            "the cores; 2 gives more FPS than 1 (no cores wait for each other) at "
                            "about twice the latency; 0 = 2 where there are 2 cores or more "
                            "(default %(default)s)")
    group.add_argument("--client-timeout", type=ranged(int, 1), default=env("CLIENT_TIMEOUT", 30), metavar="SECONDS",
                       help="let a viewer go whose connection has taken nothing for this long (a frozen or "
                            "vanished client), freeing its place (default %(default)s)")
    group.add_argument("--max-upload-mb", type=ranged(float, 0.01), default=env("MAX_UPLOAD_MB", 10),
                       help="largest /api/detect upload in MB (default %(default)s)")
    group.add_argument("--cors-origins", type=origins, default=env("CORS_ORIGINS", None), metavar="ORIGIN,ORIGIN",
                       help="web pages of these origins (https://dash.example:3000, or * for any) may call "
                            "the API from a browser; a token goes in their Authorization header "
                            "(default: none, same origin only)")
    group.add_argument("--production", action="store_true",
                       help="serve through uWSGI behind nginx (both started here, stopped on SIGTERM "
                            "or Ctrl-C) instead of the development server")
    group.add_argument("--per-client-limit", type=ranged(int, 1), default=env("PER_CLIENT_LIMIT", 32),
                       help="--production: nginx's limit of connections per client address "
                            "(default %(default)s)")
    group.add_argument("--stats-port", type=port_number, default=env("STATS_PORT", 9191),
                       help="--production: uWSGI stats server port on 127.0.0.1 (default %(default)s)")
    group.add_argument("--tls-cert", type=os.path.expanduser, default=env("TLS_CERT", None),
                       help="--production: certificate file; adds an HTTPS + HTTP/2 listener")
    group.add_argument("--tls-key", type=os.path.expanduser, default=env("TLS_KEY", None),
                       help="--production: its key file")
    group.add_argument("--tls-port", type=port_number, default=env("TLS_PORT", 8443),
                       help="--production: HTTPS port (default %(default)s)")
    group.add_argument("--max-upload-pixels", type=ranged(int, 1), default=env("MAX_UPLOAD_PIXELS", 40000000),
                       help="largest /api/detect image in pixels (default %(default)s)")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), choices=LOG_LEVELS, type=one_of(LOG_LEVELS),
                        help="default %(default)s; DEBUG also shows OpenCV's own messages")
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Live object detection (Tiny YOLOv2) streamed to browsers. With no command, "
                    "'serve' runs with the options given.",
        epilog="Each command has its own --help. Settings can also come from the environment: "
               "--source as STREAMDETECT_SOURCE, --max-viewers as STREAMDETECT_MAX_VIEWERS, and so on. "
               "STREAMDETECT_TOKEN, when set, is required by every route but /healthz.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[common], help="stream live detections to browsers (the default)",
        description="Run the web server: / (live page), /video_feed (MJPEG stream), /snapshot.jpg, "
                    "/api/stats, /api/detections, /api/events (detections as server-sent events), "
                    "/api/detect (POST an image), /upload, /healthz, "
                    "/metrics.")
    add_serve_options(serve)
    add_model_options(serve)
    serve.set_defaults(handler=cmd_serve)

    detect = commands.add_parser(
        "detect", parents=[common], help="detect objects in images and videos, print one JSON line per picture",
        description="Detect objects in images and videos. Prints one JSON object per image or video "
                    "frame (image, width, height, backend, inference_ms, detections; a frame adds "
                    "frame and time) and writes annotated copies with --out (a video's as an MJPG "
                    ".avi). A folder stands for its images and videos, in name order; - for a picture piped in "
                    "(curl -s http://camera/snapshot.jpg | python app.py detect -). Unreadable files "
                    "are reported on stderr and make the exit status 1.")
    detect.add_argument("images", nargs="+", metavar="FILE|FOLDER|-", help="- reads one picture from standard input")
    detect.add_argument("--out", type=os.path.expanduser, metavar="DIR", help="write annotated copies here")
    add_model_options(detect)
    detect.set_defaults(handler=cmd_detect)

    fetch = commands.add_parser(
        "fetch-model", parents=[common], help="download and verify the model, print its path",
        description="Download a named model into the cache ($STREAMDETECT_HOME, else "
                    "$XDG_CACHE_HOME/streamdetect), verify its SHA-256 and print its path.")
    fetch.add_argument("--model", type=os.path.expanduser, default=env("MODEL", DEFAULT_MODEL),
                       help="model name (default %(default)s)")
    fetch.set_defaults(handler=cmd_fetch_model)

    build = commands.add_parser(
        "build-engine", parents=[common], help="build and cache the TensorRT engine ahead of time",
        description="Build the TensorRT engine for the model (minutes on a Jetson Nano) into the cache "
                    "($STREAMDETECT_HOME/engines) and print its path. The server then starts at once.")
    add_model_options(build)
    build.set_defaults(handler=cmd_build_engine)

    check = commands.add_parser(
        "check", parents=[common], help="show what this machine offers and what auto will use",
        description="Print Python, OpenCV (and its GStreamer support), the inference backends and why "
                    "each can or cannot run, CUDA devices, cameras, what --backend auto and "
                    "--source auto will pick, and whether the model is downloaded (and intact).")
    check.set_defaults(handler=cmd_check)

    compare = commands.add_parser(
        "compare", parents=[common], help="run the model on each backend and compare them",
        description="Run one model on each available backend over a few images (a folder: its images; "
                    "default: test:// frames): median inference time, the largest raw-output difference "
                    "from the first backend, and whether the detections are the same. Exit status 1 if "
                    "they differ.")
    compare.add_argument("images", nargs="*", metavar="IMAGE|FOLDER")
    compare.add_argument("--backends", help="comma-separated, in order (default: all available)")
    compare.add_argument("--frames", type=ranged(int, 1), default=5,
                         help="test:// frames without images (default %(default)s)")
    compare.add_argument("--repeat", type=ranged(int, 1), default=5, help="timed runs per image (default %(default)s)")
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    add_model_options(compare)
    compare.set_defaults(handler=cmd_compare)
    for command in commands.choices.values():  # whose usage a mistyped option is shown with
        command.set_defaults(command_parser=command)
    return parser


def configure_logging(level):
    """Our log on stderr at `level`; OpenCV's own only at DEBUG (camera.quiet_opencv)."""
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_opencv(level)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(arg in COMMANDS for arg in argv) and not {"-h", "--help"} & set(argv):
        argv.insert(0, "serve")
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # named by the command's own parser: `python app.py check: error: ...`, its usage
        args.command_parser.error("unrecognized arguments: " + " ".join(unknown))
    refuse_unknown_environment_settings()
    configure_logging(args.log_level)
    try:
        return args.handler(args)
    except USER_ERRORS as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # whoever read our output has gone (`| head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the flush at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
else:
    # The WSGI callable for uWSGI (module = app:app), configured by $STREAMDETECT_*.
    # Building it starts nothing: the pipeline starts at the first request.
    environment_settings = settings_from_env()  # a bad $STREAMDETECT_* value: argparse's one-line error
    if "uwsgi" in sys.modules:
        configure_logging(environment_settings.log_level)
    app = create_app(environment_settings)
