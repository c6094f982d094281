"""The hand-over from capture to the detectors: the newest captured frame waits for a free
detector (an older one still waiting is dropped and counted), uploads go first, and with
several frames in flight their starts are kept apart."""
import collections
import threading
import time

# With several frames in flight, the least time between two starts, as a share of the
# spacing that would spread the detectors evenly (docs/design.md has the measurement).
STAGGER = 0.5

# A frame is decoded when a detector may take it before the source's next frame, with this
# share of a frame interval to spare for an inference that ends early (docs/design.md).
DECODE_MARGIN = 0.25


class Handover(object):
    """Frames and upload jobs on their way to `slots` detectors.

    `counters` are the camera's: frames_captured, frames_decoded and frames_dropped are
    counted here, under this hand-over's lock. `inference_seconds()` is the moving average
    of an inference, by which each detector says when it expects to be free again."""

    def __init__(self, slots, counters, inference_seconds, stopped):
        self.slots = slots
        self.counters = counters
        self.inference_seconds = inference_seconds
        self.stopped = stopped  # a threading.Event: set, every wait here ends
        self._work = threading.Condition()
        self._captured = None  # (capture number, frame, blob or None, captured_at)
        self._next_start_at = 0.0  # no frame is started before then (STAGGER)
        self._free_at = [0.0] * slots  # when each detector expects to be free
        self.busy_since = [0.0] * slots  # when each detector took the work it does, or 0
        self._jobs = collections.deque()

    def wake_all(self):
        with self._work:
            self._work.notify_all()

    def taken_before_next(self, now, interval):
        """Whether a detector may take a frame before the source delivers the next one; if
        not, the frame just grabbed would be replaced unseen (newest wins), and decoding it
        (and, with one frame in flight, pre-processing it) would only take CPU from
        inference. A detector that finishes sooner than expected by more than DECODE_MARGIN
        waits at most one frame interval."""
        with self._work:
            free_at = max(min(self._free_at), self._next_start_at)
        return free_at < now + interval * (1.0 + DECODE_MARGIN)

    def count_undecoded(self):
        with self._work:
            self.counters["frames_captured"] += 1
            self.counters["frames_dropped"] += 1

    def count_overtaken(self):
        """A frame inferred but not shown: a later one was published first."""
        with self._work:
            self.counters["frames_dropped"] += 1

    def hand_over(self, frame, blob, captured_at):
        with self._work:
            if self._captured is not None:
                self.counters["frames_dropped"] += 1  # the detector never saw it: newest wins
            self.counters["frames_captured"] += 1
            self.counters["frames_decoded"] += 1
            self._captured = (self.counters["frames_captured"], frame, blob, captured_at)
            self._work.notify_all()

    def take(self, slot):
        """(upload job, None), (None, captured frame), or (None, None) after a quiet half second.

        With several frames in flight, a frame is not started sooner than STAGGER of an
        inference's share (inference time / frames in flight) after the previous start:
        detectors that start nearly together finish nearly together, and whichever of the
        two frames ends last is wasted when it is the older one."""
        quiet_until = time.monotonic() + 0.5
        with self._work:
            self._free_at[slot] = self.busy_since[slot] = 0.0
            while not self.stopped.is_set():
                now = time.monotonic()
                busy_until = now + self.inference_seconds()
                if self._jobs:
                    self._free_at[slot], self.busy_since[slot] = busy_until, now
                    return self._jobs.popleft(), None
                if self._captured is not None and now >= self._next_start_at:
                    captured, self._captured = self._captured, None
                    self._free_at[slot], self.busy_since[slot] = busy_until, now
                    if self.slots > 1:
                        self._next_start_at = now + STAGGER * self.inference_seconds() / self.slots
                    return None, captured
                if now >= quiet_until:
                    break
                wake_at = self._next_start_at if self._captured is not None else quiet_until
                self._work.wait(min(wake_at, quiet_until) - now)
        return None, None

    def longest_inference(self, now):
        """Seconds since the detector busy longest took its work (0 when none is busy)."""
        return now - min([since for since in self.busy_since if since] or [now])

    def run_upload(self, work, timeout):
        """work()'s result, run by the next free detector (uploads share the pipeline's
        detectors, and their threads, which own any GPU context); RuntimeError after
        `timeout` seconds, when the job is withdrawn rather than run later for no one."""
        job = {"work": work, "done": threading.Event(), "result": None, "error": None}
        with self._work:
            self._jobs.append(job)
            self._work.notify_all()
        if not job["done"].wait(timeout):
            with self._work:
                for position, queued in enumerate(self._jobs):
                    if queued is job:
                        del self._jobs[position]
                        break
            raise RuntimeError("the detector did not answer within {:.0f} s".format(timeout))
        if job["error"] is not None:
            raise job["error"]
        return job["result"]


def run_job(job):
    """Run an upload job taken from the hand-over, in a detector's thread."""
    try:
        job["result"] = job["work"]()
    except Exception as exc:
        job["error"] = exc
    finally:
        job["done"].set()
