"""V4L2 (USB) cameras: which names are cameras, udev's names that outlive a replug, and
the camera --source auto picks."""
import logging
import os

import cv2

log = logging.getLogger("streamdetect.source")


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
