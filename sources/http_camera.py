"""http(s):// cameras: an MJPEG stream read by OpenCV, or a snapshot URL asked once per
frame; the camera's first answer tells which, and why one cannot be read."""
import http.client
import logging
import time
import urllib.error

import cv2
import numpy as np

from errors import SourceError
from sources.login import camera_opener, unauthorized
from sources.opencv_source import OpenCVSource

log = logging.getLogger("streamdetect.source")


class HTTPSource(OpenCVSource):
    """An http(s):// camera: a stream OpenCV reads (MJPEG), or a snapshot URL that answers one
    picture per request, which is asked again for each frame, at most `fps` times a second.
    The camera's first answer tells which, and why one cannot be read (a 404, a login
    wanted, a web page rather than the stream)."""

    MAX_PICTURE_BYTES = 20 << 20

    def __init__(self, uri, fps):
        super(HTTPSource, self).__init__(uri, uri, cv2.CAP_FFMPEG)
        self.url, self.opener = camera_opener(uri)
        self.snapshot_fps = fps
        self.picture = None  # a snapshot URL's latest answer (bytes); None while a stream
        self.picture_type = ""
        self.picture_unused = False  # the answer to open(), the first frame

    def open(self):
        self.picture = None
        kind, picture, problem = self._ask()
        if picture is not None:
            if cv2.imdecode(np.frombuffer(picture, np.uint8), cv2.IMREAD_COLOR) is None:
                raise SourceError("{} answers {} that OpenCV cannot decode".format(self.uri, kind))
            self.picture, self.picture_type, self.picture_unused = picture, kind, True
            self.interval = 1.0 / self.snapshot_fps
            self.next_due = time.monotonic() + self.interval
            return
        try:
            super(HTTPSource, self).open()
        except SourceError:
            if problem is None:
                problem = "it is a web page (text/html), not the video stream: give the stream's own URL" \
                    if kind == "text/html" else "it answers {}, which OpenCV cannot read as a video".format(kind)
            raise SourceError("cannot open {}: {}".format(self.uri, problem))

    def _ask(self):
        """(Content-Type, the picture if the answer is one, else None, what went wrong or None).
        A stream's answer is left unread."""
        try:
            with self.opener.open(self.url, timeout=5) as answer:
                kind = answer.headers.get_content_type()
                if not kind.startswith("image/"):
                    return kind, None, None
                picture = answer.read(self.MAX_PICTURE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 401:
                return "", None, unauthorized(self.target)
            return "", None, "it answers {} {}".format(exc.code, http.client.responses.get(exc.code, exc.reason))
        except urllib.error.URLError as exc:
            return "", None, "cannot reach it: {}".format(getattr(exc.reason, "strerror", None) or exc.reason)
        except Exception as exc:  # timeouts, a reset, an answer that is no HTTP: OpenCV may do better
            return "", None, "cannot read its answer: {}".format(exc)
        if len(picture) > self.MAX_PICTURE_BYTES:
            return kind, None, "it answers a picture of over {} MB".format(self.MAX_PICTURE_BYTES >> 20)
        return kind, picture, None

    def mode(self):
        if self.picture is None:  # FFmpeg reads no frame rate from an MJPEG stream: it reports 25, always
            return "{} stream, at the camera's own rate".format(self._size_and_codec())
        return "snapshot URL ({}), asked at most {:g} times a second".format(self.picture_type, self.snapshot_fps)

    def grab(self):
        if self.picture is None:
            return super(HTTPSource, self).grab()
        if self.picture_unused:
            self.picture_unused = False
            return True
        delay = self.next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_due = max(self.next_due + self.interval, time.monotonic())
        _, picture, problem = self._ask()
        if picture is None:
            log.warning("%s: %s", self.uri, problem or "it no longer answers a picture")
            return False
        self.picture = picture
        return True

    def retrieve(self):
        if self.picture is None:
            return super(HTTPSource, self).retrieve()
        return cv2.imdecode(np.frombuffer(self.picture, np.uint8), cv2.IMREAD_COLOR)
