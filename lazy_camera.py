"""The cameras as the web app gets them: built at the first request, in the process that
serves (never at import or fork), in the background, with a 503 that says what the start
is doing meanwhile, all sharing one detector; and the exit for a new process when a driver
call hangs."""
import atexit
import collections
import logging
import os
import threading
import time

from broadcast import ViewerLimit
from camera import Camera
from errors import EngineError, ModelError, SourceError
from mqtt_events import EventPublisher
from scheduler import DetectorPool
from settings import detector_from_args
from sources import open_source
from sources.v4l2 import resolve_source
from tracking import Tracker
from web_params import HttpError

log = logging.getLogger("streamdetect")

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


class LazyCameras(object):
    """Builds the detector and the Cameras on first use, in the process that serves.

    Nothing starts at import or fork time (uWSGI imports this module, and a
    camera or CUDA context must not cross a fork). The first request starts them
    in the background, since loading a model or building an engine can take
    minutes; until then requests get 503 with what it is doing (the last line
    it logged), and after a failed start with the reason. A failed start is
    tried again after `retry_after` seconds.
    """

    def __init__(self, settings, retry_after=10.0):
        self.settings = settings
        self.retry_after = retry_after
        self.cameras = None  # {name: Camera}, in the order --source gave them
        self.pool = None
        self.events = None
        self.error = None
        self.failed_at = 0.0
        self.start_log = None  # a LastLine of the latest start: what it is doing
        self.starting = False
        self._lock = threading.Lock()

    @property
    def names(self):
        return [name for name, _ in self.settings.source]

    @property
    def camera(self):
        """The first camera (None before the start), which the routes without /cameras/NAME serve."""
        return next(iter(self.cameras.values())) if self.cameras else None

    def require(self, name):
        """HttpError 404 unless a camera is named `name`."""
        if name not in self.names:
            raise HttpError(404, "there is no camera '{}'; the cameras are {}".format(
                name if len(name) <= 40 else name[:37] + "...", ", ".join(self.names)))

    def get(self, name=None):
        """The running Camera `name` (the first by default); HttpError 503 with the reason while
        there is none, 404 for a name no camera has."""
        if name is not None:
            self.require(name)
        cameras = self.cameras or self._started_or_starting()
        return cameras[name] if name is not None else next(iter(cameras.values()))

    def all(self):
        """Every running Camera, in order; HttpError 503 while they start."""
        return list((self.cameras or self._started_or_starting()).values())

    def _started_or_starting(self):
        with self._lock:
            if self.cameras is not None:
                return self.cameras
            if not self.starting and (not self.error or time.monotonic() - self.failed_at >= self.retry_after):
                self.starting = True
                self.start_log = LastLine()
                thread = threading.Thread(target=self._start_in_background, name="pipeline-start")
                thread.daemon = True
                thread.start()
            if self.starting:  # what it is doing: minutes of an engine build on a Nano, say
                raise HttpError(503, "starting: " + (self.start_log.line
                                                     or "checking the sources and loading the model"))
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
        """Check the sources, load the model and start the Cameras (errors propagate). A source
        that cannot be (a file's name mistyped) is told before the model loads, which can take
        minutes (a download, a TensorRT build)."""
        settings = self.settings
        sources = [(name, open_source(resolve_source(uri), settings.width, settings.height, settings.fps,
                                      settings.loop, settings.flip)) for name, uri in settings.source]
        detector = detector_from_args(settings)
        self.pool = DetectorPool(detector)
        if settings.mqtt:
            labels = detector.class_names() or detector.labels
            self.events = EventPublisher(settings.mqtt, {name: labels for name, _ in sources},
                                         not settings.no_ha_discovery).start()
        viewers = ViewerLimit(settings.max_viewers)
        cameras = collections.OrderedDict(
            (name, Camera(source, detector, jpeg_quality=settings.jpeg_quality, idle_stop=settings.idle_stop,
                          viewer_limit=viewers, on_hang=exit_for_a_new_process if settings.exit_on_hang else None,
                          hang_seconds=settings.exit_on_hang, tracker=Tracker(name, settings.track_timeout),
                          events=self.events, pool=self.pool))
            for name, source in sources)
        self.pool.start()
        for camera in cameras.values():
            camera.start()
        self.cameras, self.error = cameras, None
        atexit.register(self.stop)  # join the threads before the interpreter (and OpenCV) go away
        return cameras

    def stop(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        for camera in (self.cameras or {}).values():
            camera.stop(max(0.0, deadline - time.monotonic()))
        if self.pool is not None:
            self.pool.stop(deadline)
        if self.events is not None:
            self.events.stop()

    def wait_for_viewers_to_leave(self, timeout):
        """After stop(): wait, at most `timeout` seconds, until every viewer of every camera
        has taken the 'stopped' picture and ended its stream."""
        deadline = time.monotonic() + timeout
        for camera in (self.cameras or {}).values():
            camera.wait_for_viewers_to_leave(max(0.0, deadline - time.monotonic()))
