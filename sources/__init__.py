"""Frame sources opened from a URI, as jetson-inference's videoSource: open_source() picks
the kind (one module each) and applies --flip and --width x --height to any of them."""
import glob
import os

import cv2

from errors import SourceError
from parsing import number_in_range
from pictures import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from sources.folder import FolderSource
from sources.http_camera import HTTPSource
from sources.opencv_source import OpenCVSource, csi_pipeline, opencv_has_gstreamer
from sources.rtsp_camera import RTSPSource
from sources.synthetic import SyntheticSource
from sources.v4l2 import is_v4l2_camera


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


def _query(uri):
    """'test://?a=1&b' -> {'a': '1', 'b': ''}."""
    if "?" not in uri:
        return {}
    pairs = [item.split("=", 1) if "=" in item else (item, "") for item in uri.split("?", 1)[1].split("&") if item]
    return {key: value for key, value in pairs}


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
