"""The Camera as the web app gets it: built at the first request, in the process that
serves (never at import or fork), in the background, with a 503 that says what the start
is doing meanwhile; and the exit for a new process when a driver call hangs."""
import atexit
import logging
import os
import threading
import time

from camera import Camera
from errors import EngineError, ModelError, SourceError
from mqtt_events import EventPublisher
from settings import detector_from_args
from sources import open_source
from sources.v4l2 import resolve_source
from tracking import Tracker
from web_params import HttpError

log = logging.getLogger("streamdetect")

# The name of the one camera a server streams, in MQTT topics and events.
CAMERA_NAME = "camera"
# The exit status of a server that ended itself because its source or an inference hangs (--exit-on-hang).
EXIT_HUNG = 3


class LastLine(logging.Handler):
    """The last line one thread (`thread`, an ident) logged at INFO or above."""

    def __init__(self):
        super(LastLine, self).__init__(logging.INFO)
        self.thread = None
        self.line = None

    def emit(self, record):
        if record.thread == self.thread:
            self.line = record.getMessage()


def exit_for_a_new_process(reason):
    """End the process at once: a source's read or open, or an inference, that never returns holds
    the device, which only a new process can open again, and its thread would hold an orderly exit
    too. uWSGI's master starts a new worker; a supervisor (Docker's --restart, systemd's Restart=)
    a new server."""
    log.error("%s: a driver call that does not return holds the device until this process ends; exiting "
              "(status %d) for a new one (--exit-on-hang 0 keeps waiting instead)", reason, EXIT_HUNG)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    os._exit(EXIT_HUNG)


class LazyCamera(object):
    """Builds the detector and Camera on first use, in the process that serves.

    Nothing starts at import or fork time (uWSGI imports this module, and a
    camera or CUDA context must not cross a fork). The first request starts it
    in the background, since loading a model or building an engine can take
    minutes; until then requests get 503 with what it is doing (the last line
    it logged), and after a failed start with the reason. A failed start is
    tried again after `retry_after` seconds.
    """

    def __init__(self, settings, retry_after=10.0):
        self.settings = settings
        self.retry_after = retry_after
        self.camera = None
        self.error = None
        self.failed_at = 0.0
        self.start_log = None  # a LastLine of the latest start: what it is doing
        self.starting = False
        self._lock = threading.Lock()

    def get(self):
        """The running Camera; HttpError 503 with the reason while there is none."""
        camera = self.camera
        if camera is not None:
            return camera
        with self._lock:
            if self.camera is not None:
                return self.camera
            if not self.starting and (not self.error or time.monotonic() - self.failed_at >= self.retry_after):
                self.starting = True
                self.start_log = LastLine()
                thread = threading.Thread(target=self._start_in_background, name="pipeline-start")
                thread.daemon = True
                thread.start()
            if self.starting:  # what it is doing: minutes of an engine build on a Nano, say
                raise HttpError(503, "starting: " + (self.start_log.line
                                                     or "checking the source and loading the model"))
            raise HttpError(503, self.error)

    def _start_in_background(self):
        self.start_log.thread = threading.get_ident()
        logging.getLogger("streamdetect").addHandler(self.start_log)
        try:
            self.start()
        except (ModelError, EngineError, SourceError) as exc:
            self.error, self.failed_at = "pipeline cannot start: {}".format(exc), time.monotonic()
            log.error("%s", self.error)
        except Exception as exc:
            self.error, self.failed_at = "pipeline cannot start: {!r}".format(exc), time.monotonic()
            log.exception("pipeline start failed")
        finally:
            logging.getLogger("streamdetect").removeHandler(self.start_log)
            self.starting = False

    def start(self):
        """Check the source, load the model and start the Camera (errors propagate). A source
        that cannot be (a file's name mistyped) is told before the model loads, which can take
        minutes (a download, a TensorRT build)."""
        settings = self.settings
        source = open_source(resolve_source(settings.source), settings.width, settings.height,
                             settings.fps, settings.loop, settings.flip)
        detector = detector_from_args(settings)
        tracker = Tracker(CAMERA_NAME, settings.track_timeout)
        events = None
        if settings.mqtt:
            labels = detector.class_names() or detector.labels
            events = EventPublisher(settings.mqtt, {CAMERA_NAME: labels}, not settings.no_ha_discovery).start()
        self.camera = Camera(source, detector, jpeg_quality=settings.jpeg_quality,
                             idle_stop=settings.idle_stop, max_viewers=settings.max_viewers,
                             on_hang=exit_for_a_new_process if settings.exit_on_hang else None,
                             hang_seconds=settings.exit_on_hang, tracker=tracker, events=events).start()
        self.error = None
        atexit.register(self.stop)  # join the threads before the interpreter (and OpenCV) go away
        return self.camera

    def stop(self):
        if self.camera is not None:
            self.camera.stop()
            if self.camera.events is not None:
                self.camera.events.stop()
