"""The detectors every camera shares: one engine, a thread per frame it takes at once, each
taking upload jobs first, then the newest frame of the camera served least recently (a
batch of cameras' frames where the engine takes one), so that each camera gets an equal
share of inferences and a camera that has nothing to give costs the others nothing."""
import collections
import functools
import logging
import threading
import time

import numpy as np

log = logging.getLogger("streamdetect.camera")

# With several frames of one camera in flight, the least time between two of its starts,
# as a share of the spacing that would spread the detectors evenly (docs/design.md).
STAGGER = 0.5

# A frame is decoded when a detector may take it before the source's next frame, with this
# share of a frame interval to spare for an inference that ends early (docs/design.md).
DECODE_MARGIN = 0.25


class Mailbox(object):
    """One camera's frames on their way to the detectors: only the newest waits (an older one
    still waiting is dropped and counted). `counters` are the camera's: frames_captured,
    frames_decoded and frames_dropped are counted here, under the pool's lock. `owner` gets
    each inferred frame by owner.inferred(captured, output, inference_ms, started) and each
    failure by owner.inference_failed(exc)."""

    def __init__(self, pool, owner, counters):
        self.pool = pool
        self.owner = owner
        self.counters = counters
        self.captured = None  # (capture number, frame, blob or None, captured_at)
        self.next_start_at = 0.0  # none of its frames is started before then (STAGGER)
        self.served_at = 0.0  # when a detector last took one of its frames
        self.busy_since = {}  # detector slot -> when it took this camera's frame it infers

    def taken_before_next(self, now, interval):
        """Whether a detector may take a frame before the source delivers the next one; if
        not, the frame just grabbed would be replaced unseen (newest wins), and decoding it
        (and, with one frame in flight, pre-processing it) would only take CPU from
        inference. A detector that finishes sooner than expected by more than DECODE_MARGIN
        waits at most one frame interval, or takes another camera's frame."""
        with self.pool.work:
            start_at = self.pool.expected_start(self, now)
        return start_at < now + interval * (1.0 + DECODE_MARGIN)

    def count_undecoded(self):
        with self.pool.work:
            self.counters["frames_captured"] += 1
            self.counters["frames_dropped"] += 1

    def count_overtaken(self):
        """A frame inferred but not shown: a later one was published first."""
        with self.pool.work:
            self.counters["frames_dropped"] += 1

    def hand_over(self, frame, blob, captured_at):
        with self.pool.work:
            if self.captured is not None:
                self.counters["frames_dropped"] += 1  # the detector never saw it: newest wins
            self.counters["frames_captured"] += 1
            self.counters["frames_decoded"] += 1
            self.captured = (self.counters["frames_captured"], frame, blob, captured_at)
            self.pool.work.notify_all()

    def longest_inference(self, now):
        """Seconds since the detector busy longest with this camera's frame, or with an upload
        (which holds the engine every camera shares), took it (0 when none is busy)."""
        with self.pool.work:
            return now - min(list(self.busy_since.values()) + list(self.pool.job_since.values()) or [now])


class DetectorPool(object):
    """The detector threads of one Detector, shared by the cameras that join() it and by
    uploads (run_upload); each runs as many cameras' frames at once as its engine takes."""

    def __init__(self, detector):
        self.detector = detector
        self.slots = detector.engine.frames_in_flight
        self.batch = detector.engine.max_batch
        self.work = threading.Condition()
        self.stopped = threading.Event()  # set: every wait here ends
        self.mailboxes = []
        self.inference_ms = 0.0  # moving average of one run of the engine
        self._free_at = [0.0] * self.slots  # when each detector expects to be free
        self.job_since = {}  # detector slot -> when it took the upload job it runs
        self._jobs = collections.deque()
        self._threads = []

    def join(self, owner, counters):
        """A Mailbox for a camera (`owner`), served from now on."""
        with self.work:
            mailbox = Mailbox(self, owner, counters)
            self.mailboxes.append(mailbox)
            return mailbox

    def leave(self, mailbox):
        """Serve `mailbox` no more (its camera has stopped): a frame still waiting is not run."""
        with self.work:
            self.mailboxes = [box for box in self.mailboxes if box is not mailbox]

    def start(self):
        for slot in range(self.slots):
            thread = threading.Thread(target=shown_by_name(functools.partial(self._detect_loop, slot)),
                                      name="detect-loop")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, deadline):
        """End the detector threads (by `deadline`, a monotonic time), then close the engine,
        once no thread can still be using it."""
        self.stopped.set()
        self.wake_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if not any(thread.is_alive() for thread in self._threads):
            self.detector.close()

    def wake_all(self):
        with self.work:
            self.work.notify_all()

    def inference_seconds(self):
        return self.inference_ms / 1000.0

    def expected_start(self, mailbox, now):
        """When a detector is expected to take `mailbox`'s next frame: when one is free, after
        the frames waiting of the cameras served before it. Under the lock."""
        ahead = sum(1 for other in self.mailboxes if other.captured is not None
                    and other.served_at < mailbox.served_at)
        share = self.inference_seconds() / self.slots
        return max(min(self._free_at), mailbox.next_start_at) + ahead // self.batch * share

    def _take(self, slot):
        """(upload job, None), (None, [(mailbox, captured)...]), or (None, None) after a quiet
        half second. A camera's frame is not started sooner than STAGGER of an inference's
        share after its previous one: two of its frames that start nearly together finish
        nearly together, and whichever ends last is wasted when it is the older one."""
        quiet_until = time.monotonic() + 0.5
        with self.work:
            self._free_at[slot] = 0.0
            while not self.stopped.is_set():
                now = time.monotonic()
                if self._jobs:
                    self._free_at[slot], self.job_since[slot] = now + self.inference_seconds(), now
                    return self._jobs.popleft(), None
                waiting = [box for box in self.mailboxes if box.captured is not None]
                ready = sorted((box for box in waiting if now >= box.next_start_at), key=lambda box: box.served_at)
                if ready:
                    return None, self._hand_to(slot, ready[:self.batch], now)
                if now >= quiet_until:
                    break
                wake_at = min([box.next_start_at for box in waiting] + [quiet_until])
                self.work.wait(wake_at - now)
        return None, None

    def _hand_to(self, slot, mailboxes, now):
        """Give detector `slot` the frames waiting in `mailboxes`. Under the lock."""
        taken = []
        for box in mailboxes:
            taken.append((box, box.captured))
            box.captured, box.served_at, box.busy_since[slot] = None, now, now
            if self.slots > 1:
                box.next_start_at = now + STAGGER * self.inference_seconds() / self.slots
        self._free_at[slot] = now + self.inference_seconds()
        return taken

    def _detect_loop(self, slot):
        while not self.stopped.is_set():
            job, taken = self._take(slot)
            if job is not None:
                run_job(job)
                with self.work:
                    del self.job_since[slot]
            elif taken:
                self._infer(slot, taken)

    def _infer(self, slot, taken):
        """Run the frames `taken` (one per camera) as one batch; each camera gets its row."""
        started = time.monotonic()
        try:
            blobs = [self.detector.prepare(frame) if blob is None else blob for _, (_, frame, blob, _) in taken]
            output, inference_ms = self.detector.run(blobs[0] if len(blobs) == 1 else np.concatenate(blobs))
        except Exception as exc:
            self._done(slot, taken)
            for box, _ in taken:
                box.owner.inference_failed(exc)
            self.stopped.wait(1.0)  # a failing engine is not retried in a busy loop
            return
        self._done(slot, taken)
        with self.work:
            self.inference_ms = inference_ms if not self.inference_ms else 0.9 * self.inference_ms + 0.1 * inference_ms
        for row, (box, captured) in enumerate(taken):
            box.owner.inferred(captured, output[row:row + 1] if len(taken) > 1 else output, inference_ms, started)

    def _done(self, slot, taken):
        with self.work:
            for box, _ in taken:
                box.busy_since.pop(slot, None)

    def run_upload(self, work, timeout):
        """work()'s result, run by the next free detector (uploads share the cameras'
        detectors, and their threads, which own any GPU context); RuntimeError after
        `timeout` seconds, when the job is withdrawn rather than run later for no one."""
        job = {"work": work, "done": threading.Event(), "result": None, "error": None}
        with self.work:
            self._jobs.append(job)
            self.work.notify_all()
        if not job["done"].wait(timeout):
            with self.work:
                for position, queued in enumerate(self._jobs):
                    if queued is job:
                        del self._jobs[position]
                        break
            raise RuntimeError("the detector did not answer within {:.0f} s".format(timeout))
        if job["error"] is not None:
            raise job["error"]
        return job["result"]


def run_job(job):
    """Run an upload job taken from the pool, in a detector's thread."""
    try:
        job["result"] = job["work"]()
    except Exception as exc:
        job["error"] = exc
    finally:
        job["done"].set()


def shown_by_name(target):
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
