"""The `Camera`: one source and its pipeline (capture -> detect -> render -> broadcast) whose
annotated JPEGs every viewer reads, so N viewers cost one inference.

The stages run in threads so that only inference is ever in the way of inference: capture
grabs every frame but decodes only those a detector will take and keeps only the newest
(scheduler.Mailbox); the detectors, shared by every camera (scheduler.DetectorPool), run
the engine on it; rendering decodes the boxes, draws, encodes once and publishes in capture
order, in a render thread of its own with one detector, else in the detector's thread.
Every wait has a timeout, so a dead stage or source can never hang a viewer.
docs/design.md has the picture and the measurements behind these choices.
"""
import collections
import logging
import threading
import time

import cv2
import numpy as np

from broadcast import Broadcast, Frame, MovingRate, ViewerLimit
from drawing import draw_banner, draw_detections, draw_overlay, encode_opencv, fastest_encoder, jpeg_encoders
from errors import SourceError
from parsing import DEFAULT_CAMERA
from pictures import fitted
from scheduler import DetectorPool, shown_by_name
from tracking import Tracker
from watchdog import Watchdog

log = logging.getLogger("streamdetect.camera")

# After a /snapshot.jpg?annotate=0, frames keep their picture before drawing (a copy, 0.02 ms
# at 640x480) for this long, so that a script polling raw pictures gets each at once.
RAW_KEPT_SECONDS = 30.0


class Camera(object):
    """One source, one pipeline, any number of viewers; the detectors are its own or a pool
    shared with other cameras.

    States: starting, streaming, reconnecting, stalled (a source that gives no frames
    without failing, or an inference that does not return), error (an inference failed),
    idle (paused for lack of viewers, or a file waiting for its first), ended (a file
    without --loop), stopped.
    """

    STATES = ("starting", "streaming", "reconnecting", "stalled", "error", "idle", "ended", "stopped")

    RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, source, detector, jpeg_quality=80, idle_stop=0.0, viewer_limit=None, encoders=None,
                 on_hang=None, hang_seconds=60.0, tracker=None, events=None, pool=None):
        """on_hang(reason): called once when the pipeline has been stalled for `hang_seconds` (a
        live source that gives no frame without failing), or an inference (even one of several
        in flight, the others publishing) or the source's open() has not returned for as long: a
        driver call that never returns holds the device (camera or GPU), which only a new process
        can open again.
        `tracker` (a tracking.Tracker; default one named "camera") gives each detection the id of
        its object; `events`, when given, gets each frame's tracked events and counts by its
        publish(camera, events, counts) (an MQTT publisher), and stats() for /api/stats.
        `pool`: the scheduler.DetectorPool of `detector` that other cameras share too (started and
        stopped by its owner); by default the camera has one of its own."""
        self.source = source
        self.detector = detector
        self.tracker = tracker or Tracker()
        self.name = self.tracker.camera
        # Among several cameras, each line says whose it is; the one camera's need not.
        self.log = log if self.name == DEFAULT_CAMERA else CameraLog(log, self.name)
        self.events = events
        self.jpeg_quality = int(jpeg_quality)
        self.idle_stop = float(idle_stop or 0.0)
        self.viewer_limit = viewer_limit or ViewerLimit(0)  # --max-viewers, shared by the cameras
        self.encoders = encoders or jpeg_encoders()
        self.encode, self.encoder_name = None, ""  # the fastest of `encoders`, measured on the first live frame
        self.broadcast = Broadcast()
        self.state, self.last_error = "starting", ""
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
        self.watchdog = Watchdog(source.uri, on_hang, hang_seconds)
        self._stall_shown = False
        self.last_live_frame = None
        self._raw_wanted_until = 0.0  # frames keep their picture before drawing until then (want_raw)
        self._rate = MovingRate()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._own_pool = pool is None
        self.pool = pool or DetectorPool(detector)
        self.handover = self.pool.join(self, self.counters)
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
            # threads that wait actively and take CPU from inference.
            cv2.setNumThreads(1)
        if self._own_pool:
            self.pool.start()
        for name, target in (("capture_loop", self._capture_loop), ("render_loop", self._render_loop)):
            thread = threading.Thread(target=shown_by_name(target), name="camera-" + name)
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        self.log.info("pipeline started: source %s, backend %s", self.source.uri, self.detector.backend)
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        self._wake.set()
        self.pool.leave(self.handover)
        with self._detected:
            self._detected.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.state = "stopped"
        if self.events is not None:
            self.events.publish(self.name, self.tracker.end_all(time.time()), {})
        with self._render_lock:  # after a frame being drawn, and before none: _render checks _stop
            self._publish_status("stopped")
        if self._own_pool:
            self.pool.stop(deadline)

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
        self.viewer_limit.take()
        with self._lock:
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
                    self.viewer_limit.give_back()
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

    # uploads share the pipeline's detectors (and their threads, which own any GPU context)
    def detect_image(self, frame, timeout=30.0, **decode_options):
        """(detections, inference ms) of one picture; `decode_options` as for Detector.decode()."""
        return self.pool.run_upload(lambda: self.detector.detect(frame, **decode_options), timeout)

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
            "name": self.name,
            "state": state,
            "source": self.source.uri,
            "last_error": last_error,
            "fps": round(self._rate.rate(now), 2),
            "inference_ms": round(self.timings["inference_ms"], 2),
            "frames_in_flight": self.pool.slots,
            "wait_ms": round(self.timings["wait_ms"], 2),
            "render_ms": round(self.timings["render_ms"], 2),
            "latency_ms": round(self.timings["latency_ms"], 2),
            "viewers": self.viewers,
            "max_viewers": self.viewer_limit.most or None,
            "backend": self.detector.backend,
            "precision": self.detector.engine.precision,
            "model": self.detector.model_name,
            "model_outputs": self.detector.output_problem or "in range",
            "tracked": self.tracker.counts(),
            "classes": self.detector.class_names(),
            "width": latest.width if latest else 0,
            "height": latest.height if latest else 0,
            "uptime": round(now - self._started_clock, 1),
            "started_at": self.started_at,
        })
        if self.events is not None:
            stats["mqtt"] = self.events.stats()
        return stats

    def healthy(self):
        """True while live frames flow, or the pipeline waits on purpose: idle, or a file
        that has ended waiting for a viewer to play it again."""
        stats = self.stats()
        if stats["state"] in ("idle", "ended"):
            return True
        return stats["state"] == "streaming" and self.watchdog.fresh(self.last_live_frame, time.monotonic())

    def _stall(self, now):
        """(seconds, why) of a streaming pipeline that gives viewers no new frame, else (0, None)."""
        if self.state != "streaming":
            return 0.0, None
        return self.watchdog.stall(now, self.handover.longest_inference(now), self.timings["inference_ms"],
                                   self.last_live_frame)

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
        """Open the source, read it until it fails or ends, and open it again with backoff (a
        file that has ended waits for a new viewer instead)."""
        failures = 0
        while not self._stop.is_set():
            if self._idle():
                self._pause_while_idle()
                continue
            try:
                with self.watchdog.opening():
                    self.source.open()
            except SourceError as exc:
                failures += 1
                self._source_down(str(exc), failures)
                continue
            except Exception as exc:  # a driver error must not end the capture thread
                failures += 1
                self._source_down("cannot open {}: {}".format(self.source.uri, exc), failures)
                continue
            self.log.info("source %s open: %s", self.source.uri, self.source.mode())
            self.watchdog.last_capture_at = time.monotonic()
            nominal_fps = getattr(self.source, "fps", None)  # until measured: a slow slide show is no stall
            self.watchdog.capture_interval = 1.0 / nominal_fps if nominal_fps else 0.0
            self._set_state("streaming", "")
            ended, grabbed = self._read_frames()
            if grabbed:
                failures = 0
            if ended and not self._stop.is_set():
                if not self.source.live:
                    self._file_ended(grabbed)
                    continue
                failures += 1
                self._source_down("{} stopped delivering frames".format(self.source.uri), failures)

    def _file_ended(self, gave_frames):
        """A file (without --loop) has ended: viewers keep its last picture, marked ENDED, until a
        new viewer plays it again. One that gave no frame at all (a damaged header) is an error,
        not a clip that has finished."""
        if gave_frames:
            self._set_state("ended", "{} has ended; it plays again for the next viewer who joins "
                                     "(--loop repeats it)".format(self.source.uri))
            self._publish_status("ended")
        else:
            self._set_state("error", "{} gave no frame: a damaged video, or one OpenCV cannot decode".format(
                self.source.uri))
            self._publish_status("error")
        self._wait_for_a_new_viewer()

    def _read_frames(self):
        """Grab the open source's frames and hand those a detector will take to it, until the
        source fails or ends or capture is to pause; then close it. (whether it failed or
        ended, whether it gave a frame)."""
        # One detector: preparing the next frame here overlaps with its inference. Several:
        # every core is inferring anyway, so each detector prepares the frame it takes and
        # no frame that is dropped unseen costs a preparation.
        prepare_here = self.pool.slots == 1
        ended = grabbed = False
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
                grabbed = True
                captured_at = time.time()  # the frame's stamp, for viewers
                self.watchdog.last_capture_at = now = time.monotonic()
                if previous is not None:
                    interval += (now - previous - interval) * (0.1 if interval else 1.0)
                    self.watchdog.capture_interval = interval
                previous = now
                if not self.handover.taken_before_next(now, interval):
                    self.handover.count_undecoded()
                    continue
                frame = self.source.retrieve()
                if frame is None:
                    ended = True
                    break
                frame = self._fitted(frame)
                if self.source.turn is not None:
                    frame = self.source.turn(frame)
                self.handover.hand_over(frame, self.detector.prepare(frame) if prepare_here else None, captured_at)
        except Exception as exc:
            self.log.warning("source %s failed while reading: %s", self.source.uri, exc)
            ended = True
        finally:
            self.source.close()
        return ended, grabbed

    def _fitted(self, frame):
        """The frame scaled down to fit the source's `fit`, which the log says once."""
        smaller = fitted(frame, self.source.fit)
        if smaller is not frame and not self._fit_told:
            self._fit_told = True
            self.log.info("%s gives %dx%d frames: they are shown scaled down to %dx%d, to fit %dx%d "
                          "(--width, --height)", self.source.uri, frame.shape[1], frame.shape[0], smaller.shape[1],
                          smaller.shape[0], *self.source.fit)
        return smaller

    def _source_down(self, reason, failures):
        delay = self.RESTART_DELAYS[min(failures, len(self.RESTART_DELAYS)) - 1]
        with self._lock:
            self.counters["reconnects"] += 1
        self.log.warning("%s; reconnecting in %.1f s", reason, delay)
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
                self.log.info("state %s -> %s%s", self.state, state, ": " + error if error else "")
            self.state, self.last_error = state, error

    def _average(self, name, value):
        previous = self.timings[name]
        self.timings[name] = value if not previous else 0.9 * previous + 0.1 * value

    def inference_failed(self, exc):
        """A detector's inference of this camera's frame failed (the pool waits a second)."""
        if self.state == "error":  # still failing: the log has the traceback already
            self.log.warning("inference failed again: %s", exc)
        else:
            self.log.error("inference failed", exc_info=exc)
        self._failed_at = time.monotonic()
        self._set_state("error", "inference failed: {}".format(exc))
        self._publish_status("error")

    def inferred(self, captured, output, inference_ms, started):
        """A detector has inferred this camera's frame `captured` (a Mailbox's), which it took at
        `started` (monotonic): render it here, or hand it to the render thread."""
        number, frame, _, captured_at = captured
        self._average("wait_ms", (time.time() - (time.monotonic() - started) - captured_at) * 1000.0)
        if self.state == "error" and started > self._failed_at:  # one begun since the failure worked
            self._set_state("streaming", "", only_from="error")
        with self._detected:
            self.counters["frames_inferred"] += 1
            self._average("inference_ms", inference_ms)
            if self.pool.slots == 1:
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
                with self._render_lock:  # objects unseen for the timeout end while no frame comes
                    self._track([], time.time(), self._newest_rendered)
            else:
                self._render(*item)

    def _render(self, number, frame, output, inference_ms, captured_at):
        """Decode the detections, draw, encode and publish, unless a later frame was published
        already (overtaken on another detector): viewers never see time go back."""
        with self._render_lock:
            if self._stop.is_set():
                return  # the shared detectors outlive the camera: its viewers have the 'stopped' picture
            if number < self._newest_rendered:
                self.handover.count_overtaken()
                return
            self._newest_rendered = number
            started = time.monotonic()
            try:
                height, width = frame.shape[:2]
                detections = self.detector.decode(output, (width, height))
                self._track(detections, captured_at, number)
                published = self._publish_live(frame, detections, inference_ms, captured_at)
                self._average("render_ms", (published.published_at - started) * 1000.0)
                self._average("latency_ms", (time.time() - captured_at) * 1000.0)
            except Exception:
                if not self._render_failures:
                    self.log.exception("decoding, drawing or encoding failed; frames are skipped until it works "
                                       "again")
                self._render_failures += 1
                return
            if self._render_failures:
                self.log.warning("decoding, drawing and encoding work again, after %d frames skipped",
                                 self._render_failures)
                self._render_failures = 0

    def _track(self, detections, now, number):
        """Give `detections` their objects' ids; their events and counts go to `events`."""
        found = self.tracker.update(detections, now, number)
        if self.events is not None:
            self.events.publish(self.name, found, self.tracker.counts())

    def _show_stall(self):
        """Mark the picture STALLED, once, when the source stops giving frames without failing or
        an inference does not return: viewers would otherwise watch a frozen picture that looks live."""
        with self._render_lock:  # not between a detector's live frames
            now = time.monotonic()
            stalled, why = self._stall(now)
            if stalled and not self._stall_shown:
                self._stall_shown = True
                self.log.warning("%s; waiting for it, %s", why,
                                 "at most {:g} s (--exit-on-hang)".format(self.watchdog.hang_seconds)
                                 if self.watchdog.on_hang is not None else "without end (--exit-on-hang 0)")
                self._publish_status("stalled", why)
            self.watchdog.check_hang(now, stalled, why, self.handover.longest_inference(now))

    def _publish_live(self, frame, detections, inference_ms, captured_at):
        if self._stall_shown:
            self._stall_shown = False
            self.log.info("frames from %s flow again", self.source.uri)
        now = time.monotonic()
        raw = frame.copy() if now < self._raw_wanted_until else None
        draw_detections(frame, detections, self.detector.colors)
        self._rate.tick(now)
        height, width = frame.shape[:2]
        in_flight = self.pool.slots
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
            self.log.info("JPEG encoder: %s (%s at %dx%d)", self.encoder_name, ", ".join(
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


class CameraLog(logging.LoggerAdapter):
    """The camera's log lines, each beginning with its name."""

    def process(self, msg, kwargs):
        return "{}: {}".format(self.extra, msg), kwargs
