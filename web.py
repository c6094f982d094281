"""The web app: create_app() and the Blueprint of its routes (the live page, the stream,
snapshots, the JSON API, uploads, health and metrics). Routes only read from the pipeline;
the checks of their parameters live in web_params, uploads in uploads, streams in stream."""
import base64
import functools
import hashlib
import json
import logging
import os
import secrets

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request, url_for
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from broadcast import TooManyViewers
from drawing import draw_detections, encode_opencv
from lazy_camera import LazyCameras
from metrics import prometheus_text
from settings import settings_from_env
from stream import BOUNDARY, current_frame, detection_events, frame_record, keep_send_queue_short, mjpeg_parts, \
    snapshot_frame
from uploads import JPEG_MAX_SIDE, UPLOAD_PAGE_PIXELS, UploadPlaces, detect_upload, received_upload, shown_smaller, \
    upload_too_large
from web_params import QUERY_PARAMETERS, HttpError, allow_cross_origin, annotation_asked, check_query, check_token, \
    endpoint, refuse_detection_choices, viewer_fps, viewer_name, wanted_detections, wants_a_page

log = logging.getLogger("streamdetect")
routes = Blueprint("streamdetect", __name__)

# The routes a script uses, in the order the /api page lists them, each with its line there
# (the parameters it takes come from QUERY_PARAMETERS, its methods from the app's routes).
API_ROUTES = (
    ("video_feed", "the annotated stream, multipart/x-mixed-replace (put it in an <img>); each part carries "
                   "X-Frame-Seq and X-Captured-At; fps caps this viewer's frames per second"),
    ("snapshot", "the latest annotated frame as a JPEG; annotate=0: the camera's picture alone"),
    ("api_detections", "the latest frame's detections as JSON; classes and conf keep this reader's share of them"),
    ("api_events", "the detections of every new frame as server-sent events (curl -N, or EventSource in a "
                   "browser), one data: line of JSON per frame"),
    ("api_stats", "state, FPS, inference time, frame counters, viewers, backend and model as JSON; "
                  "cameras: each camera's"),
    ("api_detect", "an image (multipart field image, or the raw body) -> its detections as JSON, or the "
                   "annotated JPEG with annotate=1"),
    ("camera_page", "one camera's live page; /cameras/NAME/video_feed, snapshot.jpg, api/detections, "
                    "api/events and api/stats are that camera's, the routes above the first camera's"),
    ("healthz", "200 while every camera's frames flow, else 503 naming the cameras down (no token needed)"),
    ("metrics", "the stats and the objects of each class in the latest frame, in Prometheus' text format"),
)


def create_app(settings=None, start=False):
    """The Flask app. `settings` is the `serve` command's namespace (default: read from
    $STREAMDETECT_* variables, as under uWSGI); `start` builds the pipeline now instead of
    at the first request."""
    settings = settings or settings_from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1024 * 1024)
    app.config["TOKEN"] = os.environ.get("STREAMDETECT_TOKEN", "")
    app.extensions["streamdetect"] = LazyCameras(settings)
    app.extensions["streamdetect.uploads"] = UploadPlaces()
    app.register_blueprint(routes)
    if start:
        app.extensions["streamdetect"].start()
    return app


def lazy_cameras():
    return current_app.extensions["streamdetect"]


def serve_settings():
    return lazy_cameras().settings


@routes.app_errorhandler(HttpError)
def http_error(exc):
    response = jsonify(error=str(exc))
    response.status_code = exc.status
    if exc.status == 401:  # Basic: a browser asks for the token in its login prompt
        response.headers["WWW-Authenticate"] = 'Basic realm="streamdetect", charset="UTF-8"'
        response.headers.add("WWW-Authenticate", 'Bearer realm="streamdetect"')
    return response


@routes.app_errorhandler(HTTPException)
def werkzeug_error(exc):
    if exc.code == 413:
        message = refused_as_too_large()
        if endpoint() == "upload" and wants_a_page():  # the browser's form: its page with the reason
            return upload_page(error=message), 413
    elif exc.code == 405:
        message = "{} takes {}, not {}{}".format(
            request.path, " or ".join(sorted(set(exc.valid_methods or ()) - {"HEAD", "OPTIONS"})), request.method,
            ": POST an image (curl -F image=@photo.jpg URL)" if request.path == "/api/detect" else "")
    elif exc.code == 404:
        path = request.path if len(request.path) <= 80 else request.path[:77] + "..."
        message = "Not Found: {} is no page of this server; it has {}".format(path, ", ".join(sorted(
            rule.rule + ("" if "GET" in rule.methods else " (POST)")
            for rule in current_app.url_map.iter_rules() if rule.endpoint != "static")))
    else:
        message = "{}: {}".format(exc.name, exc.description)
    response = jsonify(error=message)
    response.status_code = exc.code
    return response


def refused_as_too_large():
    """Why a 413: the body over --max-upload-mb, or a multipart form over Werkzeug's limits
    of parts and of a field that is not a file (a body well under the size limit)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    parts, memory = getattr(request, "max_form_parts", None), getattr(request, "max_form_memory_size", None)
    if parts and request.mimetype == "multipart/form-data" and (request.content_length or 0) <= limit:
        return "the multipart upload has over {} parts{}; send the picture as the one file field 'image'".format(
            parts, ", or a field that is no file over {} KB".format(memory // 1000) if memory else "")
    return upload_too_large(serve_settings().max_upload_mb)


@routes.app_errorhandler(Exception)
def unexpected_error(exc):
    log.exception("unexpected error on %s", request.path)
    response = jsonify(error="internal error: {}; see the server log".format(type(exc).__name__))
    response.status_code = 500
    return response


@routes.before_app_request
def check_request():
    check_token(current_app.config["TOKEN"])
    check_query()


@routes.after_app_request
def cross_origin(response):
    return allow_cross_origin(response, set(serve_settings().cors_origins or ()))


@routes.app_url_defaults
def static_by_content(endpoint_name, values):
    """/static/NAME?v=DIGEST: after an upgrade the new page asks for its own script and
    style, not the ones a browser keeps from nginx's hour of caching."""
    if endpoint_name == "static" and "v" not in values:
        values["v"] = static_digest(os.path.join(current_app.static_folder, values["filename"]))


@functools.lru_cache(maxsize=None)
def static_digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()[:10]


@routes.route("/")
def index():
    """The live page of the one camera, or the grid of every camera's stream."""
    names = lazy_cameras().names
    if len(names) == 1:
        return live_page(None)
    max_fps = viewer_fps()
    return not_kept(render_template("cameras.html", token=request.args.get("token", ""), cameras=names,
                                    fps="{:g}".format(max_fps) if max_fps else None))


@routes.route("/cameras/<name>/")
def camera_page(name):
    lazy_cameras().require(name)
    return live_page(name)


def live_page(camera):
    """The live page of `camera` (None: the first, by the routes of one camera)."""
    max_fps = viewer_fps()
    return not_kept(render_template("index.html", token=request.args.get("token", ""), camera=camera,
                                    fps="{:g}".format(max_fps) if max_fps else None,
                                    viewer=secrets.token_urlsafe(12)))


def not_kept(page):
    """A live page, which the browser does not keep: a copy shown again (a duplicated tab, the
    back button) would stream under the first's viewer name. (The upload page is kept, so that
    going back to a result shows it, not a form resubmission.)"""
    response = Response(page, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


def stream_to_viewer(body, mimetype, camera_name):
    """One more viewer's response: `body(camera, max_fps)` streamed until the viewer goes."""
    max_fps = viewer_fps()
    name = viewer_name()
    camera = lazy_cameras().get(camera_name)
    try:
        release = camera.join_viewer(name)
    except TooManyViewers as exc:
        raise HttpError(503, str(exc))
    keep_send_queue_short(request.environ)
    response = Response(body(camera, max_fps=max_fps), mimetype=mimetype)
    response.call_on_close(release)
    response.headers["Cache-Control"] = "no-cache, no-store, must-revalidate, private"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@routes.route("/cameras/<name>/video_feed")
@routes.route("/video_feed")
def video_feed(name=None):
    refuse_detection_choices()
    if "annotate" in request.args:
        raise HttpError(400, "annotate={}: the stream is drawn once for every viewer; /snapshot.jpg?annotate=0 "
                             "gives the camera's picture alone".format(request.args["annotate"]))
    return stream_to_viewer(mjpeg_parts, "multipart/x-mixed-replace; boundary=" + BOUNDARY, name)


@routes.route("/cameras/<name>/api/events")
@routes.route("/api/events")
def api_events(name=None):
    wanted = wanted_detections(lazy_cameras().get(name))
    return stream_to_viewer(functools.partial(detection_events, wanted=wanted), "text/event-stream", name)


@routes.route("/cameras/<name>/snapshot.jpg")
@routes.route("/snapshot.jpg")
def snapshot(name=None):
    refuse_detection_choices()
    raw = not annotation_asked(True, "boxes, labels and stats drawn", "the camera's picture alone")
    camera = lazy_cameras().get(name)
    frame = snapshot_frame(camera, raw)
    response = Response(encode_opencv(frame.raw, serve_settings().jpeg_quality) if raw else frame.jpeg,
                        mimetype="image/jpeg")
    response.headers["Cache-Control"] = "no-cache, no-store"
    response.headers["X-Frame-Seq"] = str(frame.seq)
    response.headers["X-Captured-At"] = "{:.6f}".format(frame.captured_at)
    return response


@routes.route("/cameras/<name>/api/stats")
@routes.route("/api/stats")
def api_stats(name=None):
    viewer = viewer_name()
    camera = lazy_cameras().get(name)
    stats = camera.stats()
    if name is None:
        stats["cameras"] = {each.name: camera_stats(stats if each is camera else each.stats())
                            for each in lazy_cameras().all()}
    if viewer:
        stats["viewer_connected"] = camera.is_watching(viewer)
    return jsonify(stats)


@routes.route("/cameras/<name>/api/detections")
@routes.route("/api/detections")
def api_detections(name=None):
    camera = lazy_cameras().get(name)
    wanted = wanted_detections(camera)
    return jsonify(frame_record(camera, current_frame(camera), wanted))


@routes.route("/api/detect", methods=["POST"])
def api_detect():
    annotated = annotation_asked(False, "the annotated JPEG", "JSON")
    received = received_upload(current_app.config["MAX_CONTENT_LENGTH"])
    with current_app.extensions["streamdetect.uploads"].place():
        frame, detections, record, camera = detect_upload(lazy_cameras(), received, serve_settings().max_upload_pixels)
        if annotated:
            shown, detections = shown_smaller(frame, detections, JPEG_MAX_SIDE)
            draw_detections(shown, detections, camera.detector.colors)
            return Response(encode_opencv(shown, 90), mimetype="image/jpeg")
        return jsonify(record)


@routes.route("/api")
def api_docs():
    given = request.args.get("token", "")
    listed = []
    for name, what in API_ROUTES:
        rule = min(current_app.url_map.iter_rules(routes.name + "." + name), key=lambda each: len(each.arguments))
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        listed.append({"path": rule.rule, "methods": methods, "what": what, "takes": QUERY_PARAMETERS[name][0],
                       "link": url_for("." + name, token=given or None) if "GET" in methods and not rule.arguments
                       else None})
    return render_template("api.html", token=given, needs_token=bool(current_app.config["TOKEN"]), routes=listed)


def upload_page(**shown):
    return render_template("upload.html", token=request.args.get("token", ""),
                           needs_token=bool(current_app.config["TOKEN"]),
                           max_bytes=current_app.config["MAX_CONTENT_LENGTH"],
                           too_large=upload_too_large(serve_settings().max_upload_mb), **shown)


@routes.route("/upload", methods=["GET", "POST"])
def upload():
    if request.method == "GET":
        return upload_page()
    try:
        received = received_upload(current_app.config["MAX_CONTENT_LENGTH"])
        with current_app.extensions["streamdetect.uploads"].place():
            frame, detections, record, camera = detect_upload(lazy_cameras(), received,
                                                              serve_settings().max_upload_pixels)
            shown, detections = shown_smaller(frame, detections, UPLOAD_PAGE_PIXELS)
            draw_detections(shown, detections, camera.detector.colors)
            image = base64.b64encode(encode_opencv(shown, 90)).decode("ascii")
    except HttpError as exc:
        if not wants_a_page():  # a script: the JSON error, as /api/detect answers
            raise
        return upload_page(error=str(exc)), exc.status
    return upload_page(record=record, result_json=json.dumps(record, indent=2), image=image,
                       scaled_to="{}×{}".format(shown.shape[1], shown.shape[0]) if shown is not frame else None)


@routes.route("/healthz")
def healthz():
    """200 while every camera streams (or waits on purpose), else 503 naming those down; the
    first camera's state, fps and error at the top, as with one camera."""
    try:
        cameras = lazy_cameras().all()
    except HttpError as exc:
        return jsonify(status="starting" if lazy_cameras().starting else "down", error=str(exc)), 503
    each = {camera.name: (camera.healthy(), camera.stats()) for camera in cameras}
    down = [name for name, (healthy, _) in each.items() if not healthy]
    first = each[cameras[0].name][1]
    error = first["last_error"] if len(cameras) == 1 else "; ".join(
        "{}: {}".format(name, each[name][1]["last_error"] or each[name][1]["state"]) for name in down)
    return jsonify(status="unhealthy" if down else "ok", state=first["state"], fps=first["fps"], error=error,
                   down=down, cameras={name: {"state": stats["state"], "fps": stats["fps"],
                                              "error": stats["last_error"]} for name, (_, stats) in each.items()}
                   ), 503 if down else 200


@routes.route("/metrics")
def metrics():
    # content_type, not mimetype: Flask would add a second charset, which Prometheus 3 refuses to parse
    return Response(prometheus_text(lazy_cameras().all()), content_type=CONTENT_TYPE_LATEST)


# What the "cameras" of /api/stats leave out: the same for every camera (the model, the engine).
SHARED_STATS = ("backend", "precision", "model", "model_outputs", "classes", "frames_in_flight", "max_viewers",
                "mqtt", "started_at")


def camera_stats(stats):
    return {key: value for key, value in stats.items() if key not in SHARED_STATS}
