"""The web API's requests as the routes read them: the JSON error (HttpError), the access
token, CORS, and the checks of every query parameter (?fps, ?viewer, ?classes, ?conf,
?annotate), each refused with a 400 that says what it takes."""
import collections
import hmac
import re

from flask import request

from errors import ModelError
from parsing import listed_names, number_in_range, slip_for

# /video_feed?fps=N: at least one part a second, so that a viewer who has gone is
# still found within about a second by a failed write.
VIEWER_FPS_LIMITS = (1.0, 240.0)
# /video_feed?viewer=NAME, /api/stats?viewer=NAME: a page's name for its stream
VIEWER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

# The query parameters each page reads, and those it refuses with its own reason (?conf= of
# the stream: the picture is drawn once for every viewer); ?token= goes everywhere. A name
# close to one of them (?class=, ?confidence=, ?annotated=) is refused, not ignored: a script
# would take every class for the ones it asked. Other names pass, as cache busters (?t=...) do.
QUERY_PARAMETERS = {
    "index": (("fps",), ()),
    "camera_page": (("fps",), ()),
    "video_feed": (("fps", "viewer"), ("classes", "conf", "iou", "annotate")),
    "api_events": (("fps", "viewer", "classes", "conf"), ("iou",)),
    "snapshot": (("annotate",), ("classes", "conf", "iou")),
    "api_stats": (("viewer",), ()),
    "api_detections": (("classes", "conf"), ("iou",)),
    "api_detect": (("annotate", "classes", "conf", "iou"), ()),
    "upload": (("classes", "conf", "iou"), ()),
    "healthz": ((), ()),
    "metrics": ((), ()),
    "api_docs": ((), ()),
}

QUERY_NAMES = frozenset(name for reads, _ in QUERY_PARAMETERS.values() for name in reads) | {"token"}


class HttpError(Exception):
    """An error answered as JSON: {"error": message} with `status`."""

    def __init__(self, status, message):
        super(HttpError, self).__init__(message)
        self.status = status


def wants_a_page():
    """Whether the client asked for HTML before JSON (a browser's form does; curl's */* and a
    script's application/json do not)."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def endpoint():
    """The route's name without its blueprint's: 'video_feed'."""
    return (request.endpoint or "").rpartition(".")[2]


def cors_preflight():
    """A browser asking whether another origin's page may send this request: it sends no
    credentials, and its answer (Flask's automatic OPTIONS) carries no data."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def check_token(token):
    """HttpError 401 unless the request carries `token` (when one is set): as a bearer
    token, ?token=, or the password of a Basic login (any user name)."""
    if not token or request.path == "/healthz" or request.path.startswith("/static/") or cors_preflight():
        return
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    given = request.args.get("token", "")
    if scheme.lower() == "bearer":  # a scheme's name is case-insensitive (RFC 7235): bearer, BEARER
        given = credentials.strip()
    elif request.authorization is not None and request.authorization.type == "basic":
        given = request.authorization.password or ""  # the login prompt's: any user name
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HttpError(401, "this server needs its token: send 'Authorization: Bearer TOKEN', add "
                             "?token=TOKEN to the URL, or give it as the password (any user name)")


def check_query():
    """HttpError 400 for a query parameter that looks like a slip for one the route takes."""
    if endpoint() not in QUERY_PARAMETERS or cors_preflight():
        return
    reads, explains = QUERY_PARAMETERS[endpoint()]
    for name in request.args:
        if name == "token" or name in reads or name in explains or (
                name not in QUERY_NAMES and slip_for(name, QUERY_NAMES) is None):
            continue
        meant = slip_for(name, reads + explains + ("token",))
        raise HttpError(400, "{}= is no parameter of {}{}; it takes {}".format(
            name, request.path, " (did you mean {}=?)".format(meant) if meant else "",
            ", ".join(taken + "=" for taken in reads) if reads else "no parameters"))


def allow_cross_origin(response, cors_origins):
    """--cors-origins: let these origins' pages read the answers (and send a token)."""
    origin = request.headers.get("Origin")
    if origin and ("*" in cors_origins or origin in cors_origins):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in cors_origins else origin
        response.headers["Access-Control-Expose-Headers"] = "X-Frame-Seq, X-Captured-At"
        if cors_preflight():
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
    if cors_origins and "*" not in cors_origins:
        response.vary.add("Origin")  # a cache keeps one answer per origin
    return response


def fraction_asked(name):
    """?name=N, a number from 0 to 1."""
    text = request.args[name]
    value = number_in_range(text, float, 0.0, 1.0)
    if value is None:
        raise HttpError(400, "{}={} is not a number from 0 to 1".format(name, text))
    return value


def wanted_detections(camera):
    """?classes=person,car and ?conf=0.7 of a reader of the stream's detections, which the
    server decoded with its own --classes and --conf: only a narrower choice can be given."""
    detector = camera.detector
    class_ids = None
    names = listed_names(request.args.get("classes"))
    if names:
        try:
            class_ids = frozenset(detector.class_ids(names, asked_by="classes"))
        except ModelError as exc:
            raise HttpError(400, str(exc))
        reported = class_ids if detector.class_filter is None else set(detector.class_filter)
        unreported = [detector.labels[i] for i in sorted(class_ids - reported)]
        if unreported:
            raise HttpError(400, "classes: this server reports only {} (its --classes), not {}".format(
                ", ".join(detector.class_names()), ", ".join(unreported)))
    least_score = fraction_asked("conf") if "conf" in request.args else None
    if least_score is not None and least_score < detector.conf_threshold:
        raise HttpError(400, "conf={:g} is below the server's --conf {:g}: the stream keeps only detections "
                             "scoring {:g} or more (start the server with --conf {:g} for more)".format(
                                 least_score, detector.conf_threshold, detector.conf_threshold, least_score))
    if "iou" in request.args:
        raise HttpError(400, "iou= is for /api/detect uploads: the stream's boxes are merged at the server's "
                             "--iou {:g}".format(detector.iou_threshold))
    return WantedDetections(class_ids, least_score)


class WantedDetections(collections.namedtuple("WantedDetections", "class_ids least_score")):
    """Which detections of each frame a reader wants: of these class ids (None: all) scoring at
    least this (None: all)."""

    def keep(self, detections):
        return [detection for detection in detections
                if (self.class_ids is None or detection.class_id in self.class_ids)
                and (self.least_score is None or detection.score >= self.least_score)]


def annotation_asked(default, annotated, plain):
    """?annotate=1 or 0 (true/false, yes/no), else `default`; `annotated` and `plain` name
    the two answers for the error."""
    text = request.args.get("annotate", "1" if default else "0")
    if text.lower() not in ("0", "1", "true", "false", "yes", "no"):
        raise HttpError(400, "annotate={} is not 1, true or yes ({}) nor 0, false or no ({})"
                             .format(text, annotated, plain))
    return text.lower() in ("1", "true", "yes")


def viewer_fps():
    """?fps=N: the most frames per second this viewer wants, or None."""
    text = request.args.get("fps")
    if text is None:
        return None
    max_fps = number_in_range(text, float, *VIEWER_FPS_LIMITS)
    if max_fps is None:
        raise HttpError(400, "fps={} is not a number from {:g} to {:g} (the most frames per second "
                             "this viewer wants); for fewer, poll /snapshot.jpg"
                             .format(text, *VIEWER_FPS_LIMITS))
    return max_fps


def viewer_name():
    """?viewer=NAME: a page's name for its stream, by which it asks /api/stats whether the
    stream still reaches it; or None."""
    name = request.args.get("viewer")
    if name is not None and not VIEWER_NAME.match(name):
        raise HttpError(400, "viewer={}: a viewer's name is 1 to 64 letters, digits, - or _".format(name))
    return name


def refuse_detection_choices():
    """?classes=, ?conf=, ?iou= of a picture: it is drawn once for every viewer, with the server's own."""
    for name in ("classes", "conf", "iou"):
        if name in request.args:
            value = request.args[name]
            raise HttpError(400, "{0}={1}: the picture is drawn once for every viewer, with the server's own "
                                 "--{0}; start the server with --{0} {1}{2}".format(
                                     name, value, "" if name == "iou" else ", or read /api/detections?{}={} "
                                     "(or /api/events) for this choice alone".format(name, value)))
