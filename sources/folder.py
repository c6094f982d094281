"""A folder of images and videos as a source: a slide show that plays videos at their own
rate and picks up files added meanwhile."""
import logging
import os
import time

import cv2

from errors import SourceError
from pictures import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, files_in
from sources.base import FrameSource
from sources.opencv_source import OpenCVSource

log = logging.getLogger("streamdetect.source")


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


def _version(path):
    """(path, modification time), or (path, None) for a file that has gone."""
    try:
        return path, os.path.getmtime(path)
    except OSError:
        return path, None
