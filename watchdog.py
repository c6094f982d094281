"""Stall and hang detection: a source that gives no frame without failing, an opening or an
inference that does not return. A stall is shown to viewers; a hang that lasts
`hang_seconds` is handed to on_hang (--exit-on-hang ends the process: a driver call that
never returns holds the camera or GPU until then)."""
import contextlib
import time


class Watchdog(object):
    """The source's liveness as the capture thread notes it, and the verdicts drawn from it."""

    # A source that gives no frame for this long (or three of its frame intervals) without
    # failing - a hung driver - is stalled: viewers see it marked, /healthz says 503.
    STALL_SECONDS = 5.0
    # Healthy while the newest live frame is younger than this, or than three of the
    # source's frame intervals (a slide show of a picture every 10 s is not down).
    FRESH_SECONDS = 3.0

    def __init__(self, uri, on_hang=None, hang_seconds=60.0):
        self.uri = uri
        self.on_hang, self.hang_seconds = on_hang, float(hang_seconds)
        self.last_capture_at = 0.0  # on time.monotonic(), as every span here: the wall clock can jump
        self.capture_interval = 0.0  # the source's time between frames, a moving average
        self.opening_since = 0.0  # when the source's open() began, while it has not returned
        self._hang_told = False

    @contextlib.contextmanager
    def opening(self):
        """Around source.open(): noted, so that an opening that never returns is a hang."""
        self.opening_since = time.monotonic()
        try:
            yield
        finally:
            self.opening_since = 0.0

    def or_three_intervals(self, seconds):
        """`seconds`, or three of the source's frame intervals where longer: a slow source's
        gaps between frames are no outage."""
        return max(seconds, 3 * self.capture_interval)

    def fresh(self, live, now):
        """Whether the live frame `live` is recent enough for a healthy pipeline."""
        return live is not None and now - live.published_at < self.or_three_intervals(self.FRESH_SECONDS)

    def stall(self, now, inferring, inference_ms, live):
        """(seconds, why) for a streaming pipeline that gives viewers no new frame: its source
        gives none without failing (a hung driver), or an inference has not returned for
        `inferring` seconds (a hung GPU) while no other detector published a frame (`live`,
        the newest live frame); else (0, None)."""
        quiet = now - self.last_capture_at
        if quiet > self.or_three_intervals(self.STALL_SECONDS):
            return quiet, "no frame from {} for {:.0f} s".format(self.uri, quiet)
        if (inferring > max(self.STALL_SECONDS, 3 * inference_ms / 1000.0)
                and (live is None or live.published_at < now - inferring)):
            return inferring, "an inference has not returned for {:.0f} s".format(inferring)
        return 0.0, None

    def check_hang(self, now, stalled, why, inferring):
        """Call on_hang once when a source's open() or read, or an inference (even one of
        several, the others publishing), has not returned for hang_seconds."""
        if self.on_hang is None or self._hang_told:
            return
        opening = now - self.opening_since if self.opening_since else 0.0
        reason = None
        if opening >= self.hang_seconds:
            reason = "opening {} has not returned for {:.0f} s".format(self.uri, opening)
        elif stalled and stalled >= self.hang_seconds:
            reason = why
        elif inferring >= self.hang_seconds:
            reason = "an inference has not returned for {:.0f} s".format(inferring)
        if reason:
            self._hang_told = True
            self.on_hang(reason)
