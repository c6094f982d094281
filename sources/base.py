"""What every frame source is: the FrameSource interface, and a URI with its secrets
hidden, as logs, stats and status frames show it."""
import re
import urllib.parse


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
