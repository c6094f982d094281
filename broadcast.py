"""What the pipeline hands its viewers: the published Frame, the Broadcast that readers
wait on (with a timeout), MovingRate for the FPS shown, and the ViewerLimit of
--max-viewers that every camera's viewers count against."""
import collections
import threading
import time


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
    another instead of all at once to fight over one lock.
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


class TooManyViewers(Exception):
    """--max-viewers viewers are already watching."""


class ViewerLimit(object):
    """--max-viewers (0: none), for the viewers of every camera together: a device streams
    what its network and cores allow, whichever camera the viewers watch."""

    def __init__(self, most):
        self.most = int(most or 0)
        self.viewers = 0
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            if self.most and self.viewers >= self.most:
                raise TooManyViewers("{} viewers are watching, the limit set by --max-viewers (of all cameras "
                                     "together); try again later".format(self.viewers))
            self.viewers += 1

    def give_back(self):
        with self._lock:
            self.viewers -= 1
