"""Uploaded pictures (/api/detect, /upload): reading the body within its limit, a picture
sent as bytes, base64, a data: URL or JSON, decoded only after its pixel count is checked,
and the few places in which uploads are handled at once."""
import base64
import contextlib
import io
import json
import re
import threading
import warnings

from flask import request
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from errors import ModelError
from parsing import listed_names
from pictures import decoded_picture, fitted
from web_params import HttpError, fraction_asked
from yolo_tool import Detection, result_record

# Uploads handled at once, from decoding one to answering: the detector takes them one or
# two at a time anyway, and each can hold ~150 MB (a 40-megapixel picture decoded, then
# drawn on), so more at once would only put a 4 GB Jetson's memory at risk. Others wait
# their turn, this long at most.
UPLOADS_AT_ONCE = 2
UPLOAD_WAIT_SECONDS = 30.0
# The longest side of the picture the upload page shows: a phone's photo, 24 Mpx, would
# make a page of ~10 MB and take a Nano seconds to encode, for no more than a screen shows.
UPLOAD_PAGE_PIXELS = 1920
# libjpeg's largest side: a longer picture's annotated JPEG is scaled to it (a panorama's PNG may be longer).
JPEG_MAX_SIDE = 65500
# The brands of ISO media files that hold a picture (HEIF), after 'ftyp' at byte 4.
HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
               b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")


class UploadPlaces(object):
    """UPLOADS_AT_ONCE places for uploads, each held from decoding to answering."""

    def __init__(self):
        self._places = threading.BoundedSemaphore(UPLOADS_AT_ONCE)

    @contextlib.contextmanager
    def place(self):
        if not self._places.acquire(timeout=UPLOAD_WAIT_SECONDS):
            raise HttpError(503, "the server is busy with {} other uploads; try again in a moment"
                                 .format(UPLOADS_AT_ONCE))
        try:
            yield
        finally:
            self._places.release()


def received_upload(max_bytes):
    """(name, bytes, thresholds) of an upload, read and checked before an upload place is
    taken: a slow sender must not hold one while its body arrives."""
    thresholds = upload_thresholds()
    if (request.content_length or 0) > max_bytes:  # refused before a byte of it is read (Werkzeug 2.0
        raise RequestEntityTooLarge()              # would read up to the limit, then wait for the rest)
    # Anything but a multipart form is the image itself, whatever its Content-Type:
    # `curl --data-binary @photo.jpg` labels it form-urlencoded, and parsing it as a
    # form would consume it.
    if request.mimetype != "multipart/form-data":
        return "upload", read_body(request.stream, max_bytes), thresholds
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


def detect_upload(cameras, received, max_pixels):
    """(frame, detections, record, camera) of a received upload, in an upload place."""
    name, data, thresholds = received
    frame = decode_upload(data, max_pixels)
    camera = cameras.get()
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


def upload_too_large(max_upload_mb):
    """The 413 message, from the app and from nginx alike."""
    return "upload is larger than {:g} MB (--max-upload-mb)".format(max_upload_mb)


def read_body(stream, limit):
    """A request body of at most `limit` bytes: Werkzeug before 2.3 (Python 3.6's)
    applies MAX_CONTENT_LENGTH only to forms, and a WSGI read may return less
    than asked."""
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


def picture_bytes(data):
    """The picture of an upload that holds none as sent: a browser script may send it in
    base64, bare, as a data: URL, or as JSON {"image": "..."}."""
    if data.lstrip()[:1] == b"{":
        try:
            data = json.loads(data.decode("utf-8"))["image"].encode("ascii")
        except RecursionError:  # Python's parser recurses once per level: {"a": [[[[...
            raise HttpError(400, 'a JSON upload is {"image": "<the picture in base64>"}; this one is nested '
                                 'too deeply to read')
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
        kind = HEIF_BRANDS[data[8:12]]
        raise HttpError(400, "the upload is {} {} picture (as iPhones take), which cannot be read here; send it as "
                             "JPEG (on an iPhone: Settings > Camera > Formats > Most Compatible)"
                             .format("an" if kind.startswith("A") else "a", kind))
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


def shown_smaller(frame, detections, longest):
    """(`frame` scaled down to at most `longest` pixels a side, the detections' boxes scaled alike)."""
    smaller = fitted(frame, (longest, longest))
    if smaller is frame:
        return frame, detections
    scale = float(smaller.shape[1]) / frame.shape[1]
    return smaller, [Detection(d.label, d.class_id, d.score, [v * scale for v in d.box]) for d in detections]
