"""The Tiny YOLOv2 model: its files and verified download, labels, anchors, and the
`Detector` (pre-processing -> engine -> decoding)."""
import contextlib
import glob
import hashlib
import logging
import os
import sys
import tempfile
import time

import cv2
import numpy as np

import data_processing
from drawing import class_colors, drawn_label
from engine_files import file_sha256
from errors import ModelError
from get_engine import create_engine, last_line
from parsing import slip_for

log = logging.getLogger("streamdetect.model")

VOC_LABELS = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
# Darknet tiny-yolo-voc anchors, (width, height) in grid cells.
VOC_ANCHORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))


class NamedModel(object):
    """A model we know by name: where to get it and how to read it."""

    def __init__(self, filename, urls, sha256, size, labels, anchors, input_scale):
        self.filename = filename
        self.urls = tuple(urls)  # tried in order: any copy will do, since its SHA-256 is checked
        self.sha256 = sha256
        self.size = size
        self.labels = labels
        self.anchors = anchors
        self.input_scale = input_scale


NAMED_MODELS = {
    # ONNX model zoo, MIT licence; takes RGB at 0-255, outputs 1x125x13x13.
    "tinyyolov2-voc": NamedModel(
        filename="tinyyolov2-8.onnx",
        # GitHub serves the zoo's files from Git LFS, which refuses downloads whenever the repository
        # is over its monthly quota; the zoo's copy on Hugging Face is the same file.
        urls=("https://github.com/onnx/models/raw/4f43949841cb55a0b98dc8fcd045431ccafd9f96/validated/"
              "vision/object_detection_segmentation/tiny-yolov2/model/tinyyolov2-8.onnx",
              "https://huggingface.co/onnxmodelzoo/tinyyolov2-8/resolve/869707e16e57006f97d98af54cfdc8a1d388ae61/"
              "tinyyolov2-8.onnx"),
        sha256="583fb7fdc948435ceac9fa82efc7708701efe8382a859a3dd46526b155f5f2ae",
        size=63480982,
        labels=VOC_LABELS,
        anchors=VOC_ANCHORS,
        input_scale=1.0,
    ),
}
DEFAULT_MODEL = "tinyyolov2-voc"


def cache_dir(*parts, create=True):
    """Folder for downloaded models and built engines: $STREAMDETECT_HOME, else the XDG
    cache; made unless `create` is false (a service user's home may not be writable,
    and a model given by path needs none of it)."""
    home = os.environ.get("STREAMDETECT_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "streamdetect")
    path = os.path.join(home, *parts)
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ModelError("cannot make the cache folder {} ({}); set STREAMDETECT_HOME to a writable "
                             "folder".format(path, exc.strerror or exc))
    return path


class _Progress(object):
    """A download progress bar on a terminal, a log line every 10 % elsewhere."""

    def __init__(self, total, label, stream=None):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_shown = 0.0
        self.last_decile = -1

    def update(self, done):
        fraction = min(done / float(self.total), 1.0) if self.total else 0.0
        if self.tty:
            now = time.monotonic()
            if now - self.last_shown < 0.2 and done < self.total:
                return
            self.last_shown = now
            bar = "#" * int(fraction * 30)
            self.stream.write("\r{} [{:<30}] {:5.1f}% {:.1f}/{:.1f} MB".format(
                self.label, bar, fraction * 100, done / 1e6, self.total / 1e6))
            if done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif int(fraction * 10) > self.last_decile:
            self.last_decile = int(fraction * 10)
            log.info("%s: %d%% (%.1f of %.1f MB)", self.label, self.last_decile * 10, done / 1e6,
                     self.total / 1e6)


class DownloadError(ModelError):
    """This copy of a model could not be had (network, cut short, wrong bytes); another may."""


def download(url, dest, sha256, size=None, timeout=30):
    """Fetch `url` to `dest`, verified against `sha256`, never leaving a partial file.

    The bytes go to a hidden temporary file beside `dest` and replace it only
    after the checksum matches, so an interrupted or corrupted transfer can
    never be taken for the model later.
    """
    from http.client import HTTPException
    from urllib.error import URLError
    from urllib.request import urlopen

    folder = os.path.dirname(os.path.abspath(dest))
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=folder)
    try:
        digest = hashlib.sha256()
        received = 0
        with _saving(dest, size), os.fdopen(handle, "wb") as out:  # the flush at close, too
            try:
                response = urlopen(url, timeout=timeout)
                total = size or int(response.headers.get("Content-Length") or 0)
                progress = _Progress(total, "downloading " + os.path.basename(dest))
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    with _saving(dest, total):
                        out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(received)
            except (URLError, HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                reason = getattr(reason, "strerror", None) or reason  # "Connection refused", not "[Errno 111] ..."
                raise DownloadError("cannot download {} ({}); check the internet connection and run "
                                    "again, or download it yourself and pass --model PATH"
                                    .format(url, reason))
            out.flush()
            os.fsync(out.fileno())
        if size is not None and received != size:
            raise DownloadError("download of {} stopped at {} of {} bytes; run the command again, or "
                                "pass --model PATH".format(url, received, size))
        if digest.hexdigest() != sha256:
            raise DownloadError("download of {} has SHA-256 {}, expected {}; the file was discarded, "
                                "run the command again or pass --model PATH"
                                .format(url, digest.hexdigest(), sha256))
        os.replace(partial, dest)
        log.info("saved %s (%d bytes, SHA-256 verified)", dest, received)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return dest


@contextlib.contextmanager
def _saving(dest, size):
    """A write error named as one: a full disk is no network failure."""
    try:
        yield
    except OSError as exc:
        raise ModelError("cannot save {} ({}); it needs {}free space there: make room, or set "
                         "STREAMDETECT_HOME to a folder that has it".format(
                             dest, exc.strerror or exc, "{:.1f} MB of ".format(size / 1e6) if size else ""))


def resolve_model(model):
    """Model name or ONNX path -> local path, downloading a named model on first use."""
    if model in NAMED_MODELS:
        spec = NAMED_MODELS[model]
        own_url = os.environ.get("STREAMDETECT_MODEL_URL")
        urls = (own_url,) if own_url else spec.urls
        path, state = cached_model(model)
        if state == "verified":
            return path
        if state == "damaged":
            log.warning("model file %s is damaged (its SHA-256 is not the model's); downloading it again "
                        "from %s", path, urls[0])
        elif state == "incomplete":
            log.warning("model file %s is incomplete (%d of %d bytes); downloading it again from %s",
                        path, os.path.getsize(path), spec.size, urls[0])
        else:
            log.info("model %s not in %s yet; downloading %s", model, os.path.dirname(path), urls[0])
        for url, next_url in zip(urls, urls[1:]):
            try:
                return download(url, path, spec.sha256, spec.size)
            except DownloadError as exc:  # a full disk is no reason to try another copy: ModelError
                log.warning("%s; trying the copy at %s", str(exc).split("; ")[0], next_url)
        return download(urls[-1], path, spec.sha256, spec.size)
    if os.path.isdir(model):
        inside = sorted(glob.glob(os.path.join(glob.escape(model), "*.onnx")))
        raise ModelError("model '{}' is a folder; pass --model PATH to an ONNX file{}".format(
            model, ", such as " + inside[0] if inside else " (this folder has none)"))
    if not os.path.isfile(model):
        raise ModelError("model '{}' is neither a file nor a known name ({}); pass --model PATH "
                         "to an ONNX file".format(model, ", ".join(sorted(NAMED_MODELS))))
    return model


def cached_model(name):
    """(path, state) of a named model's copy in the cache: "missing", "incomplete", "damaged" or
    "verified". Checked at every start (a fraction of a second): an SD card's bit rot would
    otherwise give wrong detections, or a corrupt-model error, for good."""
    spec = NAMED_MODELS[name]
    path = os.path.join(cache_dir("models"), spec.filename)
    if not os.path.isfile(path):
        return path, "missing"
    if os.path.getsize(path) != spec.size:
        return path, "incomplete"
    return path, "verified" if file_sha256(path) == spec.sha256 else "damaged"


def read_labels(path):
    """One label per line; blank lines are skipped. UTF-8 whatever the locale (Python 3.6 under
    a service manager reads ASCII), without the byte-order mark an editor may put first."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        raise ModelError("cannot read labels file {}: {}".format(path, exc.strerror or exc))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelError("labels file {} is not UTF-8 text (line {} has byte 0x{:02x}); save it as UTF-8"
                         .format(path, data[:exc.start].count(b"\n") + 1, data[exc.start]))
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelError("labels file {} has no labels (one per line expected)".format(path))
    return labels


def parse_anchors(text):
    """'w1,h1,w2,h2,...' (grid cells) -> ((w1, h1), (w2, h2), ...)."""
    try:
        values = [float(v) for v in text.replace(" ", ",").split(",") if v]
    except ValueError:
        raise ModelError("--anchors '{}' must be numbers: w1,h1,w2,h2,... in grid cells".format(text))
    if not values or len(values) % 2 or min(values) <= 0:
        raise ModelError("--anchors '{}' must be positive width,height pairs in grid cells"
                         .format(text))
    return tuple(zip(values[0::2], values[1::2]))


class Detection(object):
    """One detected object; `box` is [x1, y1, x2, y2] in image pixels."""

    __slots__ = ("label", "class_id", "score", "box", "id")

    def __init__(self, label, class_id, score, box):
        self.label = label
        self.class_id = class_id
        self.score = score
        self.box = box
        self.id = None  # the tracked object's, in a stream or a video

    def to_dict(self):
        record = {"label": self.label, "class_id": self.class_id, "score": round(self.score, 4),
                  "box": [round(v, 1) for v in self.box]}
        if self.id is not None:
            record["id"] = self.id
        return record


def result_record(image, width, height, backend, inference_ms, detections):
    """The JSON object `detect` prints and /api/detect returns."""
    return {"image": image, "width": width, "height": height, "backend": backend,
            "inference_ms": round(inference_ms, 2), "detections": [d.to_dict() for d in detections]}


class Detector(object):
    """A Tiny YOLOv2 model on one engine: frame in, detections out.

    Everything that can be wrong with the model (shape, classes vs labels,
    anchors) is checked here, at load time, with one warm-up inference.
    """

    def __init__(self, model=DEFAULT_MODEL, backend="auto", labels=None, anchors=None,
                 input_scale=None, conf_threshold=0.5, iou_threshold=0.45, precision="auto",
                 workspace_mb=256, calibration_images=None, frames_in_flight=1, classes=None, batch=0, cameras=1):
        spec = NAMED_MODELS.get(model)
        self.model_name = model if spec else os.path.basename(model)
        self.model_path = resolve_model(model)
        self.anchors = tuple(anchors or (spec.anchors if spec else VOC_ANCHORS))
        if input_scale is None:
            input_scale = spec.input_scale if spec else 1.0
        self.input_scale = input_scale
        self.output_problem = None  # what is wrong with the model's outputs, once seen
        self.conf_threshold = conf_threshold
        self.iou_threshold = iou_threshold
        self.engine = create_engine(self.model_path, backend, cache_folder=cache_dir("engines", create=False),
                                    precision=precision, workspace_mb=workspace_mb,
                                    calibration_images=calibration_images, input_scale=input_scale,
                                    frames_in_flight=frames_in_flight, batch=batch, cameras=cameras)
        self.backend = self.engine.name
        _, _, self.input_h, self.input_w = self.engine.input_shape

        try:
            output = self.engine.infer(np.zeros(self.engine.input_shape, dtype=np.float32))
        except Exception as exc:  # it loaded, but its graph does not run (weights that do not fit, say)
            self.engine.close()
            raise ModelError("{} loads but does not run on {}: {}; check the model, or try another --backend "
                             "(python3 app.py check lists them)".format(self.model_name, self.backend, last_line(exc)))
        self.num_classes = self._check_output(output.shape)
        if labels is None:
            labels = spec.labels if spec else (VOC_LABELS if self.num_classes == len(VOC_LABELS)
                                               else ["class{}".format(i) for i in range(self.num_classes)])
        if len(labels) != self.num_classes:
            raise ModelError("{} predicts {} classes but {} labels were given; pass --labels FILE "
                             "with one label per class".format(self.model_name, self.num_classes,
                                                               len(labels)))
        self.labels = list(labels)
        self.colors = class_colors(self.num_classes)
        redrawn = ["{} as {}".format(label, drawn_label(label, index)) for index, label in enumerate(self.labels)
                   if drawn_label(label, index) != label]
        if redrawn:
            log.warning("OpenCV %s draws ASCII only, so the pictures show %s%s (the API gives the names)",
                        cv2.__version__, ", ".join(redrawn[:5]),
                        " and {} more".format(len(redrawn) - 5) if len(redrawn) > 5 else "")
        self.class_filter = self.class_ids(classes) if classes else None

    def class_names(self):
        """The classes --classes keeps, in the model's order; None when it keeps all."""
        return None if self.class_filter is None else [self.labels[i] for i in self.class_filter]

    def class_ids(self, names, asked_by="--classes"):
        """Label names -> the class ids to keep, in order; a name in another case counts where it
        names one class (Person: person). `asked_by` names the option in the error."""
        by_case = {}
        for label in self.labels:
            by_case.setdefault(label.lower(), set()).add(label)
        kept, unknown = set(), []
        for name in names:
            matches = {name} if name in self.labels else by_case.get(name.lower(), set())
            if len(matches) == 1:
                kept.add(self.labels.index(matches.pop()))
            else:
                meant = " or ".join(sorted(matches)) or slip_for(name, self.labels)
                unknown.append(name + (" (did you mean {}?)".format(meant) if meant else ""))
        if unknown:
            raise ModelError("{}: {} {} not among the classes of {}: {}".format(
                asked_by, ", ".join(unknown), "is" if len(unknown) == 1 else "are", self.model_name,
                ", ".join(self.labels)))
        return sorted(kept)

    def _check_output(self, shape):
        anchors = len(self.anchors)
        if len(shape) != 4:
            raise ModelError("{} output has shape {}; a Tiny YOLOv2 region output is "
                             "1 x anchors*(5+classes) x H x W".format(self.model_name, list(shape)))
        channels = shape[1]
        if channels % anchors or channels // anchors <= 5:
            raise ModelError("{} output has {} channels, which is not {} anchors x (5 + classes); "
                             "pass the model's --anchors".format(self.model_name, channels, anchors))
        return channels // anchors - 5

    def prepare(self, frame_bgr):
        """Frame -> the model's input blob."""
        return data_processing.preprocess(frame_bgr, (self.input_h, self.input_w), self.input_scale)

    def run(self, blob):
        """Input blob -> (raw model output, inference milliseconds)."""
        started = time.perf_counter()
        output = self.engine.infer(blob)
        return output, (time.perf_counter() - started) * 1000.0

    def infer(self, frame_bgr):
        """Frame -> (raw model output, inference milliseconds)."""
        return self.run(self.prepare(frame_bgr))

    def decode(self, output, image_size, conf_threshold=None, iou_threshold=None, class_filter=None):
        """Raw model output -> detections in the pixels of an image of `image_size` (w, h);
        thresholds and class ids not given are the detector's own."""
        problems = []
        boxes, scores, class_ids = data_processing.postprocess(
            output, self.anchors, image_size,
            self.conf_threshold if conf_threshold is None else conf_threshold,
            self.iou_threshold if iou_threshold is None else iou_threshold,
            self.class_filter if class_filter is None else class_filter, problems)
        if problems and self.output_problem is None:
            self._tell_outputs_out_of_range(problems)
        return [Detection(self.labels[c], int(c), float(s), [float(v) for v in b])
                for b, s, c in zip(boxes, scores, class_ids)]

    def _tell_outputs_out_of_range(self, problems):
        """Say once, in the log and in output_problem (/api/stats, compare), that the model's
        outputs are out of range: each frame's would otherwise be a flood of the same."""
        self.output_problem = "the model's outputs are out of range ({}): a broken export, or an FP16 engine " \
                              "that overflowed? Those boxes are left out".format(", ".join(sorted(set(problems))))
        log.warning("%s: %s", self.model_name, self.output_problem)

    def detect(self, frame_bgr, **decode_options):
        """Frame -> (detections, inference milliseconds); `decode_options` as for decode()."""
        output, inference_ms = self.infer(frame_bgr)
        height, width = frame_bgr.shape[:2]
        return self.decode(output, (width, height), **decode_options), inference_ms

    def close(self):
        self.engine.close()
