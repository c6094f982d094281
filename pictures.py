"""Pictures as files and bytes: which files are images or videos, decoding bytes (OpenCV,
else Pillow), and scaling a picture down to fit."""
import glob
import io
import os

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".mjpeg", ".mjpg")


def files_in(folder, extensions, names="*"):
    """The files of `folder` (not its subfolders) with these extensions whose names match the
    glob pattern `names`, in name order."""
    return sorted(path for path in glob.glob(os.path.join(glob.escape(folder), names))
                  if path.lower().endswith(extensions) and os.path.isfile(path))


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
