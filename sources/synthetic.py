"""test://: a synthetic scene that always works, for trying the server without a camera
and for tests (it can be made to fail or hang on purpose)."""
import threading
import time

import cv2
import numpy as np

from sources.base import FrameSource


class SyntheticSource(FrameSource):
    """A synthetic scene that always works: a red square and a green disc move
    over a gradient, with a clock. `die_after=N` makes it fail after N frames
    (each reopen starts the count again), to exercise reconnection; `hang_after=N`
    makes its read never return after N frames, as a hung driver's."""

    def __init__(self, uri, width=640, height=480, fps=30.0, die_after=0, hang_after=0):
        super(SyntheticSource, self).__init__(uri)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.die_after, self.hang_after = int(die_after), int(hang_after)
        ramp = np.linspace(40, 110, self.height, dtype=np.float32)[:, None]
        self.background = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        self.background[:, :, 0] = (ramp + 40).astype(np.uint8)  # blue
        self.background[:, :, 1] = ramp.astype(np.uint8)
        self.background[:, :, 2] = (ramp * 0.4).astype(np.uint8)  # little red: only the square is red
        self.square = max(8, self.height // 4)
        self.count = 0
        self.next_due = 0.0
        self.grabbed_at = 0.0

    def open(self):
        self.count = 0
        self.next_due = time.monotonic()

    def mode(self):
        return "{}x{} at {:g} FPS".format(self.width, self.height, self.fps)

    def grab(self):
        if self.die_after and self.count >= self.die_after:
            return False
        if self.hang_after and self.count >= self.hang_after:
            threading.Event().wait()  # never set
        delay = self.next_due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_due = max(self.next_due + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
        self.count += 1
        self.grabbed_at = time.time()
        return True

    def retrieve(self):
        """The scene as it was when grabbed: drawing it is this source's decoding."""
        return self.scene(self.grabbed_at)

    def square_box(self, t):
        """Where the red square is at time `t`: [x1, y1, x2, y2] in pixels."""
        span_x, span_y = self.width - self.square, self.height - self.square
        x = int(abs((t * 90.0) % (2 * span_x) - span_x))
        y = int(abs((t * 55.0) % (2 * span_y) - span_y))
        return [x, y, x + self.square, y + self.square]

    def scene(self, t):
        """The disc passes under the square: covering it, the disc would hide it from a detector
        of red squares (the tests' model) in one frame in 6,000."""
        frame = self.background.copy()
        cx = int(self.width / 2 + self.width / 3 * np.cos(t * 0.8))
        cy = int(self.height / 2 + self.height / 3 * np.sin(t * 1.1))
        cv2.circle(frame, (cx, cy), max(6, self.height // 12), (40, 200, 40), -1)
        x1, y1, x2, y2 = self.square_box(t)
        cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 255), -1)
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + ".{:03d}".format(int(t * 1000) % 1000)
        cv2.putText(frame, "test:// {}  #{}".format(stamp, self.count), (10, self.height - 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        return frame
