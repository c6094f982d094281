"""Frame sources opened from a URI, and the `Camera`: one detection pipeline per
source whose annotated JPEGs are broadcast to every viewer.

The pipeline runs its stages in threads so that only inference is ever in the
way of inference: capture grabs every frame but decodes only those a detector
will take, and keeps only the newest (older ones are dropped and counted),
detection runs the engine on the newest (one thread per frame the engine takes
at once, their starts kept apart; with one, capture pre-processes the next frame
meanwhile), and rendering decodes the boxes, draws, encodes once and publishes,
in capture order: a render thread of its own with one detector, overlapping the
next inference; with several, each detector renders the frame it inferred, since
a render thread would only interrupt an inferring core. Viewers only read the
published frame; every wait has a timeout, so a dead stage or source can never
hang a viewer.
"""
import collections
import fractions
import functools
import glob
import http.client
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import cv2
import numpy as np

from yolo_tool import draw_detections

log = logging.getLogger("streamdetect.camera")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".mjpeg", ".mjpg")


# With several frames in flight, the least time between two starts, as a share of
# the spacing that would spread the detectors evenly (inference time / frames in
# flight). Measured here (two frames, a 60 FPS source, 12 s): overtaken frames went
# from 2.5 % of the inferences to none; the waits it adds took 0.3 % of the
# detectors' time.
STAGGER = 0.5

# After a /snapshot.jpg?annotate=0, frames keep their picture before drawing (a copy, 0.02 ms
# at 640x480) for this long, so that a script polling raw pictures gets each at once.
RAW_KEPT_SECONDS = 30.0

# A frame is decoded when a detector may take it before the source's next frame,
# with this share of a frame interval to spare for an inference that ends early.
# Measured here (two frames at once, a 60 FPS source): 60 % of the frames decoded
# for 47 % inferred, the capture thread's CPU down from 2.2 to 1.5 % of a core, and
# the detectors' waits for a frame as short as when every frame was decoded.
DECODE_MARGIN = 0.25

# What a capture may ask for, (type, least, most): up to 8K frames and 240 FPS (fast
# USB cameras). Beyond, a typo would only allocate gigabytes or spin a core.
CAPTURE_LIMITS = {"width": (int, 16, 7680), "height": (int, 16, 7680), "fps": (float, 0.1, 240.0)}

# --flip: how each frame is turned before detection, for a camera mounted upside down or
# sideways, or a mirror view: name -> (nvvidconv's flip-method, which turns a CSI camera's
# frames in hardware; the same turn in software, for every other source). The names are
# jetson-inference's (--input-flip).
FLIPS = {
    "none": (0, None),
    "counterclockwise": (1, lambda frame: cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)),
    "rotate-180": (2, lambda frame: cv2.flip(frame, -1)),
    "clockwise": (3, lambda frame: cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)),
    "horizontal": (4, lambda frame: cv2.flip(frame, 1)),
    "vertical": (6, lambda frame: cv2.flip(frame, 0)),
}


class SourceError(Exception):
    """A source cannot be opened or read; the message says what to try."""


class TooManyViewers(Exception):
    """--max-viewers viewers are already watching."""


# --- frame sources ----------------------------------------------------------

class FrameSource(object):
    """A source of BGR frames, read in two steps as OpenCV's VideoCapture is:
    `grab` takes the next frame off the device (False when the source fails or
    ends), `retrieve` decodes it into a picture (None when it cannot). The
    pipeline grabs every frame, to keep up with the device, but decodes only
    those a detector will take."""

    live = True  # a live source is reopened when it fails; a finished file is not
    turn = None  # --flip in software: frame -> the frame turned (set by open_source)
    fit = None  # (w, h): larger frames are scaled down to fit (set by open_source: --width, --height)

    def __init__(self, uri):
        self.uri = without_secrets(uri)  # as logs, /api/stats and status frames show it

    def open(self):
        """Open the device or stream; raise SourceError with a hint when it cannot."""

    def mode(self):
        """What the open source delivers, for the log: '640x480 at 30 FPS'."""
        raise NotImplementedError

    def grab(self):
        raise NotImplementedError

    def retrieve(self):
        raise NotImplementedError

    def close(self):
        """Release the device or stream."""


class SyntheticSource(FrameSource):
    """A synthetic scene that always works: a red square and a green disc move
    over a gradient, with a clock. `die_after=N` makes it fail after N frames
    (each reopen starts the count again), to exercise reconnection; `hang_after=N`
    makes its read never return after N frames, as a hung driver's."""

    def __init__(self, uri, width=640, height=480, fps=30.0, die_after=0, hang_after=0):
        super(SyntheticSource, self).__init__(uri)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.die_after, self.hang_after = int(die_after), int(hang_after)
        ramp = np.linspace(40, 110, self.height, dtype=np.float32)[:, None]
        self.background = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self.background[:, :, 0] = (ramp + 40).astype(np.uint8)  # blue
        self.background[:, :, 1] = ramp.astype(np.uint8)
        self.background[:, :, 2] = (ramp * 0.4).astype(np.uint8)  # little red: only the square is red
        self.square = max(8, self.height // 4)
        self.count = 0
        self.next_due = 0.0
        self.grabbed_at = 0.0

    def open(self):
        self.count = 0
        self.next_due = time.monotonic()

    def mode(self):
        return "{}x{} at {:g} FPS".format(self.width, self.height, self.fps)

    def grab(self):
        if self.die_after and self.count >= self.die_after:
            return False
        if self.hang_after and self.count >= self.hang_after:
            threading.Event().wait()  # never set
        delay = self.next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_due = max(self.next_due + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
        self.count += 1
        self.grabbed_at = time.time()
        return True

    def retrieve(self):
        """The scene as it was when grabbed: drawing it is this source's decoding."""
        return self.scene(self.grabbed_at)

    def square_box(self, t):
        """Where the red square is at time `t`: [x1, y1, x2, y2] in pixels."""
        span_x, span_y = self.width - self.square, self.height - self.square
        x = int(abs((t * 90.0) % (2 * span_x) - span_x))
        y = int(abs((t * 55.0) % (2 * span_y) - span_y))
        return [x, y, x + self.square, y + self.square]

    def scene(self, t):
        """The disc passes under the square: covering it, the disc would hide it from a detector
        of red squares (the tests' model) in one frame in 6,000."""
        frame = self.background.copy()
        cx = int(self.width / 2 + self.width / 3 * np.cos(t * 0.8))
        cy = int(self.height / 2 + self.height / 3 * np.sin(t * 1.1))
        cv2.circle(frame, (cx, cy), max(6, self.height // 12), (40, 200, 40), -1)
        x1, y1, x2, y2 = self.square_box(t)
        cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 255), -1)
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + ".{:03d}".format(int(t * 1000) % 1000)
        cv2.putText(frame, "test:// {}  #{}".format(stamp, self.count), (10, self.height - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        return frame


class FolderSource(FrameSource):
    """The images and videos of a folder in name order (those matching `names`, a glob
    pattern), cycled: each image shown for 1/`fps` s, each video played through at its
    own rate, as `detect FOLDER` reads them. The folder is listed again at the end of
    each round, so files added meanwhile are shown; one OpenCV cannot read is said once
    and left out."""

    def __init__(self, uri, folder, fps=2.0, names="*"):
        super(FolderSource, self).__init__(uri)
        self.folder, self.names, self.fps = folder, names, float(fps)
        self.paths, self.index, self.next_due = [], 0, 0.0
        self.unreadable = set()  # (path, modification time) of files OpenCV could not read
        self.image = None
        self.video, self.video_frames = None, 0  # the video playing (an OpenCVSource), frames it gave

    def open(self):
        self._list()
        if not self.paths:
            if self.names != "*":  # one image, given by name
                raise SourceError("{} is gone or no longer an image OpenCV can read".format(self.uri))
            raise SourceError("folder {} has no images or videos OpenCV can read ({})".format(
                self.folder, ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)))
        self.next_due = time.monotonic()

    def _list(self):
        """The folder's files but those known unreadable as they are now (changed, one is tried again)."""
        paths = files_in(self.folder, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS, self.names)
        self.paths = [path for path in paths if _version(path) not in self.unreadable]
        self.index = 0

    def mode(self):
        videos = sum(1 for path in self.paths if path.lower().endswith(VIDEO_EXTENSIONS))
        images = len(self.paths) - videos
        shown = ["{} image{} at {:g} FPS".format(images, "" if images == 1 else "s", self.fps)] if images else []
        shown += ["{} video{} at {} own rate".format(videos, *("", "its") if videos == 1 else ("s", "their"))] \
            if videos else []
        return " and ".join(shown)

    def grab(self):
        """The next frame of the video playing, else of the next file OpenCV can read (an
        image is read here: a slide show is slow enough that decoding each is no waste);
        False when none is left."""
        while True:
            if self.video is not None:
                if self.video.grab():  # paced at the video's own rate
                    self.video_frames += 1
                    return True
                video, self.video = self.video, None
                video.close()
                self.next_due = video.next_due  # its last frame is shown for its time
                if not self.video_frames:  # opens, but gives no frame: not to be tried again each round
                    self._leave_out(video.target)
                continue
            if self.index >= len(self.paths):
                self._list()
                if not self.paths:
                    return False
            path = self.paths[self.index]
            self.index += 1
            if path.lower().endswith(VIDEO_EXTENSIONS):
                video = OpenCVSource(path, path, live=False, paced=True)
                try:
                    video.open()
                except SourceError:
                    self._leave_out(path)
                    continue
                video.next_due = self.next_due  # its first frame once the picture before had its time
                self.video, self.video_frames = video, 0
                continue
            self.image = cv2.imread(path, cv2.IMREAD_COLOR)
            if self.image is not None:
                self._wait(1.0 / self.fps)
                return True
            self._leave_out(path)

    def _leave_out(self, path):
        version = _version(path)
        if version[1] is not None:  # a file removed since the listing is no news
            log.warning("leaving out %s: not %s OpenCV can read (tried again once it changes)", path,
                        "a video" if path.lower().endswith(VIDEO_EXTENSIONS) else "an image")
            self.unreadable.add(version)

    def _wait(self, interval):
        """Until the picture before is shown for its time; the next is due `interval` later."""
        delay = self.next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_due = max(self.next_due + interval, time.monotonic())

    def retrieve(self):
        return self.image if self.video is None else self.video.retrieve()

    def close(self):
        if self.video is not None:
            self.video.close()
            self.video = None


def fitted(image, size):
    """`image` scaled down to fit `size` (w, h), keeping its proportions; as it is if it fits or no size is given."""
    if size is None:
        return image
    height, width = image.shape[:2]
    scale = min(float(size[0]) / width, float(size[1]) / height)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, int(round(width * scale))), max(1, int(round(height * scale)))),
                      interpolation=cv2.INTER_AREA)


def files_in(folder, extensions, names="*"):
    """The files of `folder` (not its subfolders) with these extensions whose names match the
    glob pattern `names`, in name order."""
    return sorted(path for path in glob.glob(os.path.join(glob.escape(folder), names))
                  if path.lower().endswith(extensions) and os.path.isfile(path))


def _version(path):
    """(path, modification time), or (path, None) for a file that has gone."""
    try:
        return path, os.path.getmtime(path)
    except OSError:
        return path, None


class OpenCVSource(FrameSource):
    """Anything cv2.VideoCapture opens: V4L2 devices, files, RTSP/HTTP streams,
    GStreamer pipelines (CSI cameras on Jetson)."""

    def __init__(self, uri, target, api=cv2.CAP_ANY, size=None, fps=None, hint="", live=True,
                 paced=False, loop=False):
        super(OpenCVSource, self).__init__(uri)
        self.target, self.api, self.size, self.fps = target, api, size, fps
        self.hint, self.live, self.paced, self.loop = hint, live, paced, loop
        self.capture = None
        self.next_due = 0.0
        self.interval = 0.0

    def open(self):
        params = []
        for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
            if hasattr(cv2, name) and self.api in (cv2.CAP_FFMPEG, cv2.CAP_ANY):
                params += [getattr(cv2, name), 5000]
        capture = cv2.VideoCapture(self.target, self.api, params) if params else \
            cv2.VideoCapture(self.target, self.api)
        if not capture.isOpened():
            capture.release()
            raise SourceError("cannot open {}{}".format(self.uri, "; " + self.hint if self.hint else ""))
        if self.size:
            width, height = self.size
            if width * height > 640 * 480:  # USB cameras deliver large frames fast only as MJPEG
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if self.fps and self.live:
            capture.set(cv2.CAP_PROP_FPS, self.fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        self.interval = 1.0 / (self.fps or reported_fps(capture))
        self.next_due = time.monotonic()
        self.capture = capture
        self._warn_if_mode_differs()

    def mode(self):
        return "{} at {:g} FPS".format(self._size_and_codec(), self._reported_mode()[3])

    def _size_and_codec(self):
        """'640x480 YUYV', or without the codec where the device or stream names none."""
        width, height, fourcc, _ = self._reported_mode()
        return "{}x{}{}".format(width, height, " " + fourcc if fourcc else "")

    def _reported_mode(self):
        """(width, height, FOURCC or "", FPS) as the device or stream reports them (0 where it does not)."""
        code = int(self.capture.get(cv2.CAP_PROP_FOURCC))
        fourcc = "".join(chr((code >> shift) & 0xFF) for shift in (0, 8, 16, 24)).strip("\0 ")
        return (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                fourcc if fourcc.isalnum() else "", round(self.capture.get(cv2.CAP_PROP_FPS), 2))

    def _warn_if_mode_differs(self):
        """A camera without the mode asked of it silently picks another: say so."""
        width, height, _, fps = self._reported_mode()
        asked_fps = self.fps if self.live else None
        if (self.size and width and (width, height) != tuple(self.size)) or \
                (asked_fps and fps and abs(fps - asked_fps) > 0.5):
            asked = ["{}x{}".format(*self.size)] if self.size else []
            asked += ["{:g} FPS".format(asked_fps)] if asked_fps else []
            log.warning("%s gives %s, not the %s asked (--width, --height, --fps): it has no such mode%s",
                        self.uri, self.mode(), " at ".join(asked),
                        "; v4l2-ctl --list-formats-ext lists its modes" if self.api == cv2.CAP_V4L2 else "")

    def grab(self):
        ok = self.capture.grab()
        if not ok and self.loop:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok = self.capture.grab()
        if not ok:
            return False
        if self.paced:  # a file is read as fast as the disk allows: play it at its own rate
            delay = self.next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.next_due = max(self.next_due + self.interval, time.monotonic() - self.interval)
        return True

    def retrieve(self):
        """The grabbed frame decoded (MJPEG) or converted (YUYV, a video's YUV) to BGR."""
        ok, frame = self.capture.retrieve()
        return frame if ok else None

    def close(self):
        if self.capture is not None:
            self.capture.release()
            self.capture = None


class HTTPSource(OpenCVSource):
    """An http(s):// camera: a stream OpenCV reads (MJPEG), or a snapshot URL that answers one
    picture per request, which is asked again for each frame, at most `fps` times a second.
    The camera's first answer tells which, and why one cannot be read (a 404, a login
    wanted, a web page rather than the stream)."""

    MAX_PICTURE_BYTES = 20 << 20

    def __init__(self, uri, fps):
        super(HTTPSource, self).__init__(uri, uri, cv2.CAP_FFMPEG)
        self.url, self.opener = _camera_opener(uri)
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
                return "", None, _unauthorized(self.target)
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


class RTSPSource(OpenCVSource):
    """An rtsp:// camera, read by OpenCV's FFmpeg. When it cannot be opened, the camera's
    answer to DESCRIBE (a player's first request) says why: no stream at that path, a login
    wanted, or a wrong one."""

    def __init__(self, uri):
        super(RTSPSource, self).__init__(uri, uri, cv2.CAP_FFMPEG)

    def open(self):
        try:
            super(RTSPSource, self).open()
        except SourceError:
            raise SourceError("cannot open {}: {}".format(self.uri, rtsp_refusal(self.target) or
                                                          "its server answers, but OpenCV cannot read the stream"))


def rtsp_refusal(uri, timeout=5.0):
    """Why the RTSP server of `uri` refuses it, from its answer to DESCRIBE with the URL's
    login (Digest or Basic, as the server asks); None when it accepts."""
    parts = urllib.parse.urlsplit(uri)
    url, user, password = _without_login(uri)
    login = None
    try:
        for _ in range(2):
            status, reason, challenges = _rtsp_describe(parts.hostname, parts.port or 554, url, login, timeout)
            if status != 401 or login is not None or user is None:
                break
            login = _authorization(challenges, "DESCRIBE", url, user, password)
            if login is None:
                break
    except OSError as exc:
        return "cannot reach it: {}".format(exc.strerror or exc)
    except ValueError:
        return "it does not answer RTSP"
    if status == 401:
        return _unauthorized(uri)
    if status >= 300:
        return "it answers {} {}".format(status, reason)
    return None


def _rtsp_describe(host, port, url, authorization, timeout):
    """(status, reason, WWW-Authenticate values) of one DESCRIBE of `url`."""
    request = "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: streamdetect\r\n{}\r\n".format(
        url, "Authorization: {}\r\n".format(authorization) if authorization else "")
    with socket.create_connection((host, port), timeout) as connection:
        connection.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer and len(answer) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    lines = answer.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("RTSP/") or not code.isdigit():
        raise ValueError("not an RTSP answer")
    challenges = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("www-authenticate:")]
    return int(code), reason, challenges


def _without_login(uri):
    """(`uri` without its user:password@, the user, the password); None for both when it has none."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, None, None
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")


def _unauthorized(uri):
    """What a camera's 401 to `uri` means: the URL's login is wrong, or it has none."""
    parts = urllib.parse.urlsplit(uri)
    return "it answers 401 Unauthorized: " + (
        "the user name or password in the URL is wrong" if parts.username is not None else
        "give the camera's user name and password in the URL, {}://USER:PASSWORD@host/...".format(parts.scheme))


def _authorization(challenges, method, url, user, password):
    """The Authorization header that answers a server's WWW-Authenticate challenges with this
    login: Digest (MD5, as cameras ask) where offered, else Basic; None for schemes not known."""
    import base64
    import hashlib

    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()
    for challenge in sorted(challenges, key=lambda text: not text.lower().startswith("digest")):
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            return "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()
        fields = {name.lower(): quoted or plain for name, quoted, plain in
                  re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
        if scheme.lower() != "digest" or fields.get("algorithm", "MD5").upper() != "MD5":
            continue
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        secret, request = md5("{}:{}:{}".format(user, realm, password)), md5("{}:{}".format(method, url))
        header = 'Digest username="{}", realm="{}", nonce="{}", uri="{}"'.format(user, realm, nonce, url)
        if "auth" in [qop.strip() for qop in fields.get("qop", "").split(",")]:
            cnonce = "".join("{:02x}".format(byte) for byte in os.urandom(8))
            response = md5(":".join([secret, nonce, "00000001", cnonce, "auth", request]))
            header += ', qop=auth, nc=00000001, cnonce="{}"'.format(cnonce)
        else:
            response = md5(":".join([secret, nonce, request]))
        header += ', response="{}"'.format(response)
        return header + (', opaque="{}"'.format(fields["opaque"]) if "opaque" in fields else "")
    return None


def _camera_opener(uri):
    """(`uri` without its user:password@, a urllib opener that logs in with them, by Basic or
    Digest authentication as the camera asks). Certificates are not checked, as FFmpeg does
    not: cameras serve HTTPS with certificates of their own making."""
    import ssl
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    handlers = [urllib.request.HTTPSHandler(context=unverified)]
    url, user, password = _without_login(uri)
    if user is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, url, user, password)
        handlers += [urllib.request.HTTPBasicAuthHandler(passwords), urllib.request.HTTPDigestAuthHandler(passwords)]
    return url, urllib.request.build_opener(*handlers)


def reported_fps(capture):
    """The frames per second a video reports, or 30 where it reports none that makes sense."""
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    return fps if 1.0 <= fps <= 240.0 else 30.0


def quiet_opencv(log_level):
    """Keep OpenCV's own log to errors unless ours is at DEBUG: its `[ WARN ]` lines
    (one at every failed open, repeated at each reconnect; GStreamer's position
    queries on a CSI camera) repeat what our one-line reasons say. Its FFmpeg's
    errors too (`[tcp @ 0x...] Connection ... refused` beside our "cannot reach it",
    a line per damaged H.264 picture of a lossy network camera): only the fatal
    ones. A set $OPENCV_LOG_LEVEL or $OPENCV_FFMPEG_LOGLEVEL has the last word."""
    if log_level == "DEBUG":
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read at OpenCV's first FFmpeg use
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    opencv_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if opencv_logging is not None:  # newer builds (5.0 has it, 4.6 not)
        opencv_logging.setLogLevel(opencv_logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):  # older builds, with the same numbering
        cv2.setLogLevel(2)  # ERROR


def opencv_has_gstreamer():
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def csi_pipeline(sensor_id, width, height, fps, flip_method=0):
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc), turned by
    nvvidconv's `flip_method` (see FLIPS), ending in BGR."""
    out_w, out_h = (height, width) if flip_method in (1, 3) else (width, height)  # a quarter turn
    rate = fractions.Fraction(fps).limit_denominator(1000)  # --fps 7.5: 15/2, and 0.5 is not 0/1
    return ("nvarguscamerasrc sensor-id={id} ! video/x-raw(memory:NVMM), width={w}, height={h}, "
            "framerate={f}, format=NV12 ! nvvidconv flip-method={m} ! video/x-raw, width={ow}, height={oh}, "
            "format=BGRx ! videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
            .format(id=sensor_id, w=width, h=height, f="{}/{}".format(rate.numerator, rate.denominator),
                    m=flip_method, ow=out_w, oh=out_h))


SECRET_NAME = re.compile(r"pass|pwd|token|key|secret|auth|sig", re.IGNORECASE)


def without_secrets(uri):
    """`uri` with what would give its camera away to every viewer replaced by ***: the
    password of rtsp://user:PASSWORD@camera/..., and query values named like ?pwd=, ?token=."""
    if "://" not in uri:
        return uri
    parts = urllib.parse.urlsplit(uri)
    netloc, query = parts.netloc, parts.query
    userinfo, at, host = netloc.rpartition("@")
    if ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***" + at + host
    if query:
        items = []
        for item in query.split("&"):
            name, has_value, _ = item.partition("=")
            items.append(name + "=***" if has_value and SECRET_NAME.search(name) else item)
        query = "&".join(items)
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _query(uri):
    """'test://?a=1&b' -> {'a': '1', 'b': ''}."""
    if "?" not in uri:
        return {}
    pairs = [item.split("=", 1) if "=" in item else (item, "") for item in uri.split("?", 1)[1].split("&") if item]
    return {key: value for key, value in pairs}


def number_in_range(text, kind, low, high=None):
    """`text` as a `kind` (int or float) from `low` to `high` (None: no limit), else None
    (NaN too): the one check behind the command line's numbers and test:// parameters."""
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if low <= value <= (value if high is None else high) else None


def _query_number(uri, query, name, default, limits):
    """test:// parameter `name` within `limits` (type, least, most), else a SourceError."""
    text = query.get(name, default)
    value = number_in_range(text, *limits)
    if value is None:
        raise SourceError("{}: {}={} is not a number from {} to {}".format(uri, name, text, *limits[1:]))
    return value


def open_source(uri, width=640, height=480, fps=30.0, loop=False, flip="none"):
    """URI -> an unopened FrameSource whose frames are turned as `flip` (a FLIPS
    name) says: a CSI camera's in hardware, any other's in software; and whose
    frames larger than `width` x `height` the pipeline scales down to fit (a file's,
    a network camera's, a USB camera's without the mode asked): the stream's size
    is bounded alike for every source, as a 4K frame costs about four times a
    1080p one to draw, encode and send, for every frame.

    `0` or `/dev/videoN`: V4L2 camera; `csi://N`: Jetson CSI camera;
    `rtsp://`, `http(s)://`: network stream; a video file; a folder of images and videos;
    `test://[?width=&height=&fps=&die_after=&hang_after=]`: synthetic scene.
    """
    flip_method, turn = FLIPS[flip]
    if uri.startswith("csi://"):
        sensor = uri[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise SourceError("{}: csi:// takes the camera's sensor number (csi://0, csi://1); its size and rate "
                              "are --width, --height and --fps".format(uri))
        if not opencv_has_gstreamer():
            raise SourceError("csi:// needs OpenCV built with GStreamer (JetPack's python3-opencv); "
                              "this OpenCV {} has none".format(cv2.__version__))
        pipeline = csi_pipeline(int(sensor), width, height, fps, flip_method)
        return OpenCVSource(uri, pipeline, cv2.CAP_GSTREAMER,
                            hint="is the ribbon cable seated and nvargus-daemon running?")
    source = _plain_source(uri, width, height, fps, loop)
    source.turn = turn
    if not uri.startswith("test://"):  # drawn at the size its URI asks; a CSI camera gives the size asked
        source.fit = (int(width), int(height))
    return source


TEST_SETTINGS = ("width", "height", "fps", "die_after", "hang_after")  # test://?width=320&fps=60


def _plain_source(uri, width, height, fps, loop):
    """open_source for every URI but csi://, before any turn."""
    size = (int(width), int(height))
    if uri.startswith("test://"):
        query = _query(uri)
        unknown = sorted(set(query) - set(TEST_SETTINGS))
        if unknown:
            raise SourceError("{}: {} {} ({})".format(uri, ", ".join(unknown), "is not a test:// setting" if len(
                unknown) == 1 else "are not test:// settings", ", ".join(TEST_SETTINGS)))
        return SyntheticSource(uri, width=_query_number(uri, query, "width", width, CAPTURE_LIMITS["width"]),
                               height=_query_number(uri, query, "height", height, CAPTURE_LIMITS["height"]),
                               fps=_query_number(uri, query, "fps", fps, CAPTURE_LIMITS["fps"]),
                               die_after=_query_number(uri, query, "die_after", 0, (int, 0, 10 ** 9)),
                               hang_after=_query_number(uri, query, "hang_after", 0, (int, 0, 10 ** 9)))
    if is_v4l2_camera(uri):
        target = int(uri) if uri.isdigit() else uri
        return OpenCVSource(uri, target, cv2.CAP_V4L2, size, fps,
                            hint="is a camera plugged in and free (v4l2-ctl --list-devices), and "
                                 "passed to the container with --device?")
    if uri.startswith(("http://", "https://")):
        return HTTPSource(uri, fps)
    if uri.startswith("rtsp://"):
        return RTSPSource(uri)
    if uri.startswith("rtmp://"):
        return OpenCVSource(uri, uri, cv2.CAP_FFMPEG, hint="is the stream URL reachable from here?")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    slide_show_fps = fps if fps and fps < 30 else 2.0
    if os.path.isdir(path):
        return FolderSource(uri, path, fps=slide_show_fps)
    if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):  # a slide show of one picture
        if cv2.imread(path, cv2.IMREAD_COLOR) is None:
            raise SourceError("{} is not an image OpenCV can read".format(uri))
        return FolderSource(uri, os.path.dirname(os.path.abspath(path)), fps=slide_show_fps,
                            names=glob.escape(os.path.basename(path)))
    if os.path.isfile(path):
        source = OpenCVSource(uri, path, cv2.CAP_ANY, hint="is it a video OpenCV can decode?",
                              live=loop, paced=True, loop=loop)
        source.open()  # a file that does not open now will not later: say so at startup
        source.close()
        return source
    looks_like_path = "/" in path or path.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    if uri.startswith("file://") or ("://" not in uri and looks_like_path):
        raise SourceError("source '{}': no such file or folder{}".format(
            uri, "" if os.path.isabs(path) else " in {} (the working folder)".format(os.getcwd())))
    raise SourceError("source '{}' is not a camera (0, /dev/video0, csi://0), a stream (rtsp://, "
                      "http://), an existing file or folder, or test://".format(uri))


def is_v4l2_camera(uri):
    """0, /dev/videoN, or another /dev name of one: udev's /dev/v4l/by-id/... (a camera's
    model and serial, kept across replugging), by-path/..., a rule's own. Not a file or
    folder under /dev (a RAM disk's videos); a name not there now is a camera to wait for."""
    if uri.isdigit() or uri.startswith("/dev/video"):
        return True
    return uri.startswith("/dev/") and not os.path.isfile(uri) and not os.path.isdir(uri)


def stable_camera_name(device, v4l_dir="/dev/v4l"):
    """udev's name for a V4L2 device that outlives its number: its by-id link (the camera's
    model and serial), else its by-path link (its USB port), else the device itself. A
    camera plugged in again while its old /dev/videoN is still held comes back as another."""
    target = os.path.realpath(device)
    for kind in ("by-id", "by-path"):
        folder = os.path.join(v4l_dir, kind)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            if os.path.realpath(os.path.join(folder, name)) == target:
                return os.path.join(folder, name)
    return device


def find_v4l2_camera(max_index=4):
    """The first /dev/videoN that opens and delivers a frame, else None."""
    for index in range(max_index):
        device = "/dev/video{}".format(index)
        if not os.path.exists(device):
            continue
        capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
        try:
            if capture.isOpened() and capture.read()[0]:
                return device
        finally:
            capture.release()
    return None


def resolve_source(uri):
    """'auto' -> the first working V4L2 camera, else test:// with a warning."""
    if uri != "auto":
        return uri
    device = find_v4l2_camera()
    if device:
        name = stable_camera_name(device)
        log.info("source auto -> %s%s", name, "" if name == device else " ({} now)".format(device))
        return name
    log.warning("source auto: no camera found at /dev/video0-3; streaming test:// instead. Pick a "
                "source with --source: /dev/video0, csi://0, rtsp://..., http://..., a video file "
                "(--loop to repeat), a folder of images and videos, or test://")
    return "test://"


# --- the pipeline -------------------------------------------------------------

class Frame(object):
    """One published, annotated frame: encoded once, sent to every viewer as is."""

    __slots__ = ("seq", "jpeg", "part", "detections", "width", "height", "inference_ms",
                 "captured_at", "published_at", "status", "raw")

    def __init__(self, seq, jpeg, detections, width, height, inference_ms, captured_at, status=None, raw=None):
        self.seq = seq
        self.jpeg = jpeg
        self.raw = raw  # the picture before drawing (BGR), kept while someone asks for it
        self.detections = detections
        self.width, self.height = width, height
        self.inference_ms = inference_ms
        self.captured_at = captured_at
        self.published_at = time.monotonic()
        self.status = status  # None for a live frame, else why this is a placeholder
        self.part = (b"Content-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                     + b"\r\nX-Frame-Seq: " + str(seq).encode()
                     + b"\r\nX-Captured-At: " + "{:.6f}".format(captured_at).encode()
                     + b"\r\n\r\n" + jpeg + b"\r\n--frame\r\n")


class Broadcast(object):
    """The newest published frame; readers wait, with a timeout, for a newer one.

    Each frame comes with a gate, a lock held shut until the next frame is
    published. A reader with nothing newer to read waits at the gate and, once
    through, opens it for the next reader: a frame's readers wake one after
    another instead of all at once to fight over one lock (with 50 readers this
    takes a third of the CPU of a Condition's notify_all).
    """

    def __init__(self):
        self._publishing = threading.Lock()
        self._frame = None
        self._gate = _shut_gate()

    def publish(self, frame):
        with self._publishing:
            self._frame = frame  # first: a reader that sees the new gate sees this frame
            gate, self._gate = self._gate, _shut_gate()
        gate.release()

    def latest(self):
        return self._frame

    def wait_newer(self, seq, timeout):
        """The newest frame if its seq is above `seq`, waiting up to `timeout`; else None."""
        gate = self._gate  # before the frame, so that no publication falls in between unseen
        frame = self._frame
        if frame is None or frame.seq <= seq:
            if not gate.acquire(True, timeout):
                return None
            gate.release()  # the next reader's turn
            frame = self._frame
        return frame if frame is not None and frame.seq > seq else None


def _shut_gate():
    gate = threading.Lock()
    gate.acquire()
    return gate


class MovingRate(object):
    """Events per second over the last `window` seconds, or over the last two events where
    they are further apart (a slide show's 0.2 FPS is not 0); 0 once no event has come
    for the window or twice the last gap, whichever is longer."""

    def __init__(self, window=2.0):
        self.window = window
        self.times = collections.deque()

    def tick(self, now):
        self.times.append(now)
        while len(self.times) > 2 and now - self.times[0] > self.window:
            self.times.popleft()

    def rate(self, now):
        if len(self.times) < 2:
            return 0.0
        last_gap = self.times[-1] - self.times[-2]
        if now - self.times[-1] > max(self.window, 2 * last_gap):
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-6)


class Camera(object):
    """One source, one detector, one pipeline; any number of viewers.

    States: starting, streaming, reconnecting, stalled (a source that gives no frames
    without failing, or an inference that does not return), error (an inference failed),
    idle (paused for lack of viewers, or a file waiting for its first), ended (a file
    without --loop), stopped.
    """

    STATES = ("starting", "streaming", "reconnecting", "stalled", "error", "idle", "ended", "stopped")

    RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
    # A source that gives no frame for this long (or three of its frame intervals) without
    # failing - a hung driver - is stalled: viewers see it marked, /healthz says 503.
    STALL_SECONDS = 5.0
    # Healthy while the newest live frame is younger than this, or than three of the
    # source's frame intervals (a slide show of a picture every 10 s is not down).
    FRESH_SECONDS = 3.0

    def __init__(self, source, detector, jpeg_quality=80, idle_stop=0.0, max_viewers=0, encoders=None,
                 on_hang=None, hang_seconds=60.0):
        """on_hang(reason): called once when the pipeline has been stalled for `hang_seconds` (a
        live source that gives no frame without failing), or an inference (even one of several
        in flight, the others publishing) or the source's open() has not returned for as long: a
        driver call that never returns holds the device (camera or GPU), which only a new process
        can open again."""
        self.source = source
        self.detector = detector
        self.jpeg_quality = int(jpeg_quality)
        self.idle_stop = float(idle_stop or 0.0)
        self.max_viewers = int(max_viewers or 0)
        self.encoders = encoders or jpeg_encoders()
        self.encode = None  # the fastest of `encoders`, measured on the first live frame
        self.encoder_name = ""
        self.broadcast = Broadcast()
        self.state = "starting"
        self.last_error = ""
        self.started_at = time.time()
        self._started_clock = time.monotonic()
        self.counters = {"frames_captured": 0, "frames_decoded": 0, "frames_inferred": 0,
                         "frames_dropped": 0, "frames_published": 0, "reconnects": 0}
        # moving averages, milliseconds: where a frame's time goes between capture and viewers
        self.timings = {"inference_ms": 0.0, "wait_ms": 0.0, "render_ms": 0.0, "latency_ms": 0.0}
        self.viewers = 0
        self.viewers_joined = 0  # ever: a file that has ended plays again for the next one
        self._named_viewers = collections.Counter()  # a page's name for its stream: its streams open now
        self.wanted = False  # whether anyone has asked for frames yet: a file waits for that
        self.last_activity = time.monotonic()
        self.last_capture_at = 0.0  # on time.monotonic(), as every span here: the wall clock can jump
        self.capture_interval = 0.0  # the source's time between frames, a moving average
        self._stall_shown = False
        self.on_hang, self.hang_seconds = on_hang, float(hang_seconds)
        self._hang_told = False
        self._opening_since = 0.0  # when the source's open() began, while it has not returned
        self.last_live_frame = None
        self._raw_wanted_until = 0.0  # frames keep their picture before drawing until then (want_raw)
        self._rate = MovingRate()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        # capture -> detect hand-over: the newest frame and uploads waiting for the detector
        self._work = threading.Condition()
        self._captured = None  # (capture number, frame, blob or None, captured_at)
        self._next_start_at = 0.0  # no frame is started before then (STAGGER)
        self._free_at = [0.0] * detector.engine.frames_in_flight  # when each detector expects to be free
        self._busy_since = [0.0] * len(self._free_at)  # when each detector took the work it does, or 0
        self._jobs = collections.deque()
        # detect -> render hand-over, with one frame in flight (with several, each detector renders its own)
        self._detected = threading.Condition()
        self._to_render = None
        self._render_lock = threading.Lock()  # one frame drawn and published at a time, in capture order
        self._newest_rendered = 0  # capture number of the newest frame drawn
        self._render_failures = 0  # frames skipped since rendering began to fail: told once, then when it works
        self._failed_at = 0.0  # when an inference last failed
        self._fit_told = False  # whether the log said that frames are scaled to fit
        self._seq = 0
        self._threads = []
        self._publish_status("starting")

    # lifecycle
    def start(self):
        if not self.detector.engine.uses_opencv_threads:
            # The stages already run side by side: OpenCV's worker pool would only add
            # threads that wait actively and take CPU from inference (the capture
            # stage's CPU per frame fell by a third without it).
            cv2.setNumThreads(1)
        stages = [("capture_loop", self._capture_loop)]
        stages += [("detect_loop", functools.partial(self._detect_loop, slot)) for slot in range(len(self._free_at))]
        stages += [("render_loop", self._render_loop)]
        for name, target in stages:
            thread = threading.Thread(target=_named(target), name="camera-" + name)
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        log.info("pipeline started: source %s, backend %s", self.source.uri, self.detector.backend)
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        self._wake.set()
        with self._work:
            self._work.notify_all()
        with self._detected:
            self._detected.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.state = "stopped"
        self._publish_status("stopped")
        if not any(thread.is_alive() for thread in self._threads):
            self.detector.close()  # only once no stage can still be using the engine

    def wait_for_viewers_to_leave(self, timeout):
        """After stop(): wait until every viewer has taken the 'stopped' picture and ended its
        stream (a chunked body's last chunk), at most `timeout` seconds, so that a process
        about to exit does not cut a slow reader's stream in the middle of a write."""
        deadline = time.monotonic() + timeout
        while self.viewers and time.monotonic() < deadline:
            time.sleep(0.02)

    # viewers
    def join_viewer(self, name=None):
        """Count a new viewer, under `name` if it has one; returns a callable that
        releases it (safe to call twice)."""
        with self._lock:
            if self.max_viewers and self.viewers >= self.max_viewers:
                raise TooManyViewers("{} viewers are watching, the limit set by --max-viewers; try "
                                     "again later".format(self.viewers))
            self.viewers += 1
            self.viewers_joined += 1
            if name:
                self._named_viewers[name] += 1
        self.touch()
        released = []

        def release():
            with self._lock:
                if not released:
                    released.append(True)
                    self.viewers -= 1
                    if name:
                        self._named_viewers[name] -= 1
                        if not self._named_viewers[name]:
                            del self._named_viewers[name]
            self.touch()
        return release

    def is_watching(self, name):
        """Whether a viewer of this name is still being streamed to: a page whose stream was cut
        (a laptop that slept, a phone that changed networks) sees no error, and asks."""
        with self._lock:
            return name in self._named_viewers

    def touch(self):
        """Note that someone wants frames; wakes an idle pipeline."""
        self.last_activity = time.monotonic()
        self.wanted = True
        self._wake.set()

    def want_raw(self, seconds=RAW_KEPT_SECONDS):
        """Keep each frame's picture before drawing for `seconds` (a copy a frame), for
        /snapshot.jpg?annotate=0."""
        self._raw_wanted_until = time.monotonic() + seconds

    def wait_frame(self, after_seq, timeout):
        return self.broadcast.wait_newer(after_seq, timeout)

    def latest_frame(self):
        return self.broadcast.latest()

    # uploads share the pipeline's detector (and its thread, which owns any GPU context)
    def detect_image(self, frame, timeout=30.0, **decode_options):
        """(detections, inference ms) of one picture; `decode_options` as for Detector.decode()."""
        job = {"frame": frame, "options": decode_options, "done": threading.Event(), "result": None,
               "error": None}
        with self._work:
            self._jobs.append(job)
            self._work.notify_all()
        if not job["done"].wait(timeout):
            with self._work:  # its request fails: the picture must not wait on, nor be run later
                for position, queued in enumerate(self._jobs):
                    if queued is job:
                        del self._jobs[position]
                        break
            raise RuntimeError("the detector did not answer within {:.0f} s".format(timeout))
        if job["error"] is not None:
            raise job["error"]
        return job["result"]

    # status
    def stats(self):
        now = time.monotonic()
        latest = self.broadcast.latest()
        state, last_error = self.state, self.last_error
        stalled, why = self._stall(now)
        if stalled:
            state, last_error = "stalled", why
        stats = dict(self.counters)
        stats.update({
            "state": state,
            "source": self.source.uri,
            "last_error": last_error,
            "fps": round(self._rate.rate(now), 2),
            "inference_ms": round(self.timings["inference_ms"], 2),
            "frames_in_flight": self.detector.engine.frames_in_flight,
            "wait_ms": round(self.timings["wait_ms"], 2),
            "render_ms": round(self.timings["render_ms"], 2),
            "latency_ms": round(self.timings["latency_ms"], 2),
            "viewers": self.viewers,
            "max_viewers": self.max_viewers or None,
            "backend": self.detector.backend,
            "model": self.detector.model_name,
            "classes": self.detector.class_names(),
            "width": latest.width if latest else 0,
            "height": latest.height if latest else 0,
            "uptime": round(now - self._started_clock, 1),
            "started_at": self.started_at,
        })
        return stats

    def healthy(self):
        """True while live frames flow, or the pipeline waits on purpose: idle, or a file
        that has ended waiting for a viewer to play it again."""
        stats = self.stats()
        if stats["state"] in ("idle", "ended"):
            return True
        live = self.last_live_frame
        return (stats["state"] == "streaming" and live is not None
                and time.monotonic() - live.published_at < self._or_three_intervals(self.FRESH_SECONDS))

    def _or_three_intervals(self, seconds):
        """`seconds`, or three of the source's frame intervals where longer: a slow source's
        gaps between frames are no outage."""
        return max(seconds, 3 * self.capture_interval)

    def _stall(self, now):
        """(seconds, why) for a pipeline that should be streaming but gives viewers no new frame:
        its source gives none without failing (a hung driver), or an inference has not returned (a
        hung GPU) while no other detector published a frame; else (0, None)."""
        if self.state != "streaming":
            return 0.0, None
        quiet = now - self.last_capture_at
        if quiet > self._or_three_intervals(self.STALL_SECONDS):
            return quiet, "no frame from {} for {:.0f} s".format(self.source.uri, quiet)
        inferring = self._longest_inference(now)
        live = self.last_live_frame
        if (inferring > max(self.STALL_SECONDS, 3 * self.timings["inference_ms"] / 1000.0)
                and (live is None or live.published_at < now - inferring)):
            return inferring, "an inference has not returned for {:.0f} s".format(inferring)
        return 0.0, None

    def _longest_inference(self, now):
        """Seconds since the detector busy longest took its work (0 when none is busy)."""
        return now - min([since for since in self._busy_since if since] or [now])

    def _hang_reason(self, now, stalled, why):
        """Why the pipeline is taken for hung (a source's open() or read, or an inference, that has
        not returned for hang_seconds), else None."""
        opening = now - self._opening_since if self._opening_since else 0.0
        if opening >= self.hang_seconds:
            return "opening {} has not returned for {:.0f} s".format(self.source.uri, opening)
        if stalled and stalled >= self.hang_seconds:
            return why
        inferring = self._longest_inference(now)
        if inferring >= self.hang_seconds:  # one of several detectors, while the others still publish
            return "an inference has not returned for {:.0f} s".format(inferring)
        return None

    # threads
    def _idle(self):
        """Whether capture is to pause: a file that no one has asked for yet (a short clip would be
        over before a browser opened it), or --idle-stop's time has passed without viewers."""
        if self.viewers:
            return False
        if not self.source.live and not self.wanted:
            return True
        return bool(self.idle_stop) and time.monotonic() - self.last_activity > self.idle_stop

    def _pause_while_idle(self):
        """Wait until someone wants frames (re-checked each second)."""
        self._wake.clear()  # before the check: a viewer who comes meanwhile is not missed
        if not self._idle():
            return
        waiting_to_play = not self.source.live and not self.wanted
        self._set_state("idle", "waiting for a viewer to play {}".format(self.source.uri) if waiting_to_play
                        else "no viewers for {:g} s (--idle-stop)".format(self.idle_stop))
        self._wake.wait(1.0)

    def _wait_for_a_new_viewer(self):
        """After a file has ended: wait until a viewer joins, who sees it played again."""
        joined = self.viewers_joined
        while not self._stop.is_set() and self.viewers_joined == joined:
            self._wake.clear()
            if self.viewers_joined == joined:
                self._wake.wait(1.0)

    def _capture_loop(self):
        # One detector: preparing the next frame here overlaps with its inference. Several:
        # every core is inferring anyway, so each detector prepares the frame it takes and
        # no frame that is dropped unseen costs a preparation.
        prepare_here = self.detector.engine.frames_in_flight == 1
        failures = 0
        while not self._stop.is_set():
            if self._idle():
                self._pause_while_idle()
                continue
            try:
                self._open_source()
            except SourceError as exc:
                failures += 1
                self._source_down(str(exc), failures)
                continue
            except Exception as exc:  # a driver error must not end the capture thread
                failures += 1
                self._source_down("cannot open {}: {}".format(self.source.uri, exc), failures)
                continue
            log.info("source %s open: %s", self.source.uri, self.source.mode())
            self.last_capture_at = time.monotonic()
            nominal_fps = getattr(self.source, "fps", None)  # until measured: a slow slide show is no stall
            self.capture_interval = 1.0 / nominal_fps if nominal_fps else 0.0
            self._set_state("streaming", "")
            ended = False
            interval, previous = 0.0, None  # the source's time between frames, a moving average
            try:
                while not self._stop.is_set():
                    if self._idle():
                        if self.source.live:
                            break  # closed meanwhile, reopened when wanted
                        self._pause_while_idle()  # a file keeps its place
                        if not self._idle():
                            self._set_state("streaming", "")
                            previous = None  # the pause is no interval between frames
                        continue
                    if not self.source.grab():
                        ended = True
                        break
                    failures = 0
                    captured_at = time.time()  # the frame's stamp, for viewers
                    self.last_capture_at = now = time.monotonic()
                    if previous is not None:
                        interval += (now - previous - interval) * (0.1 if interval else 1.0)
                        self.capture_interval = interval
                    previous = now
                    if not self._taken_before_next(now, interval):
                        self._count_undecoded()
                        continue
                    frame = self.source.retrieve()
                    if frame is None:
                        ended = True
                        break
                    frame = self._fitted(frame)
                    if self.source.turn is not None:
                        frame = self.source.turn(frame)
                    self._hand_to_detector(frame, self.detector.prepare(frame) if prepare_here else None,
                                           captured_at)
            except Exception as exc:
                log.warning("source %s failed while reading: %s", self.source.uri, exc)
                ended = True
            finally:
                self.source.close()
            if ended and not self._stop.is_set():
                if not self.source.live:
                    self._set_state("ended", "{} has ended; it plays again for the next viewer who joins "
                                             "(--loop repeats it)".format(self.source.uri))
                    self._publish_status("ended")  # viewers keep the last picture, marked ENDED
                    self._wait_for_a_new_viewer()
                    continue
                failures += 1
                self._source_down("{} stopped delivering frames".format(self.source.uri), failures)

    def _fitted(self, frame):
        """The frame scaled down to fit the source's `fit`, which the log says once."""
        smaller = fitted(frame, self.source.fit)
        if smaller is not frame and not self._fit_told:
            self._fit_told = True
            log.info("%s gives %dx%d frames: they are shown scaled down to %dx%d, to fit %dx%d (--width, --height)",
                     self.source.uri, frame.shape[1], frame.shape[0], smaller.shape[1], smaller.shape[0],
                     *self.source.fit)
        return smaller

    def _open_source(self):
        """source.open(), noting meanwhile since when, for the hang check."""
        self._opening_since = time.monotonic()
        try:
            self.source.open()
        finally:
            self._opening_since = 0.0

    def _source_down(self, reason, failures):
        delay = self.RESTART_DELAYS[min(failures, len(self.RESTART_DELAYS)) - 1]
        with self._lock:
            self.counters["reconnects"] += 1
        log.warning("%s; reconnecting in %.1f s", reason, delay)
        self._set_state("reconnecting", reason)
        self._publish_status("reconnecting")
        self._stop.wait(delay)

    def _set_state(self, state, error, only_from=None):
        """Move to `state`; with `only_from`, only out of that state, checked and changed at once
        (a detector's recovery must not undo the capture thread's 'reconnecting')."""
        with self._lock:
            if only_from is not None and self.state != only_from:
                return
            if state != self.state:
                log.info("state %s -> %s%s", self.state, state, ": " + error if error else "")
            self.state, self.last_error = state, error

    def _taken_before_next(self, now, interval):
        """Whether a detector may take a frame before the source delivers the next
        one; if not, the frame just grabbed would be replaced unseen (newest wins),
        and decoding it (and, with one frame in flight, pre-processing it) would
        only take CPU from inference. A detector that finishes sooner than
        expected by more than DECODE_MARGIN waits at most one frame interval."""
        with self._work:
            free_at = max(min(self._free_at), self._next_start_at)
        return free_at < now + interval * (1.0 + DECODE_MARGIN)

    def _count_undecoded(self):
        with self._work:
            self.counters["frames_captured"] += 1
            self.counters["frames_dropped"] += 1

    def _hand_to_detector(self, frame, blob, captured_at):
        with self._work:
            if self._captured is not None:
                self.counters["frames_dropped"] += 1  # the detector never saw it: newest wins
            self.counters["frames_captured"] += 1
            self.counters["frames_decoded"] += 1
            self._captured = (self.counters["frames_captured"], frame, blob, captured_at)
            self._work.notify_all()

    def _detect_loop(self, slot):
        while not self._stop.is_set():
            job, captured = self._take_work(slot)
            if job is not None:
                self._run_job(job)
            elif captured is not None:
                self._detect_frame(*captured)

    def _take_work(self, slot):
        """(upload job, None), (None, captured frame), or (None, None) after a quiet half second.

        With several frames in flight, a frame is not started sooner than
        STAGGER of an inference's share (inference time / frames in flight)
        after the previous start: detectors that start nearly together finish
        nearly together, and whichever of the two frames ends last is wasted
        when it is the older one. Each detector notes when it expects to be
        free again, which capture reads to decide what to decode."""
        quiet_until = time.monotonic() + 0.5
        with self._work:
            self._free_at[slot] = self._busy_since[slot] = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                busy_until = now + self.timings["inference_ms"] / 1000.0
                if self._jobs:
                    self._free_at[slot], self._busy_since[slot] = busy_until, now
                    return self._jobs.popleft(), None
                if self._captured is not None and now >= self._next_start_at:
                    captured, self._captured = self._captured, None
                    self._free_at[slot], self._busy_since[slot] = busy_until, now
                    in_flight = self.detector.engine.frames_in_flight
                    if in_flight > 1:
                        self._next_start_at = now + STAGGER * self.timings["inference_ms"] / 1000.0 / in_flight
                    return None, captured
                if now >= quiet_until:
                    break
                wake_at = self._next_start_at if self._captured is not None else quiet_until
                self._work.wait(min(wake_at, quiet_until) - now)
        return None, None

    def _run_job(self, job):
        try:
            job["result"] = self.detector.detect(job["frame"], **job["options"])
        except Exception as exc:
            job["error"] = exc
        finally:
            job["done"].set()

    def _average(self, name, value):
        previous = self.timings[name]
        self.timings[name] = value if not previous else 0.9 * previous + 0.1 * value

    def _detect_frame(self, number, frame, blob, captured_at):
        self._average("wait_ms", (time.time() - captured_at) * 1000.0)
        started = time.monotonic()
        try:
            output, inference_ms = self.detector.run(self.detector.prepare(frame) if blob is None else blob)
        except Exception as exc:
            if self.state == "error":  # still failing: the log has the traceback already
                log.warning("inference failed again: %s", exc)
            else:
                log.exception("inference failed")
            self._failed_at = time.monotonic()
            self._set_state("error", "inference failed: {}".format(exc))
            self._publish_status("error")
            self._stop.wait(1.0)
            return
        if self.state == "error" and started > self._failed_at:  # one begun since the failure worked
            self._set_state("streaming", "", only_from="error")
        with self._detected:
            self.counters["frames_inferred"] += 1
            self._average("inference_ms", inference_ms)
            if self.detector.engine.frames_in_flight == 1:
                self._to_render = (number, frame, output, inference_ms, captured_at)
                self._detected.notify_all()
                return
        # Several frames in flight: every core is inferring, and a render thread would
        # interrupt one of them for every frame; the detector draws its own frame instead.
        self._render(number, frame, output, inference_ms, captured_at)

    def _render_loop(self):
        """With one frame in flight, draws each frame while the next is inferred; in any case
        marks the picture STALLED when frames stop coming."""
        while not self._stop.is_set():
            with self._detected:
                self._detected.wait_for(lambda: self._to_render is not None or self._stop.is_set(), 0.5)
                item, self._to_render = self._to_render, None
            if item is None:
                self._show_stall()
            else:
                self._render(*item)

    def _render(self, number, frame, output, inference_ms, captured_at):
        """Decode the detections, draw, encode and publish, unless a later frame was published
        already (overtaken on another detector): viewers never see time go back."""
        with self._render_lock:
            if number < self._newest_rendered:
                with self._work:  # the lock under which capture counts its drops
                    self.counters["frames_dropped"] += 1
                return
            self._newest_rendered = number
            started = time.monotonic()
            try:
                height, width = frame.shape[:2]
                detections = self.detector.decode(output, (width, height))
                published = self._publish_live(frame, detections, inference_ms, captured_at)
                self._average("render_ms", (published.published_at - started) * 1000.0)
                self._average("latency_ms", (time.time() - captured_at) * 1000.0)
            except Exception:
                if not self._render_failures:
                    log.exception("decoding, drawing or encoding failed; frames are skipped until it works again")
                self._render_failures += 1
                return
            if self._render_failures:
                log.warning("decoding, drawing and encoding work again, after %d frames skipped",
                            self._render_failures)
                self._render_failures = 0

    def _show_stall(self):
        """Mark the picture STALLED, once, when the source stops giving frames without failing or
        an inference does not return: viewers would otherwise watch a frozen picture that looks live."""
        with self._render_lock:  # not between a detector's live frames
            now = time.monotonic()
            stalled, why = self._stall(now)
            if stalled and not self._stall_shown:
                self._stall_shown = True
                log.warning("%s; waiting for it, %s", why,
                            "at most {:g} s (--exit-on-hang)".format(self.hang_seconds)
                            if self.on_hang is not None else "without end (--exit-on-hang 0)")
                self._publish_status("stalled", why)
            hang = self._hang_reason(now, stalled, why)
            if hang and self.on_hang is not None and not self._hang_told:
                self._hang_told = True
                self.on_hang(hang)

    def _publish_live(self, frame, detections, inference_ms, captured_at):
        if self._stall_shown:
            self._stall_shown = False
            log.info("frames from %s flow again", self.source.uri)
        now = time.monotonic()
        raw = frame.copy() if now < self._raw_wanted_until else None
        draw_detections(frame, detections, self.detector.colors)
        self._rate.tick(now)
        height, width = frame.shape[:2]
        in_flight = self.detector.engine.frames_in_flight
        draw_overlay(frame, "FPS {:.1f}  {}x{}  inference {:.1f} ms{}".format(
            self._rate.rate(now), width, height, self.timings["inference_ms"],
            " x{} at once".format(in_flight) if in_flight > 1 else ""))
        self.last_live_frame = self._publish(frame, detections, inference_ms, captured_at, raw=raw)
        self.counters["frames_published"] += 1
        if self.state in ("reconnecting", "ended", "error"):  # a frame begun before the source stopped or
            self._publish_status(self.state)                 # inference failed, finished after the status
        return self.last_live_frame

    def _publish(self, image, detections, inference_ms, captured_at, status=None, raw=None):
        if self.encode is None and status is None:
            self.encoder_name, self.encode, timings = fastest_encoder(self.encoders, image, self.jpeg_quality)
            log.info("JPEG encoder: %s (%s at %dx%d)", self.encoder_name, ", ".join(
                "{} {:.2f} ms".format(name, ms) for name, ms in sorted(timings.items())),
                image.shape[1], image.shape[0])
        jpeg = (self.encode or encode_opencv)(image, self.jpeg_quality)
        with self._lock:
            self._seq += 1
            seq = self._seq
        height, width = image.shape[:2]
        frame = Frame(seq, jpeg, detections, width, height, inference_ms, captured_at, status, raw)
        self.broadcast.publish(frame)
        return frame

    def _publish_status(self, status, reason=None):
        """Show viewers the last live picture, dimmed and marked with `status` and why
        (`reason`, else the last error)."""
        live = self.last_live_frame
        if live is not None:
            image = cv2.imdecode(np.frombuffer(live.jpeg, np.uint8), cv2.IMREAD_COLOR)
            image = (image * 0.5).astype(np.uint8)
            detections, width, height = live.detections, live.width, live.height
        else:
            width, height = 640, 480
            image = np.zeros((height, width, 3), dtype=np.uint8)
            detections = []
        text = status.upper()
        reason = reason or self.last_error
        if reason:
            text += ": " + reason
        draw_banner(image, text)
        self._publish(image, detections, 0.0, time.time(), status=status)


def encode_opencv(image, quality):
    ok, buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def jpeg_encoders():
    """JPEG encoders available here: OpenCV always, simplejpeg (libjpeg-turbo) when installed."""
    encoders = {"opencv": encode_opencv}
    try:
        import simplejpeg
    except ImportError:
        return encoders

    def encode_simplejpeg(image, quality):
        return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=int(quality), colorspace="BGR",
                                      colorsubsampling="420")
    encoders["simplejpeg"] = encode_simplejpeg
    return encoders


def fastest_encoder(encoders, image, quality, rounds=5):
    """(name, encoder, {name: ms}) of the encoder fastest on `image`: the winner
    differs between machines (OpenCV's bundled libjpeg, SIMD, ARM vs x86)."""
    timings = {}
    for name, encode in encoders.items():
        encode(image, quality)
        started = time.perf_counter()
        for _ in range(rounds):
            encode(image, quality)
        timings[name] = (time.perf_counter() - started) / rounds * 1000.0
    best = min(timings, key=timings.get)
    return best, encoders[best], timings


def _named(target):
    """Run `target` in a thread that `top -H` and profilers show by its Python name."""
    def run():
        try:
            import ctypes
            name = threading.current_thread().name[:15].encode()
            ctypes.CDLL("libc.so.6").prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
        except (OSError, AttributeError):
            pass  # not Linux: names only matter for profiling
        target()
    return run


def draw_overlay(frame, text):
    """The stats line in the top-left corner, on a dark band for contrast."""
    scale = max(0.5, frame.shape[0] / 800.0)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(frame, (0, 0), (text_w + 12, text_h + baseline + 10), (0, 0, 0), -1)
    cv2.putText(frame, text, (6, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), 1, cv2.LINE_AA)


def draw_banner(frame, text):
    """A status line across the middle of the picture, cut to fit its width."""
    height, width = frame.shape[:2]
    scale = max(0.5, height / 700.0)
    while len(text) > 8 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 20:
        text = text[:-4] + "..."
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = height // 2 - text_h
    cv2.rectangle(frame, (0, top - 10), (width, top + text_h + baseline + 10), (0, 0, 160), -1)
    cv2.putText(frame, text, ((width - text_w) // 2, top + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
