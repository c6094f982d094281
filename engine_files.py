"""The files behind the engines: a model's SHA-256, the key a TensorRT engine is cached
under, atomic writes, and the images an INT8 engine is calibrated with (and whether a
cached one was calibrated on them)."""
import functools
import hashlib
import logging
import os
import tempfile

import cv2

import data_processing
from errors import EngineError

log = logging.getLogger("streamdetect.engine")


def file_sha256(path):
    """The file's SHA-256, read once per version of the file: a named model's is checked when
    it is resolved, and the TensorRT engine's cache key needs it again."""
    status = os.stat(path)
    return _sha256_of(os.path.abspath(path), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path, size, mtime_ns):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def engine_cache_key(onnx_sha256, trt_version, gpu_name, compute_capability, precision, input_shape,
                     calibration_scale=None):
    """A short key naming everything an engine is only valid for (an INT8 engine:
    also the input scale its calibration images were multiplied by)."""
    ingredients = [onnx_sha256, trt_version, gpu_name, compute_capability, precision,
                   "x".join(str(d) for d in input_shape)]
    if calibration_scale is not None:
        ingredients.append(repr(float(calibration_scale)))
    return hashlib.sha256("|".join(ingredients).encode()).hexdigest()[:16]


def write_atomically(path, data):
    """Write `data` so that `path` is either absent, the old file, or all of `data`."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, partial = tempfile.mkstemp(prefix=".partial-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def calibration_files(folder, limit=200):
    """The files that calibrate an INT8 engine: the first `limit` of `folder`, by name."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder))[:limit]


def calibration_fingerprint(folder):
    """What the calibration set is: its files' names, sizes and modification times (reading
    them would take about as long as calibrating)."""
    entries = []
    for path in calibration_files(folder):
        try:
            status = os.stat(path)
        except OSError:  # a broken link: no image either
            continue
        entries.append("{}|{}|{}".format(os.path.basename(path), status.st_size, status.st_mtime_ns))
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def calibration_batches(folder, input_shape, input_scale):
    """INT8 calibration input: the images of calibration_files(folder), pre-processed like frames."""
    if not folder or not os.path.isdir(folder):
        raise EngineError("--precision int8 needs --calibration-images DIR: a folder of images like "
                          "the ones the camera sees (a few hundred)")
    _, _, height, width = input_shape
    batches = []
    for path in calibration_files(folder):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is not None:
            batches.append(data_processing.preprocess(image, (height, width), input_scale))
    if not batches:
        raise EngineError("--calibration-images {} has no images OpenCV can read".format(folder))
    return batches


def calibrated_on(engine_path, fingerprint, folder):
    """Whether the cached INT8 engine at `engine_path` was calibrated on the images of `folder`
    (their calibration_fingerprint); if not, it and its calibration cache are removed: given
    other images, a user expects them used."""
    try:
        with open(engine_path + ".calibrated-from", "rb") as handle:
            if handle.read().decode() == fingerprint:
                return True
    except (IOError, OSError, UnicodeError):
        pass
    if os.path.isfile(engine_path):
        log.info("cached engine %s was calibrated on other images than --calibration-images %s; "
                 "calibrating and building it again", engine_path, folder)
    for stale in (engine_path, engine_path + ".calibration", engine_path + ".calibrated-from"):
        try:
            os.remove(stale)
        except OSError:
            pass  # absent (in a read-only cache, the old calibration cache is still read)
    return False


def note_calibration(engine_path, fingerprint):
    """Keep which images the engine at `engine_path` was calibrated on, for calibrated_on()."""
    try:
        write_atomically(engine_path + ".calibrated-from", fingerprint.encode())
    except OSError:
        pass  # the engine's own save says why; it is then calibrated again next time
