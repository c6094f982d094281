"""The streaming server as clients see it: `python app.py serve` on loopback,
a test:// source and the red-square model, real HTTP clients."""
import base64
import html
import http.client
import http.server
import io
import json
import logging
import re
import threading
import time

import cv2
import numpy as np
import pytest

import lazy_camera
import onnx_models
import stream
import uploads
from errors import ModelError
from settings import build_parser
from streaming import (Server, StreamCuttingProxy, Viewer, basic_auth, free_port, frozen_viewer, get, get_json,
                       http_server, read_events, red_square_scene, requests_logged_around_polls, run_app,
                       slow_viewer_latencies, stream_request, wait_for_viewers, wait_until, watch)
from web import API_ROUTES, create_app

FPS = 20


@pytest.fixture(scope="module")
def server(red_square_model):
    with Server("serve", "--source", "test://?fps={}".format(FPS), "--model", red_square_model,
                "--max-upload-mb", "1", "--max-upload-pixels", "1000000", "--max-viewers", "12") as running:
        yield running


def inferred_rate(server, seconds, viewers):
    """frames_inferred per second while `viewers` viewers watch for `seconds`."""
    before = server.stats()["frames_inferred"]
    started = time.time()
    watched = watch(server.port, viewers, seconds)
    rate = (server.stats()["frames_inferred"] - before) / (time.time() - started)
    return rate, watched


def test_viewers_share_one_inference_per_frame(server):
    single_inferred, [single] = inferred_rate(server, 4, 1)
    assert single.error is None and single.status == 200 and single.bad == 0
    assert single.rate() > FPS * 0.7
    many_inferred, many = inferred_rate(server, 4, 8)
    for viewer in many:
        assert viewer.error is None and viewer.status == 200 and viewer.bad == 0
        assert viewer.rate() == pytest.approx(single.rate(), rel=0.10)
    assert many_inferred == pytest.approx(single_inferred, rel=0.10)
    assert single_inferred == pytest.approx(FPS, rel=0.15)


def test_a_viewer_can_ask_for_fewer_frames_per_second(server):
    """?fps=4 on a slow link: four of the newest frames a second, while a viewer
    beside it gets every frame; a value out of range is a one-line 400."""
    capped, full = Viewer(server.port, path="/video_feed?fps=4"), Viewer(server.port)
    for viewer in (capped, full):
        viewer.start()
    time.sleep(4)
    for viewer in (capped, full):
        viewer.close()
        viewer.join(10)
        assert viewer.error is None and viewer.status == 200 and viewer.bad == 0
    assert 3.0 <= capped.rate() <= 4.6 and full.rate() > FPS * 0.7
    # Each part is the newest frame, not one queued since the last part (1/4 s old).
    assert np.median(capped.latencies) < np.median(full.latencies) + 0.1
    for value in ("0", "0.5", "abc", "241", "nan"):
        for path in ("/video_feed", "/"):
            status, answer = get_json(server.port, path + "?fps=" + value)
            assert status == 400 and answer["error"].startswith("fps={} is not a number from 1 to 240"
                                                                .format(value))
    status, _, page = get(server.port, "/?fps=4")  # the page's stream, capped alike
    assert status == 200 and b'src="/video_feed?fps=4&amp;viewer=' in page


def test_detections_arrive_as_server_sent_events(server):
    """/api/events: each new frame's detections as one event, in /api/detections'
    schema, its id the frame's number; ?fps=N spaces them as it does the stream."""
    status, headers, events = read_events(server.port, 10)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert "no-cache" in headers["Cache-Control"]
    ids = [event_id for event_id, _, _ in events]
    assert len(ids) == 10 and ids == sorted(set(ids)) and ids[-1] - ids[0] < 15  # new frames, not repeats
    for event_id, record, received_at in events:
        assert record["frame"] == event_id and record["status"] == "live"
        assert (record["width"], record["height"]) == (640, 480)
        assert {d["label"] for d in record["detections"]} == {"aeroplane"}
        assert 0 < received_at - record["captured_at"] < 5
    started = time.time()
    status, _, events = read_events(server.port, 5, path="/api/events?fps=4")
    assert status == 200 and len(events) == 5 and time.time() - started > 0.9  # 4 gaps of 1/4 s at least
    status, answer = get_json(server.port, "/api/events?fps=0")
    assert status == 400 and answer["error"].startswith("fps=0 is not a number from 1 to 240")


def test_an_event_reader_counts_as_a_viewer_until_it_goes(server):
    import socket
    assert wait_for_viewers(server, 0, 5) == 0
    reader = socket.create_connection(("127.0.0.1", server.port))
    reader.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_for_viewers(server, 1, 5) == 1
    reader.close()
    assert wait_for_viewers(server, 0, 2.0) == 0


def test_closed_viewer_is_released_within_two_seconds(server):
    assert wait_for_viewers(server, 0, 5) == 0  # earlier tests' viewers are gone
    viewer = Viewer(server.port)
    viewer.start()
    assert wait_for_viewers(server, 1, 5) == 1
    viewer.close()
    assert wait_for_viewers(server, 0, 2.0) == 0


def test_a_viewer_that_reads_nothing_does_not_slow_the_others(server):
    import socket
    [baseline] = watch(server.port, 1, 3)
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /video_feed HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        [other] = watch(server.port, 1, 10)
    finally:
        stalled.close()
    assert other.error is None and other.bad == 0
    assert other.rate() == pytest.approx(baseline.rate(), rel=0.10)


def test_a_snapshot_without_annotations_is_the_cameras_picture(server):
    """/snapshot.jpg?annotate=0: the picture as captured, for a script that collects pictures
    (to label, say): no boxes, labels or stats line drawn."""
    def stats_band_pixels(body):
        """The black pixels where the stats line's band is drawn (the test scene has none there)."""
        corner = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)[:20, :150].astype(int)
        return int((corner.sum(axis=2) < 60).sum())
    drawn = get(server.port, "/snapshot.jpg")[2]
    status, headers, raw = get(server.port, "/snapshot.jpg?annotate=0")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and int(headers["X-Frame-Seq"]) > 0
    assert stats_band_pixels(drawn) > 1500 and stats_band_pixels(raw) == 0
    square = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert (np.abs(square.astype(int) - (0, 0, 255)).sum(axis=2) < 60).sum() > 1000  # the scene's red square
    assert get_json(server.port, "/snapshot.jpg?annotate=maybe") == (400, {
        "error": "annotate=maybe is not 1, true or yes (boxes, labels and stats drawn) nor 0, false or no "
                 "(the camera's picture alone)"})


def test_a_picture_asked_of_a_source_that_gives_none_is_a_503_in_time(red_square_model, monkeypatch):
    monkeypatch.setattr(stream, "WAKE_SECONDS", 1.0)
    unreachable = "http://127.0.0.1:{}/snapshot.jpg".format(free_port())
    settings = build_parser().parse_args(["serve", "--source", unreachable, "--model", red_square_model])
    app = create_app(settings, start=True)
    try:
        started = time.monotonic()
        answer = app.test_client().get("/snapshot.jpg?annotate=0")
        assert answer.status_code == 503 and time.monotonic() - started < 5
        assert answer.get_json()["error"].startswith(
            "no picture came from {} within 1 s (cannot open {}: cannot reach it: Connection refused".format(
                unreachable, unreachable))
    finally:
        app.extensions["streamdetect"].stop()


def test_page_api_and_metrics(server):
    status, headers, body = get(server.port, "/")
    assert status == 200 and re.search(rb'src="/video_feed\?viewer=[\w-]{16}"', body) and b'href="/upload' in body
    status, headers, body = get(server.port, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
    status, stats = get_json(server.port, "/api/stats")
    for key in ("state", "fps", "inference_ms", "frames_captured", "frames_decoded", "frames_inferred",
                "frames_dropped", "viewers", "backend", "model", "uptime"):
        assert key in stats
    assert stats["state"] == "streaming" and stats["model"] == "red_square.onnx" and stats["classes"] is None
    status, record = get_json(server.port, "/api/detections")
    assert status == 200 and (record["width"], record["height"]) == (640, 480)
    assert record["detections"] and record["detections"][0]["label"] == "aeroplane"
    status, headers, body = get(server.port, "/metrics")
    assert status == 200 and b"streamdetect_frames_inferred_total" in body
    assert headers["Content-Type"].startswith("text/plain; version=") and headers["Content-Type"].count("charset") == 1
    assert b"streamdetect_frames_decoded_total" in body
    objects = {line.split(b" ")[0]: float(line.split(b" ")[1]) for line in body.splitlines()
               if line.startswith(b"streamdetect_objects{")}
    assert len(objects) == 20 and objects[b'streamdetect_objects{camera="camera",label="aeroplane"}'] >= 1
    assert objects[b'streamdetect_objects{camera="camera",label="person"}'] == 0
    status, answer = get_json(server.port, "/video_feed/")  # a mistyped route names the right ones
    assert status == 404 and answer["error"] == (
        "Not Found: /video_feed/ is no page of this server; it has /, /api, /api/detect (POST), /api/detections, "
        "/api/events, /api/stats, /cameras/<name>/, /cameras/<name>/api/detections, /cameras/<name>/api/events, "
        "/cameras/<name>/api/stats, /cameras/<name>/snapshot.jpg, /cameras/<name>/video_feed, /healthz, /metrics, "
        "/snapshot.jpg, /upload, /video_feed")
    status, headers, body = get(server.port, "/video_feed?x", timeout=3, method="HEAD")
    assert headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
    assert "no-cache" in headers["Cache-Control"]


def test_metrics_in_base_units_and_one_series_per_state(server):
    from prometheus_client.parser import text_string_to_metric_families
    from camera import Camera
    status, headers, body = get(server.port, "/metrics")
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    camera = (("camera", "camera"),)  # every series of a camera is labelled with its name
    for stage in ("inference", "wait", "render", "latency"):  # ms of red_square: well under 0.05 s
        assert 0 < samples[("streamdetect_{}_seconds".format(stage), camera)] < 0.05
    assert samples[("streamdetect_uptime_seconds", ())] > 0
    assert samples[("streamdetect_source_up", camera)] == 1
    states = {dict(labels)["state"]: value for (name, labels), value in samples.items()
              if name == "streamdetect_state" and dict(labels)["camera"] == "camera"}
    assert set(states) == set(Camera.STATES) and {s for s, v in states.items() if v} == {"streaming"}


def test_the_api_page_names_every_route_a_script_uses(server, red_square_model):
    from markupsafe import escape
    settings = build_parser().parse_args(["serve", "--source", "test://", "--model", red_square_model])
    routes = {rule.endpoint.rpartition(".")[2] for rule in create_app(settings).url_map.iter_rules()}
    assert {endpoint for endpoint, _ in API_ROUTES} == routes - {"static", "index", "upload", "api_docs"}
    status, _, page = get(server.port, "/")
    assert b'<a href="/api">API</a>' in page
    status, _, page = get(server.port, "/api")
    assert status == 200
    for _, what in API_ROUTES:
        assert str(escape(what)).encode() in page
    assert re.search(rb'GET\s+<a href="/api/detections">/api/detections</a>', page)
    assert re.search(rb"POST\s+<code>/api/detect</code>", page)  # no link: a browser would GET it
    assert b"<code>annotate=</code> <code>classes=</code> <code>conf=</code> <code>iou=</code>" in page
    assert b"Authorization" not in page  # this server has no token


def png_bytes(width, height):
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def multipart(*files):
    """A multipart/form-data body and its headers: files as field, filename, data, in threes."""
    boundary = "testboundary"
    body = b""
    for field, filename, data in zip(files[::3], files[1::3], files[2::3]):
        body += ("--{b}\r\nContent-Disposition: form-data; name=\"{f}\"; filename=\"{n}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").format(b=boundary, f=field, n=filename).encode()
        body += data + b"\r\n"
    body += "--{}--\r\n".format(boundary).encode()
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def test_the_log_keeps_every_request_but_the_pages_polls(server):
    """As nginx's in production: the live page's two API polls a second, and health checks, are
    logged only when they fail; and plain text in a file, without terminal colours."""
    log, requests = requests_logged_around_polls(server)
    assert "POST /api/stats?token=*** HTTP/1.1" in requests
    assert not [request for request in requests if request.startswith("GET /api/") or "/healthz" in request]
    assert "\x1b" not in log and "s3cret" not in log


def test_uploads_good_and_bad(server):
    viewer = Viewer(server.port)
    viewer.start()
    jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()

    body, headers = multipart("image", "scene.jpg", jpeg)
    status, record = get_json(server.port, "/api/detect", method="POST", body=body, headers=headers)
    assert status == 200 and record["image"] == "scene.jpg" and record["width"] == 320
    assert record["detections"][0]["label"] == "aeroplane"
    status, record = get_json(server.port, "/api/detect", method="POST", body=jpeg)  # raw body
    assert status == 200 and record["detections"]
    status, record = get_json(server.port, "/api/detect", method="POST", body=jpeg,  # as curl --data-binary
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and record["image"] == "upload" and record["detections"]
    status, headers, body = get(server.port, "/api/detect?annotate=1", method="POST", body=jpeg)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    assert get(server.port, "/api/detect?annotate=True", method="POST", body=jpeg)[1]["Content-Type"] == "image/jpeg"
    panorama = cv2.imencode(".png", np.full((10, 70000, 3), 128, np.uint8))[1].tobytes()  # beyond JPEG's 65500
    status, headers, body = get(server.port, "/api/detect?annotate=1", method="POST", body=panorama)
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape[1] == 65500
    assert get_json(server.port, "/api/detect?annotate=no", method="POST", body=jpeg)[1]["detections"]
    assert get_json(server.port, "/api/detect?annotate=jpeg", method="POST", body=jpeg) == (400, {
        "error": "annotate=jpeg is not 1, true or yes (the annotated JPEG) nor 0, false or no (JSON)"})

    bad = [
        (b"this is not an image", 400, "not an image"),
        (b"", 400, "no image received"),
        (png_bytes(1200, 1000), 413, "over the limit"),            # 1.2 Mpx > 1 Mpx
        (np.random.bytes(1200000), 413, "larger than 1 MB"),        # 1.2 MB > 1 MB
    ]
    for data, want_status, want_text in bad:
        status, record = get_json(server.port, "/api/detect", method="POST", body=data,
                                  headers={"Content-Type": "application/octet-stream"})
        assert status == want_status and want_text in record["error"], (want_status, record)
    encoded = base64.b64encode(jpeg)  # as a browser script has it (FileReader, canvas.toDataURL)
    for body in (encoded, b"data:image/jpeg;base64," + encoded, b'{"image": "' + encoded + b'"}',
                 json.dumps({"image": "data:image/jpeg;base64," + encoded.decode()}).encode()):
        status, record = get_json(server.port, "/api/detect", method="POST", body=body,
                                  headers={"Content-Type": "application/json" if body[:1] == b"{" else "text/plain"})
        assert status == 200 and record["detections"], body[:40]
    ascii_ppm = b"P3\n5 1\n255\n" + b" ".join([b"0 0 255"] * 5) + b"\n"  # also base64 text, of no picture
    if uploads.picture_size(ascii_ppm, 100) is not None:  # Pillow reads P3 since 9.2
        status, record = get_json(server.port, "/api/detect", method="POST", body=ascii_ppm)
        assert status == 200 and record["width"] == 5, record  # taken as sent
    assert get_json(server.port, "/api/detect", method="POST", body=b'{"picture": "abc"}') == (
        400, {"error": 'a JSON upload is {"image": "<the picture in base64>"}'})
    assert get_json(server.port, "/api/detect") == (
        405, {"error": "/api/detect takes POST, not GET: POST an image (curl -F image=@photo.jpg URL)"})
    body, headers = multipart("photo", "x.jpg", jpeg)  # the one file sent, under another name
    status, record = get_json(server.port, "/api/detect", method="POST", body=body, headers=headers)
    assert status == 200 and record["image"] == "x.jpg" and record["detections"]
    status, record = get_json(server.port, "/api/detect", method="POST", body=jpeg,
                              headers={"Content-Type": "multipart/form-data; boundary=x"})  # not a form
    assert status == 400 and record["error"] == ("the multipart upload has no file (curl -F image=@photo.jpg "
                                                 "sends one); a picture as the raw body needs another Content-Type")
    body, headers = multipart("image", "photo.jpg", b"")
    assert get_json(server.port, "/api/detect", method="POST", body=body, headers=headers) == (
        400, {"error": "photo.jpg is an empty file (0 bytes); send the picture itself"})
    body, headers = multipart("left", "l.jpg", jpeg, "right", "r.jpg", jpeg)
    status, record = get_json(server.port, "/api/detect", method="POST", body=body, headers=headers)
    assert status == 400 and record["error"] == ("the multipart upload has no field 'image' (it has 'left', "
                                                 "'right'); send the picture as 'image'")
    as_a_form = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser's form asks for
    status, _, page = get(server.port, "/upload", method="POST", body=multipart("image", "a.txt", b"text")[0],
                          headers=dict(multipart("image", "a.txt", b"text")[1], **as_a_form))
    assert status == 400 and b"not an image" in page
    body, headers = multipart("image", "photo.jpg", np.random.bytes(1200000))  # over --max-upload-mb 1
    status, headers, page = get(server.port, "/upload", method="POST", body=body, headers=dict(headers, **as_a_form))
    assert status == 413 and headers["Content-Type"].startswith("text/html")  # the form's page, not JSON
    assert b'<p class="error">upload is larger than 1 MB (--max-upload-mb)</p>' in page and b"<form" in page

    frames_before = viewer.frames
    time.sleep(1.0)
    viewer.close()
    viewer.join(5)
    assert viewer.error is None and viewer.frames - frames_before >= FPS * 0.5
    assert server.stats()["state"] == "streaming"


def test_uploads_in_formats_opencv_cannot_read(server):
    """A GIF (which the OpenCV of JetPack and Python 3.6 cannot read), TGA or ICO is detected as the
    same picture in PNG is, through Pillow; an iPhone's HEIC, which neither reads, is named."""
    from PIL import Image
    picture = Image.fromarray(red_square_scene()[:, :, ::-1])
    found = None
    for kind in ("PNG", "GIF", "TGA", "ICO"):
        sent = io.BytesIO()
        picture.save(sent, kind, **({"sizes": [(256, 192)]} if kind == "ICO" else {}))
        status, record = get_json(server.port, "/api/detect", method="POST", body=sent.getvalue())
        assert status == 200 and record["detections"], (kind, record)
        boxes = [(d["label"], len(record["detections"])) for d in record["detections"]]
        found = found or boxes
        assert boxes == found, kind
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)
    assert get_json(server.port, "/api/detect", method="POST", body=heic) == (400, {
        "error": "the upload is a HEIC picture (as iPhones take), which cannot be read here; send it as JPEG (on an "
                 "iPhone: Settings > Camera > Formats > Most Compatible)"})


def test_an_upload_can_ask_for_its_own_thresholds_and_classes(server):
    """?conf=, ?iou= and ?classes= apply to this picture only, as --conf, --iou and --classes do
    to all; one that cannot apply is a 400 naming it, not ignored."""
    jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()

    def detect(query):
        status, record = get_json(server.port, "/api/detect" + query, method="POST", body=jpeg)
        return record["detections"] if status == 200 else (status, record["error"])
    found = detect("")
    assert found and detect("?conf=1") == [] and detect("?classes=person") == []
    assert detect("?classes=person,aeroplane") == found
    assert detect("?classes=person,%20aeroplane,") == found  # as --classes 'person, aeroplane,' reads
    assert len(detect("?iou=1")) > len(found) > len(detect("?iou=0"))
    assert detect("?conf=high") == (400, "conf=high is not a number from 0 to 1")
    assert detect("?iou=2") == (400, "iou=2 is not a number from 0 to 1")
    status, error = detect("?classes=unicorn")
    assert status == 400 and error.startswith("classes: unicorn is not among the classes of red_square.onnx: ")
    assert detect("?conf=1") == [] and get_json(server.port, "/api/detections")[1]["detections"]  # not the stream's


def test_a_reader_of_the_stream_detections_can_narrow_them(server):
    """?classes= and ?conf= on /api/detections and /api/events keep this reader's share of each
    frame's detections (a script waiting for a person); what the stream did not keep (a lower
    --conf, another --iou) is a 400 saying why, not ignored."""
    def detections(query):
        status, record = get_json(server.port, "/api/detections" + query)
        return [d["label"] for d in record["detections"]] if status == 200 else (status, record["error"])
    # Each request answers the newest frame, whose boxes differ as the square moves: labels are compared.
    assert set(detections("")) == {"aeroplane"}
    for query in ("?classes=aeroplane", "?classes=person,%20aeroplane,", "?conf=0.5&classes=aeroplane"):
        assert set(detections(query)) == {"aeroplane"}, query  # the server's own --conf keeps all
    assert detections("?classes=person") == [] and detections("?conf=1") == []
    status, _, events = read_events(server.port, 3, path="/api/events?classes=person")
    assert status == 200 and len(events) == 3 and all(record["detections"] == [] for _, record, _ in events)
    status, _, events = read_events(server.port, 3, path="/api/events?classes=aeroplane&conf=0.5")
    assert all(record["detections"] for _, record, _ in events)
    for path in ("/api/detections", "/api/events"):
        assert get_json(server.port, path + "?conf=0.2")[1]["error"] == (
            "conf=0.2 is below the server's --conf 0.5: the stream keeps only detections scoring 0.5 or more "
            "(start the server with --conf 0.2 for more)")
        assert get_json(server.port, path + "?conf=many") == (400, {"error": "conf=many is not a number from 0 to 1"})
        assert get_json(server.port, path + "?iou=0.3")[1]["error"].startswith("iou= is for /api/detect uploads")
        status, answer = get_json(server.port, path + "?classes=unicorn")
        assert status == 400 and answer["error"].startswith("classes: unicorn is not among the classes of ")
    assert wait_for_viewers(server, 0, 5) == 0  # a refused reader took no place
    assert get_json(server.port, "/video_feed?annotate=0") == (400, {"error": (
        "annotate=0: the stream is drawn once for every viewer; /snapshot.jpg?annotate=0 gives the camera's picture "
        "alone")})
    for path in ("/video_feed", "/snapshot.jpg"):  # drawn once for all: not ignored, said why
        assert get(server.port, path + "?classes=person")[0] == 400
        assert get_json(server.port, path + "?classes=person")[1]["error"] == (
            "classes=person: the picture is drawn once for every viewer, with the server's own --classes; start the "
            "server with --classes person, or read /api/detections?classes=person (or /api/events) for this choice "
            "alone")
        assert get_json(server.port, path + "?iou=0.3") == (400, {"error": (
            "iou=0.3: the picture is drawn once for every viewer, with the server's own --iou; start the server with "
            "--iou 0.3")})


def test_a_misspelt_or_misplaced_parameter_is_a_400_not_ignored(server):
    """?class=person answered with every class would look like a person in every frame; a
    parameter another page reads is no silent no-op here either. Names like no parameter of
    ours pass: cache busters."""
    assert get_json(server.port, "/api/detections?class=person") == (400, {"error": (
        "class= is no parameter of /api/detections (did you mean classes=?); it takes classes=, conf=")})
    for path, meant in (("/api/detections?confidence=0.9", "conf"), ("/api/events?Classes=person", "classes"),
                        ("/snapshot.jpg?annotated=0", "annotate"), ("/video_feed?viewers=a", "viewer"),
                        ("/api/stats?tokn=x", "token")):
        status, answer = get_json(server.port, path)
        assert status == 400 and "(did you mean {}=?)".format(meant) in answer["error"], path
    assert get_json(server.port, "/snapshot.jpg?fps=5") == (400, {"error": (
        "fps= is no parameter of /snapshot.jpg; it takes annotate=")})
    assert get_json(server.port, "/healthz?viewer=a")[1]["error"] == (
        "viewer= is no parameter of /healthz; it takes no parameters")
    assert wait_for_viewers(server, 0, 5) == 0  # a refused viewer took no place
    assert get(server.port, "/snapshot.jpg?t=1700000000")[0] == 200
    assert get_json(server.port, "/api/detections?_=1&classes=aeroplane")[0] == 200


def test_a_reader_cannot_ask_for_classes_the_server_leaves_out(red_square_model):
    settings = build_parser().parse_args(["serve", "--source", "test://", "--model", red_square_model,
                                                     "--classes", "person,aeroplane"])
    app = create_app(settings, start=True)
    client = app.test_client()
    try:
        assert wait_until(lambda: client.get("/api/detections").status_code == 200, 10)
        assert client.get("/api/detections?classes=aeroplane").status_code == 200
        answer = client.get("/api/detections?classes=dog,aeroplane,cat")
        assert answer.status_code == 400 and answer.get_json() == {
            "error": "classes: this server reports only aeroplane, person (its --classes), not cat, dog"}
    finally:
        app.extensions["streamdetect"].stop()


def test_slow_senders_hold_no_upload_place(server):
    """Uploads are handled two at a time (memory); two senders whose bodies trickle in, as on a
    slow link, must not keep a third, whole one waiting."""
    import socket
    slow = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream"
                     b"\r\nContent-Length: 100000\r\n\r\n" + b"\xff\xd8" * 50)
        slow.append(sock)
    try:
        time.sleep(0.5)  # both are in the app, reading their bodies
        jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()
        status, record = get_json(server.port, "/api/detect", method="POST", body=jpeg, timeout=10)
        assert status == 200 and record["detections"]
    finally:
        for sock in slow:
            sock.close()


def test_upload_page_shows_the_result(server):
    jpeg = cv2.imencode(".jpg", np.full((100, 100, 3), 200, np.uint8))[1].tobytes()
    body, headers = multipart("image", "grey.jpg", jpeg)
    status, _, page = get(server.port, "/upload", method="POST", body=body, headers=headers)
    assert status == 200 and b"data:image/jpeg;base64," in page and b"grey.jpg" in page
    assert b"Authorization" not in page  # no token here, none in its curl example
    assert b"shown at" not in page
    # A picture wider than a screen is shown at a screen's size, its boxes where they belong, the
    # JSON in its own pixels (a phone's photo is wider still, but over this server's 1 Mpx limit).
    photo = cv2.resize(red_square_scene(), (2400, 360), interpolation=cv2.INTER_NEAREST)
    body, headers = multipart("image", "photo.jpg", cv2.imencode(".jpg", photo)[1].tobytes())
    page = get(server.port, "/upload", method="POST", body=body, headers=headers)[2].decode()
    shown = cv2.imdecode(np.frombuffer(base64.b64decode(re.search(r"base64,([^\"]+)", page).group(1)), np.uint8),
                         cv2.IMREAD_COLOR)
    assert shown.shape == (288, 1920, 3) and "2400×360\n     (shown at 1920×288;" in page
    record = json.loads(html.unescape(re.search(r"<pre>(.*)</pre>", page, re.S).group(1)))
    boxes = np.array([d["box"] for d in record["detections"]])
    x1, x2 = boxes[:, 0].min(), boxes[:, 2].max()
    assert 750 <= (x1 + x2) / 2 <= 1350  # the square, in the photo's pixels
    plain = cv2.resize(photo, (1920, 288), interpolation=cv2.INTER_AREA)
    drawn_columns = np.nonzero((np.abs(shown.astype(int) - plain).sum(axis=2) > 150).any(axis=0))[0]
    assert abs(drawn_columns.min() - x1 * 0.8) < 4 and abs(drawn_columns.max() - x2 * 0.8) < 4  # boxes scaled too


def test_viewer_limit(server):
    # An earlier test's viewer is released up to ~2 s after it closes: were it still counted,
    # one of these twelve would be refused and the thirteenth let in.
    assert wait_for_viewers(server, 0, 5) == 0
    viewers = [Viewer(server.port) for _ in range(12)]
    for viewer in viewers:
        viewer.start()
        viewer.connected.wait(10)
    try:
        assert [viewer.status for viewer in viewers] == [200] * 12
        extra = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        extra.request("GET", "/video_feed")
        response = extra.getresponse()
        body = response.read() if response.status != 200 else b""  # a stream let in would never end
        extra.close()
        assert response.status == 503 and b"--max-viewers" in body
    finally:
        for viewer in viewers:
            viewer.close()


def test_source_that_dies_is_reopened(red_square_model):
    with Server("serve", "--source", "test://?fps=20&die_after=30", "--model", red_square_model) as server:
        seen = []
        deadline = time.time() + 20
        while time.time() < deadline and not (503 in seen and seen[-1] == 200 and seen.index(503) < len(seen) - 1):
            status, body = get_json(server.port, "/healthz")
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.05)
        assert seen[:3] == [200, 503, 200]
        stats = server.stats()
        assert stats["reconnects"] >= 1


def test_a_network_stream_is_followed_and_reopened_when_it_comes_back(red_square_model):
    """Another server's /video_feed as an http:// source: FFmpeg reads a real multipart
    stream over HTTP (detections follow its picture); when that server stops, viewers
    see RECONNECTING and /healthz 503, and once it is back on its port, frames flow again.
    The URL's password and token open the stream but are shown nowhere: not in /api/stats,
    the status banner's error or the log."""
    upstream = Server("serve", "--source", "test://?fps=15", "--model", red_square_model, STREAMDETECT_TOKEN="s3cret")
    with upstream:
        url = "http://viewer:pa55@127.0.0.1:{}/video_feed?token=s3cret&fps=15".format(upstream.port)
        with Server("serve", "--source", url, "--model", red_square_model) as server:
            assert wait_until(lambda: get_json(server.port, "/api/detections")[1]["detections"], 10)
            shown = "http://viewer:***@127.0.0.1:{}/video_feed?token=***&fps=15".format(upstream.port)
            assert server.stats()["source"] == shown
            upstream.stop()
            assert wait_until(lambda: server.stats()["state"] == "reconnecting", 10)
            assert shown in server.stats()["last_error"]
            assert get(server.port, "/healthz")[0] == 503
            assert wait_until(lambda: get_json(server.port, "/api/detections")[1]["status"] == "reconnecting", 2)
            assert "s3cret" not in server.log(last=None) and "pa55" not in server.log(last=None)
            back = Server("serve", "--source", "test://?fps=15", "--model", red_square_model,
                          STREAMDETECT_TOKEN="s3cret")
            back.port = upstream.port
            with back:
                published = server.stats()["frames_published"]
                assert wait_until(lambda: server.stats()["frames_published"] > published + 10, 20)
                assert get(server.port, "/healthz")[0] == 200 and server.stats()["reconnects"] >= 1


def test_sigterm_stops_the_development_server_as_ctrl_c_does(red_square_model):
    """systemctl stop, docker stop and kill send SIGTERM: the server closes its viewers and stops
    the pipeline in order, exit status 0, rather than dying of the signal mid-frame."""
    with Server("serve", "--source", "test://", "--model", red_square_model) as server:
        viewer = Viewer(server.port)
        viewer.start()
        assert viewer.connected.wait(10) and wait_until(lambda: viewer.frames > 0, 10)
        server.stop()
        assert server.process.returncode == 0, server.log()
        assert "INFO streamdetect: stopped" in server.log()
        viewer.join(10)
        assert not viewer.is_alive() and viewer.error is None


def test_at_sigterm_a_viewer_slow_to_read_still_gets_the_end_of_its_stream(red_square_model):
    """The server exits once each viewer has been sent the end of its stream (within 2 s), not
    in the middle of a write to one whose reading lags: it would see a cut stream."""
    with Server("serve", "--source", "test://", "--model", red_square_model) as server:
        sock = stream_request(server.port, "/video_feed", 4096)
        time.sleep(1.0)  # the server's writes to it now wait for it to read
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        time.sleep(0.5)
        received = []
        sock.settimeout(10)
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            received.append(chunk)
        sock.close()
        stopping.join()
        assert server.process.returncode == 0
        head, _, body = b"".join(received).partition(b"\r\n\r\n")
        last_picture = b"\xff\xd9\r\n--frame\r\n"  # a whole JPEG, then its boundary
        if b"transfer-encoding: chunked" in head.lower():
            assert body.endswith(last_picture + b"\r\n0\r\n\r\n")  # and the last chunk
        else:  # HTTP/1.0 (Werkzeug 2.0, Python 3.6's): the stream ends where the connection does
            assert body.endswith(last_picture)


def test_a_source_whose_read_never_returns_ends_the_server_for_a_supervisor_to_restart(red_square_model):
    with Server("serve", "--source", "test://?hang_after=20", "--exit-on-hang", "1",
                "--model", red_square_model) as server:
        server.process.wait(20)  # stalled after 5 s (Camera.STALL_SECONDS), then at once
        assert server.process.returncode == 3
        log = server.log(last=None)
        assert re.search(r"ERROR streamdetect: no frame from test://\?hang_after=20 for [5-9] s: a driver call "
                         r"that does not return holds the device", log)
        assert "exiting (status 3) for a new one (--exit-on-hang 0 keeps waiting instead)" in log
        assert "Traceback" not in log


def test_a_snapshot_of_a_paused_pipeline_is_taken_after_waking_it(red_square_model):
    """--idle-stop paused the pipeline: /snapshot.jpg and /api/detections wake it and answer
    with its first frame captured since - not the picture from before the pause, nor a frame
    captured just before it and still on its way (in-process, with inference slowed to 0.3 s
    by a stand-in, so that frames are on their way when the pause begins)."""
    settings = build_parser().parse_args(["serve", "--source", "test://", "--model", red_square_model,
                                                     "--idle-stop", "0.5"])
    app = create_app(settings, start=True)
    camera = app.extensions["streamdetect"].get()
    run = camera.detector.run

    def slow_run(blob):
        time.sleep(0.3)
        return run(blob)
    camera.detector.run = slow_run
    client = app.test_client()
    try:
        for path in ("/snapshot.jpg", "/api/detections") * 2:
            assert wait_until(lambda: camera.stats()["state"] == "idle", 10)
            asked_at = time.time()
            response = client.get(path)
            if path == "/snapshot.jpg":
                captured_at = float(response.headers["X-Captured-At"])
            else:
                captured_at = response.get_json()["captured_at"]
            assert response.status_code == 200 and captured_at > asked_at, path
    finally:
        app.extensions["streamdetect"].stop()


def test_while_the_pipeline_starts_requests_are_told_what_it_is_doing(red_square_model, monkeypatch, caplog):
    """A TensorRT engine takes minutes to build on a Nano (stood in for here: no GPU): meanwhile
    a 503 says what the start last logged, not only that it is starting; after a failure, why."""
    caplog.set_level(logging.INFO, logger="streamdetect")  # the server's own level
    building, fail = threading.Event(), threading.Event()

    def building_an_engine(settings):
        logging.getLogger("streamdetect.engine").info("building a TensorRT fp16 engine from %s; this takes "
                                                      "minutes on a Jetson Nano", settings.model)
        building.set()
        fail.wait(10)
        raise ModelError("the GPU is out of memory")
    monkeypatch.setattr(lazy_camera, "detector_from_args", building_an_engine)
    settings = build_parser().parse_args(["serve", "--source", "test://", "--model", red_square_model])
    client = create_app(settings).test_client()
    first = client.get("/api/stats")
    assert first.status_code == 503 and first.get_json()["error"].startswith("starting: ")
    assert building.wait(10)
    logging.getLogger("streamdetect").info("a line of another thread is not what the start does")
    building_line = "starting: building a TensorRT fp16 engine from {}; this takes minutes on a Jetson Nano"
    assert client.get("/api/stats").get_json() == {"error": building_line.format(red_square_model)}
    assert client.get("/healthz").get_json()["status"] == "starting"
    fail.set()
    assert wait_until(lambda: client.get("/healthz").get_json()["status"] == "down", 10)
    assert client.get("/api/stats").get_json() == {"error": "pipeline cannot start: the GPU is out of memory"}


def test_a_frozen_viewer_is_let_go_after_the_client_timeout(red_square_model):
    """Without a time-out, the development server's write to a client that takes nothing
    blocks for good, holding a thread and a viewer's place (--max-viewers)."""
    with Server("serve", "--source", "test://?fps={}".format(FPS), "--model", red_square_model,
                "--client-timeout", "2") as server:
        frozen = frozen_viewer(server.port)
        try:
            assert wait_for_viewers(server, 1, 5) == 1
            assert wait_for_viewers(server, 0, 15) == 0
            [other] = watch(server.port, 1, 2)
            assert other.error is None and other.rate() > FPS * 0.5
        finally:
            frozen.close()


def test_uploads_beyond_the_ones_at_once_wait_their_turn_then_get_503(red_square_model, monkeypatch):
    """In-process, with the detector held by a stand-in until told (a real one answers too
    fast to hold uploads at once): two uploads are handled at a time; another waits for a
    place, and is refused with 503 if none frees in time, answered if one does."""
    monkeypatch.setattr(uploads, "UPLOAD_WAIT_SECONDS", 1.0)
    settings = build_parser().parse_args(["serve", "--source", "test://", "--model", red_square_model])
    app = create_app(settings, start=True)
    camera = app.extensions["streamdetect"].get()
    detect_image, go_on, inside = camera.detect_image, threading.Event(), []

    def held_detect_image(frame, **options):
        inside.append(1)
        go_on.wait(10)
        return detect_image(frame, **options)
    camera.detect_image = held_detect_image
    jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()
    answers = {}

    def upload(name):
        response = app.test_client().post("/api/detect", data=jpeg)
        answers[name] = (response.status_code, response.get_json())
    try:
        first_two = [threading.Thread(target=upload, args=(name,)) for name in ("first", "second")]
        for thread in first_two:
            thread.start()
        assert wait_until(lambda: len(inside) == 2, 5)
        upload("third")
        assert answers["third"] == (503, {"error": "the server is busy with 2 other uploads; try again in a moment"})
        fourth = threading.Thread(target=upload, args=("fourth",))
        fourth.start()
        time.sleep(0.3)
        assert len(inside) == 2  # the fourth is waiting for a place
        go_on.set()  # places free within its wait
        for thread in first_two + [fourth]:
            thread.join(10)
        assert answers["first"][0] == answers["second"][0] == 200 and len(inside) == 3
        assert answers["fourth"][0] == 200 and answers["fourth"][1]["detections"][0]["label"] == "aeroplane"
    finally:
        go_on.set()
        app.extensions["streamdetect"].stop()


def test_token_protects_everything_but_healthz(red_square_model):
    with Server("serve", "--source", "test://", "--model", red_square_model, STREAMDETECT_TOKEN="s3cret") as server:
        assert get(server.port, "/api/stats")[0] == 401
        assert get(server.port, "/snapshot.jpg?token=wrong")[0] == 401
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/api/stats", headers={"Authorization": "Bearer s3cret"})[0] == 200
        status, _, page = get(server.port, "/?token=s3cret")
        assert status == 200 and b"/video_feed?token=s3cret" in page
        status, _, page = get(server.port, "/upload?token=s3cret")  # its curl example sends a token too
        assert status == 200 and b'-H "Authorization: Bearer TOKEN"' in page
        assert get(server.port, "/api")[0] == 401
        status, _, page = get(server.port, "/api?token=s3cret")  # its links pass the token on
        assert status == 200 and b'<a href="/api/stats?token=s3cret">' in page and b"Bearer TOKEN" in page
        [viewer] = watch(server.port, 1, 1, path="/video_feed?token=s3cret")
        assert viewer.status == 200 and viewer.frames > 0


def test_a_browser_asks_for_the_token_in_its_login_prompt(red_square_model):
    """A 401 challenges for Basic, so that a browser asks for the token (as the password, under
    any user name) and then sends it with every request of the page, none in a URL."""
    from browser import chromium_page
    with Server("serve", "--source", "test://", "--model", red_square_model, STREAMDETECT_TOKEN="s3cret") as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/")
        challenges = connection.getresponse().msg.get_all("WWW-Authenticate")
        connection.close()
        assert challenges == ['Basic realm="streamdetect", charset="UTF-8"', 'Bearer realm="streamdetect"']
        assert get(server.port, "/api/stats", headers=basic_auth("anyone", "s3cret"))[0] == 200
        assert get(server.port, "/api/stats", headers=basic_auth("s3cret", "wrong"))[0] == 401
        with chromium_page(http_credentials={"username": "viewer", "password": "s3cret"}) as page:
            page.goto("http://127.0.0.1:{}/".format(server.port))
            page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
            page.wait_for_function("document.getElementById('fps').textContent !== '…'", timeout=10000)
            assert get_json(server.port, "/api/stats", headers=basic_auth("", "s3cret"))[1]["viewers"] == 1
            assert "token=" not in page.evaluate("document.getElementById('stream').src")


class Dashboard(http.server.BaseHTTPRequestHandler):
    """A page of another origin, a dashboard that calls the server's API."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><body>dashboard</body></html>")

    def log_message(self, *args):
        pass


CROSS_ORIGIN_CALLS = """async api => {
    const answers = {};
    const stats = await fetch(api + "/api/stats", {headers: {Authorization: "Bearer s3cret"}});
    answers.stats = [stats.status, (await stats.json()).state];
    const snapshot = await fetch(api + "/snapshot.jpg", {headers: {Authorization: "Bearer s3cret"}});
    answers.frame = snapshot.headers.get("X-Frame-Seq") !== null;
    const picture = await (await fetch(api + "/snapshot.jpg?token=s3cret")).blob();
    const detect = await fetch(api + "/api/detect", {method: "POST", body: picture,
                                                      headers: {Authorization: "Bearer s3cret"}});
    answers.detect = [detect.status, "detections" in await detect.json()];
    answers.event = await new Promise(done => {
        const events = new EventSource(api + "/api/events?token=s3cret");
        events.onmessage = message => { events.close(); done("detections" in JSON.parse(message.data)); };
        events.onerror = () => { events.close(); done("error"); };
    });
    return answers;
}"""


def test_pages_of_the_origins_allowed_may_call_the_api(red_square_model):
    """--cors-origins: a dashboard of another origin reads the API from a browser, with the
    token in its Authorization header (a preflighted request); other origins' pages cannot."""
    from browser import chromium_page
    with http_server(Dashboard) as (dashboard, _):
        allowed = dashboard  # http://127.0.0.1:PORT; http://localhost:PORT is another origin
        with Server("serve", "--source", "test://", "--model", red_square_model, "--cors-origins", allowed + "/",
                    STREAMDETECT_TOKEN="s3cret") as server, chromium_page() as page:
            api = "http://127.0.0.1:{}".format(server.port)
            page.goto(allowed + "/")
            assert page.evaluate(CROSS_ORIGIN_CALLS, api) == {
                "stats": [200, "streaming"], "frame": True, "detect": [200, True], "event": True}
            page.goto(allowed.replace("127.0.0.1", "localhost") + "/")
            refused = page.evaluate("api => fetch(api + '/api/stats', {headers: {Authorization: 'Bearer s3cret'}})"
                                    ".then(() => 'read', error => error.name)", api)
            assert refused == "TypeError"  # the browser's "Failed to fetch"
            status, headers, _ = get(server.port, "/api/stats", headers={"Origin": allowed,
                                                                         "Authorization": "Bearer wrong"})
            assert status == 401 and headers["Access-Control-Allow-Origin"] == allowed  # the page can read why


def test_chromium_shows_the_stream(server):
    from browser import chromium_page
    with chromium_page() as page:
        logged_before = len(server.log(last=None))
        page.goto("http://127.0.0.1:{}/".format(server.port))
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        assert page.evaluate("document.getElementById('stream').naturalWidth") == 640
        page.wait_for_function("document.getElementById('fps').textContent !== '…'", timeout=10000)
        assert float(page.inner_text("#fps")) > 0
        in_flight = get_json(server.port, "/api/stats")[1]["frames_in_flight"]
        shown = page.inner_text("#inference")
        assert shown.endswith(" ms" if in_flight == 1 else " ms · {} frames at once".format(in_flight)), shown
        # nothing the page or the browser asks for is missing (each 404 would be a line in the log):
        # the browser's icon request, a /favicon.ico without the page's own
        assert " 404 " not in server.log(last=None)[logged_before:]


def test_a_page_says_why_its_source_gives_no_frames(red_square_model):
    from browser import chromium_page
    unreachable = "rtsp://127.0.0.1:{}/camera".format(free_port())
    with Server("serve", "--source", unreachable, "--model", red_square_model, healthy=False) as server, \
            chromium_page() as page:
        page.goto("http://127.0.0.1:{}/".format(server.port))
        page.wait_for_function("!document.getElementById('error').hidden", timeout=10000)
        assert page.inner_text("#error") == "cannot open {}: cannot reach it: Connection refused".format(unreachable)
        assert page.inner_text("#state") == "reconnecting"
        assert page.inner_text("#inference") == "–"  # nothing inferred yet: not "0.0 ms"


def test_a_page_refused_a_place_to_watch_says_why_and_streams_once_one_is_free(red_square_model):
    """A stream refused (--max-viewers reached) is a broken image in the page, which an image
    cannot tell apart from an outage: the page says the places are taken, and its retry
    streams as soon as one is free."""
    from browser import chromium_page
    with Server("serve", "--source", "test://", "--model", red_square_model, "--max-viewers", "1") as server, \
            chromium_page() as page:
        first = Viewer(server.port)
        first.start()
        assert wait_for_viewers(server, 1, 5) == 1
        assert get_json(server.port, "/api/stats")[1]["max_viewers"] == 1
        page.goto("http://127.0.0.1:{}/".format(server.port))
        page.wait_for_function("!document.getElementById('error').hidden", timeout=10000)
        assert page.inner_text("#error") == ("no place to watch is free (--max-viewers 1); "
                                             "this page tries again every 2 s")
        first.close()
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        page.wait_for_function("document.getElementById('error').hidden", timeout=5000)


def test_the_upload_form_refuses_a_picture_over_the_limit_before_sending_it(server):
    from browser import chromium_page
    with chromium_page() as page:
        page.goto("http://127.0.0.1:{}/upload".format(server.port))
        logged_before = len(server.log(last=None))
        page.set_input_files("input[name=image]", files=[{"name": "photo.jpg", "mimeType": "image/jpeg",
                                                          "buffer": np.random.bytes(1200000)}])  # over 1 MB
        assert page.evaluate("document.querySelector('input[name=image]').validationMessage") == (
            "upload is larger than 1 MB (--max-upload-mb)")
        page.click("button[type=submit]")
        time.sleep(1)
        assert "POST /upload" not in server.log(last=None)[logged_before:]  # nothing was sent
        page.set_input_files("input[name=image]", files=[{"name": "black.png", "mimeType": "image/png",
                                                          "buffer": png_bytes(120, 100)}])
        page.click("button[type=submit]")
        page.wait_for_selector("img.result")


def test_a_page_shown_again_from_history_streams_under_a_name_of_its_own(server):
    """The browser kept the page in its cache: a duplicated tab (or one gone back to) reused
    the first's viewer name, and while both streamed, the server's "still streaming to you"
    answered for either, so a tab whose stream was cut froze unnoticed. An upload's result is
    kept: going back to it shows it again, not a form to send once more."""
    from browser import chromium_page
    with chromium_page() as page:
        page.goto("http://127.0.0.1:{}/".format(server.port))
        first = page.get_attribute("#stream", "src")
        page.goto("http://127.0.0.1:{}/upload".format(server.port))
        page.go_back()
        assert "viewer=" in first and page.get_attribute("#stream", "src") != first
        page.go_forward()
        page.set_input_files("input[name=image]", files=[{"name": "black.png", "mimeType": "image/png",
                                                          "buffer": png_bytes(120, 100)}])
        page.click("button[type=submit]")
        page.wait_for_selector("img.result")
        page.goto("http://127.0.0.1:{}/".format(server.port))
        page.go_back()
        assert page.query_selector("img.result") is not None


SET_PAGE_HIDDEN = """hidden => {
    Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
    Object.defineProperty(document, "visibilityState", {value: hidden ? "hidden" : "visible", configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_hidden_page_lets_the_stream_go(red_square_model):
    """A page in a background tab gives up its stream (bandwidth, a viewer's place) and its
    polls, so that --idle-stop pauses the detector; shown again, it streams again. Headless
    Chromium never hides a page, so the test sets what a browser sets when it does:
    document.hidden and the visibilitychange event."""
    from browser import chromium_page
    with Server("serve", "--source", "test://", "--model", red_square_model, "--idle-stop", "2") as server, \
            chromium_page() as page:
        page.goto("http://127.0.0.1:{}/".format(server.port))
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        assert wait_for_viewers(server, 1, 5) == 1
        page.evaluate(SET_PAGE_HIDDEN, True)
        assert wait_for_viewers(server, 0, 10) == 0
        assert wait_until(lambda: server.stats()["state"] == "idle", 10)
        time.sleep(3)  # the page's polls and the image's error retry (2 s) leave it idle
        assert server.stats()["state"] == "idle" and server.stats()["viewers"] == 0
        page.evaluate(SET_PAGE_HIDDEN, False)
        assert wait_for_viewers(server, 1, 10) == 1
        assert wait_until(lambda: server.stats()["state"] == "streaming", 10)
        page.wait_for_function("document.getElementById('state').textContent === 'streaming'", timeout=10000)


def test_a_page_opened_in_a_background_tab_streams_once_shown(server):
    from browser import chromium_page
    assert wait_for_viewers(server, 0, 10) == 0
    with chromium_page() as page:
        page.add_init_script('Object.defineProperty(document, "hidden", {value: true, configurable: true});')
        page.goto("http://127.0.0.1:{}/".format(server.port))
        assert wait_for_viewers(server, 0, 10) == 0
        time.sleep(2)
        assert server.stats()["viewers"] == 0
        page.evaluate(SET_PAGE_HIDDEN, False)
        assert wait_for_viewers(server, 1, 10) == 1
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)


def test_a_viewer_on_a_slow_link_sees_new_frames_not_a_growing_queue(server):
    """At 2 Mbit/s a viewer gets fewer frames, each a fresh one: not a queue of old ones that
    grows seconds behind the camera (4 s after 8 s, 11 s after 20, while the kernel's send
    buffer was left to grow)."""
    ages = slow_viewer_latencies(server.port, 250000, 8)
    late = [age for at, age in ages if at > 5]
    assert len(late) > 10 and max(late) < 1.5, ages[-5:]


def test_stats_say_whether_a_named_viewer_is_streamed_to(server):
    """What the page asks to find its stream cut: true while /video_feed?viewer=NAME is open."""
    assert "viewer_connected" not in get_json(server.port, "/api/stats")[1]
    assert get_json(server.port, "/api/stats?viewer=page-1")[1]["viewer_connected"] is False
    viewer = Viewer(server.port, "/video_feed?viewer=page-1")
    viewer.start()
    try:
        assert wait_until(lambda: viewer.frames, 10)
        assert get_json(server.port, "/api/stats?viewer=page-1")[1]["viewer_connected"] is True
        assert get_json(server.port, "/api/stats?viewer=page-2")[1]["viewer_connected"] is False
    finally:
        viewer.close()
    assert wait_until(lambda: not get_json(server.port, "/api/stats?viewer=page-1")[1]["viewer_connected"], 5)
    for path in ("/api/stats?viewer=a%20b", "/video_feed?viewer=" + "x" * 65):
        status, answer = get_json(server.port, path)
        assert status == 400 and answer["error"].endswith("a viewer's name is 1 to 64 letters, digits, - or _")


def test_page_reopens_a_stream_cut_while_the_server_runs(server):
    """A stream cut while the server goes on (a laptop that slept past --client-timeout, a
    phone that changed networks) freezes the picture without an error event, and the stats
    still come; the page sees that the server no longer streams to it and opens it again.
    Its script comes after the first picture, whose load event is then unheard (Chromium fires
    one, at the first picture, and none after while the stream goes on)."""
    from browser import chromium_page
    with StreamCuttingProxy(server.port, script_delay=1.0) as proxy, chromium_page() as page:
        page.goto(proxy.url + "/")
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        assert wait_until(lambda: proxy.streams_opened == 1, 5)
        time.sleep(2.5)  # the page has its script, and has polled the stats since
        proxy.cut_streams()
        assert wait_until(lambda: proxy.streams_opened == 2, 10), "the page left its picture frozen"
        time.sleep(3)
        assert proxy.streams_opened == 2, "the page opened its stream again while it was streaming"


def test_page_reopens_the_stream_after_a_server_restart(red_square_model):
    from browser import chromium_page
    command = ("serve", "--source", "test://", "--model", red_square_model)
    first = Server(*command)
    with chromium_page() as page:
        with first:
            page.goto("http://127.0.0.1:{}/".format(first.port))
            page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
            assert wait_for_viewers(first, 1, 5) == 1
        second = Server(*command)
        second.port = first.port  # the same address, as after a restart
        with second:
            assert wait_for_viewers(second, 1, 15) == 1  # the page opened the stream again


def test_a_model_whose_outputs_are_out_of_range_is_told_once_and_draws_no_absurd_box(tmp_path):
    """An FP16 engine that overflowed, a broken export: every box as wide as exp(300) cells. The
    log says so once, /api/stats and compare say so, and no box is drawn or reported."""
    grid = np.zeros((125, 13, 13), np.float32)
    grid[4::25] = -20.0
    grid[0:6] = np.array([0.0, 0.0, 300.0, 300.0, 5.0, 5.0], np.float32)[:, None, None]  # anchor 0, class 0
    model = onnx_models.constant_grid(tmp_path / "overflowing.onnx", grid)
    with Server("serve", "--source", "test://?fps=20", "--model", model) as server:
        assert wait_until(lambda: get_json(server.port, "/api/stats")[1]["frames_published"] > 20, 10)
        stats = get_json(server.port, "/api/stats")[1]
        assert stats["model_outputs"].startswith("the model's outputs are out of range (boxes over 4 images a side)")
        assert get_json(server.port, "/api/detections")[1]["detections"] == []
        log = server.log()
    assert log.count("outputs are out of range") == 1 and "RuntimeWarning" not in log
    result = run_app("compare", "--model", model, "--backends", "onnxruntime", "--frames", "1", "--repeat", "1",
                     "--json")  # (not OpenCV: JetPack's 4.1.1 cannot fuse the model's constant Add)
    rows = json.loads(result.stdout)
    assert result.returncode == 0 and [row["model_outputs"][:36] for row in rows] == [
        "the model's outputs are out of range"]
