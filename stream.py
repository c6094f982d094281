"""What a viewer is sent: the MJPEG parts of /video_feed and the server-sent events of
/api/events, each frame made once for all its viewers, with the socket tuned so that a
slow viewer gets the newest frame rather than a queue of old ones."""
import functools
import json
import socket
import sys
import time

from web_params import HttpError
from yolo_tool import result_record

BOUNDARY = "frame"
# How long /snapshot.jpg and /api/detections wait for a paused (--idle-stop) pipeline's
# first frame: a camera reopens in about a second, a network stream in a few.
WAKE_SECONDS = 10.0
# A stream viewer's data the kernel may hold unsent (keep_send_queue_short): a fraction of a
# second on a 2 Mbit/s link, and no wait between the writes of a fast one.
UNSENT_BYTES = 32768


def keep_send_queue_short(environ):
    """Keep a stream viewer's frames in as few buffers as can be, so that each write waits
    while the viewer is behind and then takes the newest frame: for a viewer on a slow link
    the kernel's send buffer would grow to megabytes of old frames, seconds behind the camera.
    The development server's socket to the browser holds at most UNSENT_BYTES unsent (Linux's
    TCP_NOTSENT_LOWAT); under uWSGI, the socket to nginx gets a buffer that small (nginx's
    own: STREAM_SEND_BUFFER, and the stream buffer in nginx/streamdetect.conf)."""
    try:
        if "werkzeug.socket" in environ and sys.platform.startswith("linux"):
            environ["werkzeug.socket"].setsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_NOTSENT_LOWAT", 25),
                                                  UNSENT_BYTES)
        elif "uwsgi.version" in environ:
            import uwsgi
            connection = socket.fromfd(uwsgi.connection_fd(), socket.AF_UNIX, socket.SOCK_STREAM)  # a duplicate
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNSENT_BYTES)
            finally:
                connection.close()
    except OSError:  # not TCP (a test's socket pair), or a kernel older than 3.12: buffers as they are
        pass


def newest_frames(camera, max_fps=None, resend_after=1.0):
    """(frame, new) for one viewer: each frame as it is published, or, with
    `max_fps`, the newest one each 1/max_fps seconds (never a queue of old
    ones, for a slow link); after `resend_after` seconds without a new frame,
    the last one again (new False), so that a viewer who has gone is found by
    a failed write and proxies see traffic."""
    seq = 0
    frame = camera.latest_frame()
    interval, due = 1.0 / max_fps if max_fps else 0.0, time.monotonic()
    while True:
        if interval:
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due + interval, time.monotonic())
        newer = camera.wait_frame(seq, resend_after)
        if newer is not None:
            frame, seq = newer, newer.seq
        yield frame, newer is not None
        if camera.state == "stopped":
            return


def mjpeg_parts(camera, max_fps=None):
    """The multipart body: each part is followed at once by the next boundary
    (browsers paint a part when the next one's headers arrive)."""
    yield ("--" + BOUNDARY + "\r\n").encode()
    for frame, _ in newest_frames(camera, max_fps):
        yield frame.part


def detection_events(camera, wanted, max_fps=None):
    """Server-sent events: each new frame's detections (those `wanted`) as one event
    (its id the frame number), a comment line while none comes."""
    for frame, new in newest_frames(camera, max_fps):
        yield detection_event(camera, frame, wanted) if new else b": no new frame\n\n"


@functools.lru_cache(maxsize=8)
def detection_event(camera, frame, wanted):
    """A frame's event, made once for all its readers who want the same, as its JPEG part is."""
    return "id: {}\ndata: {}\n\n".format(frame.seq, json.dumps(frame_record(camera, frame, wanted))).encode()


def frame_record(camera, frame, wanted):
    """A published frame's detections (those `wanted`) in `detect`'s JSON schema, plus which
    frame it is, when it was captured and whether it is live."""
    record = result_record(camera.source.uri, frame.width, frame.height, camera.detector.backend,
                           frame.inference_ms, wanted.keep(frame.detections))
    record.update(frame=frame.seq, captured_at=frame.captured_at, status=frame.status or "live")
    return record


def current_frame(camera, raw=False):
    """The latest frame for one who asks now: while --idle-stop has the pipeline paused,
    the first one captured after waking it, not one from before; with `raw`, the first
    that kept its picture before drawing. Waits up to WAKE_SECONDS for either."""
    paused = camera.state == "idle"
    if raw:
        camera.want_raw()
    camera.touch()
    frame = camera.latest_frame()
    woke_at, deadline = time.time(), time.monotonic() + WAKE_SECONDS
    # frames captured just before the pause may still be on their way: not those
    while frame is None or (paused and frame.captured_at < woke_at) or (raw and frame.raw is None):
        remaining = deadline - time.monotonic()
        newer = camera.wait_frame(frame.seq if frame is not None else 0, remaining) if remaining > 0 else None
        if newer is None:
            break
        frame = newer
    return frame


def snapshot_frame(camera, raw):
    """current_frame() for /snapshot.jpg; with `raw`, HttpError 503 when no picture came in time."""
    frame = current_frame(camera, raw)
    if raw and (frame is None or frame.raw is None):
        raise HttpError(503, "no picture came from {} within {:g} s ({}); try again".format(
            camera.source.uri, WAKE_SECONDS, camera.last_error or camera.state))
    return frame
