"""Anything OpenCV's VideoCapture opens (V4L2 devices, video files, network streams,
GStreamer pipelines for CSI cameras), and OpenCV's own log and build."""
import fractions
import logging
import os
import time

import cv2

from errors import SourceError
from sources.base import FrameSource

log = logging.getLogger("streamdetect.source")


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
