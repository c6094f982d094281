"""The Camera pipeline in-process: sources, encoder choice, status frames, idle stop."""
import hashlib
import http.server
import itertools
import logging
import os
import re
import socketserver
import tempfile
import threading
import time
import urllib.parse

import cv2
import numpy as np
import pytest

from broadcast import Broadcast, Frame, MovingRate
from camera import Camera
from drawing import encode_opencv, fastest_encoder, jpeg_encoders
from errors import SourceError
from scheduler import STAGGER
from sources import open_source
from sources.base import without_secrets
from sources.folder import FolderSource
from sources.opencv_source import csi_pipeline
from sources.synthetic import SyntheticSource
from sources.v4l2 import stable_camera_name
from streaming import basic_auth, free_port, http_server, red_square_scene, wait_until, write_clip
from watchdog import Watchdog
from yolo_tool import Detector


def read(source):
    """The next frame as a picture (None at the end), as the pipeline reads a frame it decodes."""
    return source.retrieve() if source.grab() else None


def count_calls(owner, name):
    """Wrap method `name` of `owner`; the returned list grows by one per call."""
    method, calls = getattr(owner, name), []

    def counted(*args):
        calls.append(1)
        return method(*args)
    setattr(owner, name, counted)
    return calls


def test_fastest_encoder_is_measured_not_assumed():
    image = SyntheticSource("test://").scene(1000.0)

    def slow(img, quality):
        time.sleep(0.002)
        return b"slow"
    name, encode, timings = fastest_encoder({"slow": slow, **jpeg_encoders()}, image, 80)
    assert name != "slow" and timings["slow"] > min(timings.values())
    assert cv2.imdecode(np.frombuffer(encode(image, 80), np.uint8), cv2.IMREAD_COLOR).shape == image.shape


def test_every_encoder_makes_a_valid_jpeg():
    image = SyntheticSource("test://", width=320, height=240).scene(1000.0)
    for name, encode in jpeg_encoders().items():
        decoded = cv2.imdecode(np.frombuffer(encode(image, 85), np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == image.shape, name
        assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 4, name


def test_red_square_model_finds_the_test_square(red_square_model):
    detector = Detector(red_square_model, backend="onnxruntime")
    source = SyntheticSource("test://")
    for t in (1000.0, 1003.3, 1007.9):
        frame = source.scene(t)
        x1, y1, x2, y2 = source.square_box(t)
        detections, _ = detector.detect(frame)
        best = max(detections, key=lambda d: d.score)
        cx, cy = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
        assert x1 <= cx <= x2 and y1 <= cy <= y2


def test_the_test_square_stays_whole_when_the_disc_crosses_it(red_square_model):
    """At this instant the disc sits on the square's middle: drawn over it, it hid the square
    from the red-square model (one frame in 6,000: a test reading 10 events failed in CI)."""
    source, crossing = SyntheticSource("test://"), 1700000050.05
    x1, y1, x2, y2 = source.square_box(crossing)
    frame = source.scene(crossing)
    assert (frame[y1:y2, x1:x2] == (0, 0, 255)).all(axis=2).all()
    detections, _ = Detector(red_square_model, backend="onnxruntime").detect(frame)
    assert {d.label for d in detections} == {"aeroplane"}


def test_unknown_or_undecodable_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="^source 'foo://bar' is not a camera"):
        open_source("foo://bar")
    with pytest.raises(SourceError, match="^source '/no/such/video.mp4': no such file or folder$"):
        open_source("/no/such/video.mp4")
    with pytest.raises(SourceError, match="^source 'clip.mp4': no such file or folder in {} "
                                          r"\(the working folder\)$".format(re.escape(os.getcwd()))):
        open_source("clip.mp4")
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="cannot open .*clip.mp4; is it a video OpenCV can decode"):
        open_source(str(garbage))


def test_a_source_is_shown_without_its_secrets():
    """Viewers see the source in /api/stats and in status banners: a camera's password, and
    query values named like one, are replaced; everything else is shown as given."""
    assert without_secrets("rtsp://admin:s3cret@10.0.0.2:554/live?channel=1") == \
        "rtsp://admin:***@10.0.0.2:554/live?channel=1"
    assert without_secrets("http://cam/video.cgi?user=admin&pwd=s3cret&apikey=k") == \
        "http://cam/video.cgi?user=admin&pwd=***&apikey=***"
    for plain in ("rtsp://admin@cam/live", "test://?fps=60", "/dev/video0", "0", "csi://0", "/videos/a:b@c.mp4"):
        assert without_secrets(plain) == plain
    source = open_source("rtsp://admin:s3cret@127.0.0.1:1/live")
    assert source.uri == "rtsp://admin:***@127.0.0.1:1/live" and source.target == "rtsp://admin:s3cret@127.0.0.1:1/live"
    with pytest.raises(SourceError, match=r"^cannot open rtsp://admin:\*\*\*@127"):
        source.open()


class IPCamera(http.server.BaseHTTPRequestHandler):
    """An IP camera's web server: snapshot.jpg answers a picture (counted in the server's
    `snapshots`), video.mjpg an MJPEG stream of 40 frames at 20 FPS, index.html a page,
    anything else 404; under /basic/ and /digest/ the camera wants that login, admin:s3cret."""

    def do_GET(self):
        if self.path.startswith("/basic/") and \
                self.headers.get("Authorization") != basic_auth("admin", "s3cret")["Authorization"]:
            return self.wants_login('Basic realm="camera"')
        if self.path.startswith("/digest/") and not digest_login_is_right(self.headers.get("Authorization"), "GET"):
            return self.wants_login('Digest realm="camera", nonce="{}", qop="auth", algorithm=MD5'.format(NONCE))
        name = self.path.rsplit("/", 1)[-1]
        jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()
        if name == "snapshot.jpg":
            self.server.snapshots += 1
            self.answer("image/jpeg", jpeg)
        elif name == "index.html":
            self.answer("text/html", b"<html><body><img src='video.mjpg'></body></html>")
        elif name == "video.mjpg":
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " +
                                     str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that only looked at the headers
        else:
            self.send_error(404)

    def answer(self, content_type, body):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def wants_login(self, challenge):
        self.send_response(401)
        self.send_header("WWW-Authenticate", challenge)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


NONCE = "dcd98b7102dd2f0e8b11d0f600bfb0c093"


def digest_login_is_right(header, method):
    """Whether an Authorization header is RFC 7616's answer (MD5, with or without qop=auth) to
    our NONCE for admin:s3cret, as a camera checks it."""
    if not (header or "").startswith("Digest "):
        return False
    fields = {name: quoted or plain for name, quoted, plain in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', header)}

    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()
    request = md5(method + ":" + fields.get("uri", ""))
    parts = [fields.get("nc", ""), fields.get("cnonce", ""), "auth"] if fields.get("qop") == "auth" else []
    expected = md5(":".join([md5("admin:camera:s3cret"), NONCE] + parts + [request]))
    return fields.get("username") == "admin" and fields.get("response") == expected


@pytest.fixture
def ip_camera():
    with http_server(IPCamera) as (url, server):
        server.snapshots = 0
        yield url, server


def test_a_cameras_snapshot_url_is_asked_again_for_each_frame(ip_camera, red_square_model):
    """Cheap IP cameras offer a picture per request rather than a stream: each frame is one
    request, at most --fps a second; an MJPEG stream read as once would end after one frame."""
    url, server = ip_camera
    source = open_source(url + "/snapshot.jpg", fps=10)
    source.open()
    assert source.mode() == "snapshot URL (image/jpeg), asked at most 10 times a second"
    started = time.monotonic()
    frames = [read(source) for _ in range(5)]
    assert all(np.abs(frame.astype(int) - red_square_scene()).mean() < 4 for frame in frames)
    assert server.snapshots == 5 and time.monotonic() - started >= 0.35  # the open's answer is the first
    camera = Camera(open_source(url + "/snapshot.jpg", fps=20), Detector(red_square_model)).start()
    try:
        assert wait_until(lambda: camera.stats()["frames_published"] >= 20, 20)
        stats = camera.stats()
        assert stats["state"] == "streaming" and stats["reconnects"] == 0
        assert [d.label for d in camera.latest_frame().detections][:1] == ["aeroplane"]
    finally:
        camera.stop()


def test_a_cameras_mjpeg_stream_and_logins(ip_camera):
    url, _ = ip_camera
    host = url[len("http://"):]
    for uri in (url + "/video.mjpg", "http://admin:s3cret@{}/basic/video.mjpg".format(host)):
        source = open_source(uri)
        source.open()
        try:
            mode = source.mode()  # the codec tag as this OpenCV names it (MJPG, 4.6: mjpe); not FFmpeg's 25 FPS
            assert mode.startswith("320x240 ") and mode.endswith(" stream, at the camera's own rate")
            assert read(source).shape == (240, 320, 3)
        finally:
            source.close()
    for login in ("basic", "digest"):
        source = open_source("http://admin:s3cret@{}/{}/snapshot.jpg".format(host, login))
        source.open()
        assert source.mode().startswith("snapshot URL") and read(source).shape == (240, 320, 3)
        assert source.uri == "http://admin:***@{}/{}/snapshot.jpg".format(host, login)


def test_an_http_source_that_cannot_be_read_says_why(ip_camera):
    url, _ = ip_camera
    host = url[len("http://"):]
    closed = free_port()  # nothing listens there
    for uri, why in (
            (url + "/index.html", "it is a web page (text/html), not the video stream: give the stream's own URL"),
            (url + "/nothing.mjpg", "it answers 404 Not Found"),
            (url + "/digest/snapshot.jpg", "it answers 401 Unauthorized: give the camera's user name and password "
                                           "in the URL, http://USER:PASSWORD@host/..."),
            ("http://admin:wrong@{}/basic/snapshot.jpg".format(host),
             "it answers 401 Unauthorized: the user name or password in the URL is wrong"),
            ("http://127.0.0.1:{}/video.mjpg".format(closed), "cannot reach it: Connection refused")):
        with pytest.raises(SourceError) as error:
            open_source(uri).open()
        assert str(error.value) == "cannot open {}: {}".format(without_secrets(uri), why)


class RTSPCamera(socketserver.StreamRequestHandler):
    """An RTSP camera's answers to DESCRIBE: /stream1 wants the login admin:s3cret by Digest
    (without qop, as cameras ask), /open wants none; anything else is 404. Neither
    gives a stream: an SDP OpenCV cannot play."""

    def handle(self):
        lines = []
        while True:
            line = self.rfile.readline().decode("latin-1").strip()
            if not line:
                break
            lines.append(line)
        method, url, _ = lines[0].split(" ")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        path = urllib.parse.urlsplit(url).path
        if path == "/stream1" and not digest_login_is_right(headers.get("Authorization"), method):
            answer = ['RTSP/1.0 401 Unauthorized', 'WWW-Authenticate: Basic realm="camera"',
                      'WWW-Authenticate: Digest realm="camera", nonce="{}"'.format(NONCE)]
        elif path in ("/stream1", "/open"):
            answer = ["RTSP/1.0 200 OK", "Content-Type: application/sdp", "Content-Length: 0"]
        else:
            answer = ["RTSP/1.0 404 Not Found"]
        self.wfile.write("\r\n".join(answer + ["CSeq: " + headers.get("CSeq", "0"), "", ""]).encode())


def test_an_rtsp_source_that_cannot_be_read_says_why():
    """OpenCV says only that it cannot open an RTSP stream; the camera's answer says why."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), RTSPCamera)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = "127.0.0.1:{}".format(server.server_address[1])
    try:
        for uri, why in (
                ("rtsp://admin:s3cret@{}/stream2", "it answers 404 Not Found"),
                ("rtsp://{}/stream1", "it answers 401 Unauthorized: give the camera's user name and password in "
                                      "the URL, rtsp://USER:PASSWORD@host/..."),
                ("rtsp://admin:wrong@{}/stream1", "it answers 401 Unauthorized: the user name or password in the "
                                                  "URL is wrong"),
                ("rtsp://admin:s3cret@{}/stream1", "its server answers, but OpenCV cannot read the stream"),
                ("rtsp://{}/open", "its server answers, but OpenCV cannot read the stream"),
                ("rtsp://127.0.0.1:{}/stream1".format(free_port()), "cannot reach it: Connection refused")):
            uri = uri.format(host)
            with pytest.raises(SourceError) as error:
                open_source(uri).open()
            assert str(error.value) == "cannot open {}: {}".format(without_secrets(uri), why)
    finally:
        server.shutdown()
        server.server_close()


class CameraWithOneMode(object):
    """Stands in for cv2.VideoCapture on a V4L2 camera (none can exist here) that has
    only 640x480 YUYV at 30 FPS: it accepts any setting and keeps its own, as V4L2 does."""

    MODE = {cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480, cv2.CAP_PROP_FPS: 30.0,
            cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*"YUYV"))}

    def __init__(self, *args):
        self.settings = {}

    def isOpened(self):
        return True

    def set(self, prop, value):
        self.settings[prop] = value
        return True

    def get(self, prop):
        return self.MODE.get(prop, 0.0)

    def release(self):
        pass


def test_a_camera_without_the_mode_asked_says_which_it_gives(monkeypatch, caplog):
    monkeypatch.setattr(cv2, "VideoCapture", CameraWithOneMode)
    asked = {(640, 480, 30): "", (1280, 720, 30): "1280x720 at 30 FPS", (640, 480, 60): "640x480 at 60 FPS"}
    for (width, height, fps), differs in asked.items():
        caplog.clear()
        source = open_source("/dev/video0", width=width, height=height, fps=fps)
        source.open()
        assert source.mode() == "640x480 YUYV at 30 FPS"
        warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
        if differs:
            assert warnings == ["/dev/video0 gives 640x480 YUYV at 30 FPS, not the {} asked (--width, --height, "
                                "--fps): it has no such mode; v4l2-ctl --list-formats-ext lists its modes"
                                .format(differs)]
        else:
            assert warnings == []
        assert source.capture.settings[cv2.CAP_PROP_FRAME_WIDTH] == width
        source.close()


def test_a_camera_by_another_dev_name_is_a_v4l2_camera(monkeypatch, tmp_path):
    """udev's names that survive replugging (/dev/v4l/by-id/..., by-path/...) and a udev
    rule's own open as V4L2 cameras, as /dev/videoN does; a video file under /dev (a RAM
    disk's) stays a file."""
    opened = []

    class RecordedCamera(CameraWithOneMode):
        def __init__(self, *args):
            super(RecordedCamera, self).__init__()
            opened.append(args[:2])

    monkeypatch.setattr(cv2, "VideoCapture", RecordedCamera)
    names = ["/dev/v4l/by-id/usb-Acme_Cam_1234-video-index0", "/dev/v4l/by-path/platform-3610000.xhci-usb-0:2:1.0-"
             "video-index0", "/dev/front-camera"]
    for name in names:
        source = open_source(name)
        source.open()
        source.close()
    assert opened == [(name, cv2.CAP_V4L2) for name in names]
    if os.access("/dev/shm", os.W_OK):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
            picture = os.path.join(folder, "a.jpg")
            cv2.imwrite(picture, red_square_scene())
            assert isinstance(open_source(folder), FolderSource) and isinstance(open_source(picture), FolderSource)


def test_auto_names_the_camera_it_finds_as_udev_does(tmp_path):
    """A camera plugged in again while its old /dev/videoN is still held comes back as another:
    auto streams the camera by its /dev/v4l/by-id name (its model and serial), else its
    by-path one (its USB port), so that reconnecting finds it again."""
    dev = tmp_path / "dev"
    (dev / "v4l" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-path").mkdir()
    for device in ("video0", "video1"):
        (dev / device).write_bytes(b"")
    by_id, by_path = dev / "v4l" / "by-id" / "usb-Acme-video-index0", dev / "v4l" / "by-path" / "usb-0:2-index0"
    os.symlink("../../video1", str(dev / "v4l" / "by-id" / "usb-Acme-video-index1"))  # its metadata node
    os.symlink("../../video0", str(by_id))
    os.symlink("../../video0", str(by_path))
    assert stable_camera_name(str(dev / "video0"), str(dev / "v4l")) == str(by_id)
    by_id.unlink()
    assert stable_camera_name(str(dev / "video0"), str(dev / "v4l")) == str(by_path)
    by_path.unlink()
    assert stable_camera_name(str(dev / "video0"), str(dev / "v4l")) == str(dev / "video0")
    assert stable_camera_name("/dev/video0", str(tmp_path / "none")) == "/dev/video0"


def greys(count, step=1, size=(160, 120)):
    """`count` grey pictures, picture i of value i * step: a video's frames that say which they are."""
    return (np.full((size[1], size[0], 3), index * step, np.uint8) for index in range(count))


def test_video_file_source_plays_and_ends(tmp_path):
    path = str(tmp_path / "clip.avi")
    write_clip(path, greys(10, step=20), 50)
    source = open_source(path)
    source.open()
    assert source.mode() == "160x120 MJPG at 50 FPS"
    frames = [read(source) for _ in range(11)]
    source.close()
    assert all(f is not None and f.shape == (120, 160, 3) for f in frames[:10]) and frames[10] is None
    source.open()
    assert source.grab() and source.grab()  # the first frame skipped undecoded
    assert abs(int(source.retrieve()[0, 0, 0]) - 20) <= 3
    source.close()
    looped = open_source(path, loop=True)
    looped.open()
    assert all(read(looped) is not None for _ in range(25))
    looped.close()


def test_image_folder_source_cycles(tmp_path):
    folder = tmp_path / "shots [2024]"  # glob's brackets in the folder's name are the name's own
    folder.mkdir()
    for index in range(2):
        cv2.imwrite(str(folder / "{}.png".format(index)), np.full((40, 50, 3), index * 100, np.uint8))
    (folder / "notes.txt").write_text("skip me")
    source = open_source(str(folder), fps=25)
    source.open()
    values = [int(read(source)[0, 0, 0]) for _ in range(4)]
    assert values == [0, 100, 0, 100]


def test_frames_larger_than_asked_are_shown_scaled_to_fit(tmp_path, red_square_model, caplog):
    """A phone's 4000x3000 photo in a folder, a 4K network camera: frames beyond --width x --height
    are detected, drawn and streamed scaled down to fit, as a USB camera is asked for that size
    (a 4 MB JPEG per frame otherwise, and on a Jetson drawing and encoding dearer than inference);
    the log says so once. test:// keeps the size its URI asks."""
    caplog.set_level(logging.INFO, logger="streamdetect")
    scene = cv2.resize(red_square_scene(), (1280, 960), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "scene.png"), scene)
    detector = Detector(red_square_model, backend="onnxruntime")

    def published(source):
        camera = Camera(source, detector).start()
        try:
            assert wait_until(lambda: camera.stats()["frames_published"] >= 3, 10)
            return camera.latest_frame()
        finally:
            camera.stop()
    frame = published(open_source(str(tmp_path), 640, 480, fps=25))
    assert (frame.width, frame.height) == (640, 480)
    expected, _ = detector.detect(cv2.resize(scene, (640, 480), interpolation=cv2.INTER_AREA))
    assert expected and same_boxes(frame.detections, expected)
    told = [r.getMessage() for r in caplog.records if "scaled down" in r.getMessage()]
    assert told == ["{} gives 1280x960 frames: they are shown scaled down to 640x480, to fit 640x480 (--width, "
                    "--height)".format(tmp_path)]
    fitting = published(open_source(str(tmp_path), 1920, 1080, fps=25))
    assert (fitting.width, fitting.height) == (1280, 960)
    assert published(open_source("test://?width=1280&height=720", 640, 480)).width == 1280
    write_clip(tmp_path / "4k.avi", [scene] * 20, 10)  # a video file, as a network camera's stream
    assert published(open_source(str(tmp_path / "4k.avi"), 640, 480, loop=True)).width == 640


def test_an_image_file_is_a_slide_show_of_one_picture(tmp_path):
    """Not a one-frame video that ends at once (and is then shown marked ENDED)."""
    picture = tmp_path / "dog [1].png"  # glob's brackets in the name are the name's own
    cv2.imwrite(str(picture), np.full((40, 50, 3), 77, np.uint8))
    cv2.imwrite(str(tmp_path / "dog 1.png"), np.full((40, 50, 3), 11, np.uint8))
    source = open_source(str(picture), fps=25)
    source.open()
    assert source.mode() == "1 image at 25 FPS"
    assert [int(read(source)[0, 0, 0]) for _ in range(3)] == [77, 77, 77]
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    with pytest.raises(SourceError, match="broken.jpg is not an image OpenCV can read"):
        open_source(str(tmp_path / "broken.jpg"))
    picture.unlink()  # gone while it plays: the pipeline's reopening names it, not its folder
    assert read(source) is None
    with pytest.raises(SourceError, match=r"^.*dog \[1\]\.png is gone or no longer an image OpenCV can read$"):
        source.open()


def test_image_folder_source_says_once_what_it_leaves_out_and_shows_new_images(tmp_path, caplog):
    def write(name, value, mtime):
        cv2.imwrite(str(tmp_path / name), np.full((40, 50, 3), value, np.uint8))
        os.utime(str(tmp_path / name), (mtime, mtime))
    write("0.png", 0, 1000)
    (tmp_path / "1.jpg").write_bytes(b"not a picture")
    os.utime(str(tmp_path / "1.jpg"), (1000, 1000))
    source = open_source(str(tmp_path), fps=25)
    source.open()
    assert [int(read(source)[0, 0, 0]) for _ in range(3)] == [0, 0, 0]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "leaving out {}: not an image OpenCV can read (tried again once it changes)".format(tmp_path / "1.jpg")]
    write("2.png", 200, 1000)  # added while it plays: in the next round
    assert [int(read(source)[0, 0, 0]) for _ in range(4)] == [0, 200, 0, 200]
    write("1.jpg", 100, 2000)  # mended: tried again
    assert [int(read(source)[0, 0, 0]) for _ in range(3)] == [0, 100, 200]
    for name in ("0.png", "1.jpg", "2.png"):
        (tmp_path / name).unlink()
    assert read(source) is None and read(source) is None  # the round ends; nothing is left
    (tmp_path / "3.jpg").write_bytes(b"not a picture either")
    source.open()
    assert read(source) is None
    with pytest.raises(SourceError, match="has no images or videos OpenCV can read"):  # the pipeline's reopening
        source.open()


def test_a_folder_plays_its_videos_between_its_images(tmp_path, caplog):
    """A folder of clips (a dashcam's, a doorbell's) plays as `detect FOLDER` reads it: each video
    through at its own rate, each image for 1/--fps s, in name order; one OpenCV cannot open is
    said once and left out."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((120, 160, 3), 10, np.uint8))
    write_clip(tmp_path / "b.avi", greys(4, step=50, size=(1280, 960)), 10)
    cv2.imwrite(str(tmp_path / "c.png"), np.full((120, 160, 3), 240, np.uint8))
    (tmp_path / "d.mp4").write_bytes(b"not a video")
    source = open_source(str(tmp_path), fps=25)
    source.open()
    assert source.mode() == "2 images at 25 FPS and 2 videos at their own rate"
    frames, times = [], []
    for _ in range(7):
        frames.append(read(source))
        times.append(time.monotonic())
    assert [int(round(frame[0, 0, 0] / 10.0)) * 10 for frame in frames] == [10, 0, 50, 100, 150, 240, 10]
    assert frames[2].shape == (960, 1280, 3)
    assert times[4] - times[1] > 0.25  # 10 FPS: three intervals of 0.1 s
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "leaving out {}: not a video OpenCV can read (tried again once it changes)".format(tmp_path / "d.mp4")]
    source.close()
    (tmp_path / "a.png").unlink()
    (tmp_path / "c.png").unlink()
    source.open()
    assert source.mode() == "1 video at its own rate"


# --flip's turns as NumPy makes them, to check OpenCV's against.
NUMPY_TURNS = {"counterclockwise": lambda a: np.rot90(a, 1), "clockwise": lambda a: np.rot90(a, -1),
               "rotate-180": lambda a: np.rot90(a, 2), "horizontal": lambda a: a[:, ::-1],
               "vertical": lambda a: a[::-1]}


@pytest.mark.parametrize("flip", sorted(NUMPY_TURNS))
def test_flip_turns_frames_before_detection(tmp_path, red_square_model, flip):
    """The pipeline detects on the turned picture: its published frame has the turned
    size and the same detections as the detector gives for the picture NumPy turned
    (the red square is off-centre, so each turn puts it elsewhere)."""
    scene = red_square_scene()
    cv2.imwrite(str(tmp_path / "scene.png"), scene)
    detector = Detector(red_square_model, backend="onnxruntime")
    turned = np.ascontiguousarray(NUMPY_TURNS[flip](scene))
    expected, _ = detector.detect(turned)
    camera = Camera(open_source(str(tmp_path), flip=flip), detector).start()
    try:
        assert wait_until(lambda: camera.stats()["frames_published"] >= 1, 10)
        frame = camera.latest_frame()
    finally:
        camera.stop()
    assert (frame.height, frame.width) == turned.shape[:2]
    assert expected and same_boxes(frame.detections, expected)
    assert not same_boxes(detector.detect(scene)[0], expected)  # each turn moves the boxes


def same_boxes(detections, others):
    boxes, other_boxes = (np.array(sorted(d.box for d in found)) for found in (detections, others))
    return boxes.shape == other_boxes.shape and np.allclose(boxes, other_boxes, atol=0.5)


def test_csi_camera_turns_in_hardware_with_the_sides_swapped_for_a_quarter_turn():
    assert "nvvidconv flip-method=2 ! video/x-raw, width=1280, height=720," in csi_pipeline(0, 1280, 720, 30, 2)
    assert "nvvidconv flip-method=3 ! video/x-raw, width=720, height=1280," in csi_pipeline(0, 1280, 720, 30, 3)
    assert "nvvidconv flip-method=0 ! video/x-raw, width=1280, height=720," in csi_pipeline(1, 1280, 720, 30)


def test_csi_camera_is_asked_the_rate_given_as_a_fraction():
    assert "width=1280, height=720, framerate=30/1, format=NV12" in csi_pipeline(1, 1280, 720, 30)
    assert "framerate=15/2," in csi_pipeline(0, 640, 480, 7.5)  # not 7/1
    assert "framerate=1/2," in csi_pipeline(0, 640, 480, 0.5)  # not 0/1, which no sensor mode has


def test_idle_stop_pauses_and_a_viewer_resumes(red_square_model):
    detector = Detector(red_square_model, backend="onnxruntime")
    camera = Camera(open_source("test://?fps=30"), detector, idle_stop=0.5).start()
    try:
        assert wait_until(lambda: camera.stats()["state"] == "idle", 5)
        assert camera.last_error == "no viewers for 0.5 s (--idle-stop)"  # a camera plays for no one in particular
        paused_at = camera.stats()["frames_inferred"]
        time.sleep(0.5)
        assert camera.stats()["frames_inferred"] == paused_at and camera.healthy()
        release = camera.join_viewer()
        assert wait_until(lambda: camera.stats()["frames_inferred"] > paused_at + 5, 5)
        release()
        release()  # a second release is harmless
        assert camera.stats()["viewers"] == 0
    finally:
        camera.stop()


class WallClock(object):
    """The time module as camera.py sees it, with a wall clock that can be set (an NTP step,
    `date -s`): only time.time() moves."""

    def __init__(self):
        self.offset = 0.0

    def time(self):
        return time.time() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


def test_a_file_plays_for_its_viewers(tmp_path, red_square_model):
    """A clip does not play out before anyone opens the page: it waits for its first viewer,
    pauses in place under --idle-stop, and plays again for a viewer who joins after its end."""
    path = str(tmp_path / "clip.avi")
    write_clip(path, greys(40), 20)
    camera = Camera(open_source(path), Detector(red_square_model, backend="onnxruntime"), idle_stop=0.3).start()
    try:
        time.sleep(1.0)
        assert camera.stats()["frames_captured"] == 0 and camera.state == "idle" and camera.healthy()
        assert camera.last_error == "waiting for a viewer to play " + path
        release = camera.join_viewer()
        assert wait_until(lambda: camera.stats()["frames_captured"] >= 10, 5)
        release()
        assert wait_until(lambda: camera.state == "idle", 5)
        paused_at = camera.stats()["frames_captured"]
        time.sleep(0.5)
        assert camera.stats()["frames_captured"] == paused_at < 40
        camera.join_viewer()
        assert wait_until(lambda: camera.state == "ended", 5)
        assert camera.stats()["frames_captured"] == 40  # on from its place, not from the start
        time.sleep(0.5)
        assert camera.stats()["frames_captured"] == 40 and camera.latest_frame().status == "ended"
        assert camera.healthy()  # waiting, as when idle: nothing is wrong
        camera.join_viewer()
        assert wait_until(lambda: camera.stats()["frames_captured"] > 40, 5)
        assert wait_until(lambda: camera.state == "ended", 5) and camera.stats()["frames_captured"] == 80
    finally:
        camera.stop()


def test_a_video_whose_frames_are_damaged_is_an_error_not_a_finished_clip(tmp_path, red_square_model):
    """Its header opens, so it passes the start's check, but it gives no frame: before, it was
    reported 'ended', healthy, while no viewer ever saw a picture."""
    path = tmp_path / "clip.avi"
    write_clip(str(path), greys(20), 20)
    data = path.read_bytes()
    header = data.index(b"movi") + 4
    path.write_bytes(data[:header] + bytes(len(data) - header))  # its frames zeroed
    camera = Camera(open_source(str(path)), Detector(red_square_model, backend="onnxruntime")).start()
    try:
        camera.join_viewer()
        assert wait_until(lambda: camera.state == "error", 5), camera.state
        assert camera.last_error == "{} gave no frame: a damaged video, or one OpenCV cannot decode".format(path)
        assert not camera.healthy() and camera.latest_frame().status == "error"
        assert camera.stats()["frames_published"] == 0
    finally:
        camera.stop()


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_wall_clock_set_back_or_ahead_does_not_stop_the_stream(red_square_model, monkeypatch, step):
    """Frames are paced and detectors scheduled on the monotonic clock: with the wall clock
    stepped an hour mid-stream (a Jetson without a clock battery gets its time from the
    network after it boots), frames flow on, two in flight, and the pipeline stays healthy."""
    import camera as camera_module
    clock = WallClock()
    monkeypatch.setattr(camera_module, "time", clock)
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=2)
    camera = Camera(open_source("test://?fps=30"), detector, idle_stop=60).start()
    release = camera.join_viewer()
    try:
        assert wait_until(lambda: camera.counters["frames_published"] > 10, 10)
        clock.offset = step
        published = camera.counters["frames_published"]
        assert wait_until(lambda: camera.counters["frames_published"] > published + 30, 5)
        assert camera.stats()["state"] == "streaming" and camera.stats()["fps"] > 10 and camera.healthy()
        release()
        assert wait_until(lambda: camera.stats()["state"] == "idle", 1) is False  # not idle an hour early
    finally:
        camera.stop()


def test_viewers_get_a_status_frame_when_the_source_dies(red_square_model):
    detector = Detector(red_square_model, backend="onnxruntime")
    camera = Camera(open_source("test://?fps=30&die_after=10"), detector).start()
    try:
        statuses = set()
        seq = 0
        deadline = time.time() + 5
        while time.time() < deadline and "reconnecting" not in statuses:
            frame = camera.wait_frame(seq, 1.0)
            if frame is not None:
                seq = frame.seq
                statuses.add(frame.status)
        assert "reconnecting" in statuses and None in statuses
    finally:
        camera.stop()
    assert camera.latest_frame().status == "stopped"


class HangingSource(SyntheticSource):
    """test:// whose driver hangs, without failing, until `resume` is set: in its read after
    `frames` frames, or with frames None, in its opening."""

    def __init__(self, frames):
        super(HangingSource, self).__init__("test://", fps=30)
        self.frames, self.resume = frames, threading.Event()

    def open(self):
        if self.frames is None:
            self.resume.wait()
        super(HangingSource, self).open()

    def grab(self):
        if self.frames is not None and self.count >= self.frames:
            self.resume.wait()
        return super(HangingSource, self).grab()


def test_a_source_that_hangs_is_marked_stalled_until_frames_come_again(red_square_model, monkeypatch, caplog):
    caplog.set_level("INFO", "streamdetect.camera")
    monkeypatch.setattr(Watchdog, "STALL_SECONDS", 1.0)
    source = HangingSource(frames=10)
    camera = Camera(source, Detector(red_square_model, backend="onnxruntime")).start()
    try:
        assert wait_until(lambda: camera.latest_frame().status == "stalled", 5)
        stats = camera.stats()
        assert stats["state"] == "stalled" and stats["last_error"].startswith("no frame from test:// for ")
        assert not camera.healthy() and "no frame from test:// for 1 s; waiting for it" in caplog.text
        source.resume.set()
        assert wait_until(lambda: camera.latest_frame().status is None, 5)
        assert camera.stats()["state"] == "streaming" and camera.healthy()
        assert "frames from test:// flow again" in caplog.text
    finally:
        source.resume.set()
        camera.stop()


def test_a_source_that_hangs_long_enough_is_told_once_for_a_new_process(red_square_model, monkeypatch):
    monkeypatch.setattr(Watchdog, "STALL_SECONDS", 1.0)
    source = HangingSource(frames=10)
    told = []
    camera = Camera(source, Detector(red_square_model, backend="onnxruntime"), on_hang=told.append,
                    hang_seconds=2.5).start()
    try:
        assert wait_until(lambda: camera.stats()["state"] == "stalled", 5)
        assert told == []  # stalled, not yet hung for long enough
        assert wait_until(lambda: told, 5)
        time.sleep(1.0)
        assert len(told) == 1 and re.match(r"no frame from test:// for [2-4] s$", told[0])
    finally:
        source.resume.set()
        camera.stop()


def test_a_source_whose_opening_does_not_return_is_told_for_a_new_process(red_square_model):
    source = HangingSource(frames=None)
    told = []
    camera = Camera(source, Detector(red_square_model, backend="onnxruntime"), on_hang=told.append,
                    hang_seconds=1.5).start()
    try:
        assert wait_until(lambda: told, 5)
        assert re.match(r"opening test:// has not returned for [12] s$", told[0])
        assert camera.stats()["state"] == "starting" and not camera.healthy()
    finally:
        source.resume.set()
        camera.stop()


def test_an_inference_that_does_not_return_is_marked_stalled_and_told_for_a_new_process(
        red_square_model, monkeypatch, caplog):
    """A hung GPU (one frame in flight, as TensorRT's): capture goes on, so the source is not
    what stalls."""
    caplog.set_level("INFO", "streamdetect.camera")
    monkeypatch.setattr(Watchdog, "STALL_SECONDS", 1.0)
    detector = Detector(red_square_model, backend="onnxruntime")
    run, resume, calls = detector.run, threading.Event(), itertools.count()

    def run_that_hangs_after_ten(blob):
        if next(calls) >= 10:
            resume.wait()
        return run(blob)
    detector.run = run_that_hangs_after_ten
    told = []
    camera = Camera(open_source("test://?fps=30"), detector, on_hang=told.append, hang_seconds=2.5).start()
    try:
        assert wait_until(lambda: camera.latest_frame().status == "stalled", 5)
        stats = camera.stats()
        assert stats["state"] == "stalled" and stats["last_error"].startswith("an inference has not returned for ")
        assert not camera.healthy() and told == []
        assert "an inference has not returned for 1 s; waiting for it, at most 2.5 s" in caplog.text
        assert wait_until(lambda: told, 5)
        time.sleep(1.0)
        assert len(told) == 1 and re.match(r"an inference has not returned for [2-4] s$", told[0])
        resume.set()
        assert wait_until(lambda: camera.latest_frame().status is None, 5)
        assert camera.stats()["state"] == "streaming" and camera.healthy()
    finally:
        resume.set()
        camera.stop()


def test_one_of_two_detectors_that_hangs_is_told_for_a_new_process(red_square_model, monkeypatch):
    """The other detector goes on publishing, at half the rate: no stall to mark, but the hung
    one would hold its share of the device until the process ends."""
    monkeypatch.setattr(Watchdog, "STALL_SECONDS", 0.5)
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=2)
    run, resume, calls = detector.run, threading.Event(), itertools.count()

    def run_that_hangs_once(blob):
        if next(calls) == 10:
            resume.wait()
        return run(blob)
    detector.run = run_that_hangs_once
    told, statuses = [], set()
    camera = Camera(open_source("test://?fps=30"), detector, on_hang=told.append, hang_seconds=2.0).start()
    try:
        assert wait_until(lambda: camera.stats()["frames_inferred"] >= 15, 5)  # the other detector went on
        published = camera.stats()["frames_published"]
        deadline = time.monotonic() + 4.0
        while not told and time.monotonic() < deadline:
            statuses.add(camera.latest_frame().status)
            time.sleep(0.05)
        time.sleep(0.6)  # another check or more
        assert len(told) == 1 and re.match(r"an inference has not returned for [2-3] s$", told[0]), told
        assert camera.stats()["frames_published"] > published and statuses == {None}
    finally:
        resume.set()
        camera.stop()


def test_a_slow_slide_show_is_neither_stalled_nor_unhealthy_between_its_pictures(tmp_path, red_square_model,
                                                                                  monkeypatch):
    """Nor does /healthz (and Docker's health check) flap between a slow source's frames."""
    monkeypatch.setattr(Watchdog, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(Watchdog, "FRESH_SECONDS", 0.3)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), red_square_scene())
    camera = Camera(open_source(str(tmp_path), fps=1.0), Detector(red_square_model, backend="onnxruntime"))
    camera.start()
    try:
        assert wait_until(lambda: camera.last_live_frame is not None, 5)
        seen, answers = set(), []
        deadline = time.time() + 2.5  # gaps of a second, longer than STALL_SECONDS and FRESH_SECONDS
        while time.time() < deadline:
            seen.update((camera.stats()["state"], camera.latest_frame().status))
            answers.append(camera.healthy())
            time.sleep(0.05)
        stats = camera.stats()
        assert "stalled" not in seen and all(answers) and stats["frames_published"] >= 2
        assert 0.5 < stats["fps"] < 1.5  # one picture a second, not 0 for want of two in the window
    finally:
        camera.stop()


def test_the_frame_rate_of_a_fast_and_of_a_slow_source():
    fast = MovingRate(window=2.0)
    for tick in range(61):  # 3 s at 20 FPS
        fast.tick(tick / 20.0)
    assert fast.rate(3.0) == pytest.approx(20.0) and fast.rate(4.9) == pytest.approx(20.0)
    assert fast.rate(5.1) == 0.0  # stopped for longer than the window
    slow = MovingRate(window=2.0)
    slow.tick(0.0)
    assert slow.rate(0.0) == 0.0  # one picture is no rate yet
    for tick in (5.0, 10.0):
        slow.tick(tick)
    assert slow.rate(10.0) == pytest.approx(0.2) and slow.rate(19.0) == pytest.approx(0.2)
    assert slow.rate(21.0) == 0.0  # no picture for twice its interval


def test_a_file_that_ends_is_marked_ended_after_its_last_frames(tmp_path, tiny_yolov2_model):
    """Frames still in the detectors when a file ends are published after its ENDED
    frame; that mark must come last, on the last picture, or viewers would keep an
    unmarked picture and /api/detections would say "live" for good."""
    path = str(tmp_path / "clip.avi")
    write_clip(path, greys(20, step=10, size=(640, 480)), 30)
    detector = Detector(tiny_yolov2_model, backend="onnxruntime")  # the real architecture: frames in flight
    camera = Camera(open_source(path), detector).start()
    camera.join_viewer()
    try:
        assert wait_until(lambda: camera.state == "ended", 10)
        time.sleep(1.0)  # longer than the frames in flight take
        last = camera.latest_frame()
        assert last.status == "ended" and last.seq > camera.last_live_frame.seq
        assert camera.stats()["frames_published"] >= 2
    finally:
        camera.stop()


def test_the_pipeline_recovers_from_failed_inferences(red_square_model, caplog):
    """A failure cannot be caused for real here (a GPU's would be): the detector is made
    to fail three times in a row. Viewers are told, the log has one traceback, and once
    inference works again the state, /healthz and the pictures are live again."""
    detector = Detector(red_square_model, backend="onnxruntime")
    run, calls = detector.run, []

    def failing_three_times(blob):
        calls.append(1)
        if 10 <= len(calls) < 13:
            raise RuntimeError("an illegal memory access was encountered")
        return run(blob)
    detector.run = failing_three_times
    camera = Camera(open_source("test://?fps=30"), detector).start()
    try:
        assert wait_until(lambda: camera.state == "error", 10)
        assert wait_until(lambda: camera.latest_frame().status == "error", 2) and not camera.healthy()
        assert camera.stats()["last_error"] == "inference failed: an illegal memory access was encountered"
        assert wait_until(lambda: camera.state == "streaming" and camera.healthy(), 10)
        assert camera.latest_frame().status is None and camera.stats()["last_error"] == ""
    finally:
        camera.stop()
    failures = [r for r in caplog.records if "inference failed" in r.getMessage() and r.levelname != "INFO"]
    assert len(failures) == 3 and sum(1 for r in failures if r.exc_info) == 1


def test_an_upload_the_detector_did_not_answer_in_time_is_dropped(red_square_model):
    """Its request has had its error: the picture must not stay queued (up to 40 megapixels
    each, while the detector hangs) nor take the detector's time once it works again."""
    detector = Detector(red_square_model, backend="onnxruntime")
    run, detect, hang, uploads_run = detector.run, detector.detect, threading.Event(), []

    def hanging(blob):
        hang.wait(10)
        return run(blob)
    detector.run = hanging

    def recorded(frame, **options):
        uploads_run.append(frame.shape)
        return detect(frame, **options)
    detector.detect = recorded
    camera = Camera(open_source("test://?fps=30"), detector).start()
    try:
        time.sleep(0.5)  # every detector waits in an inference that hangs
        with pytest.raises(RuntimeError, match="did not answer within"):
            camera.detect_image(np.zeros((200, 300, 3), np.uint8), timeout=0.3)
        hang.set()
        assert wait_until(lambda: camera.stats()["frames_published"] > 5, 10)
        assert uploads_run == []
        assert camera.detect_image(np.zeros((200, 300, 3), np.uint8))[0] == []  # one in time is answered
        assert uploads_run == [(200, 300, 3)]
    finally:
        hang.set()
        camera.stop()


@pytest.mark.parametrize("in_flight", [1, 2])
def test_rendering_that_fails_is_told_once_and_again_when_it_works(red_square_model, caplog, in_flight):
    """Not a traceback per frame: the first failure with its traceback, then one line once
    frames are drawn again (a stand-in decoder fails for ten frames in a row), whether the
    render thread draws or the detectors do."""
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=in_flight)
    decode, calls = detector.decode, []

    def failing_ten_times(output, size):
        calls.append(1)
        if 5 <= len(calls) < 15:
            raise ValueError("cannot decode")
        return decode(output, size)
    detector.decode = failing_ten_times
    camera = Camera(open_source("test://?fps=30"), detector).start()
    try:
        assert wait_until(lambda: len(calls) > 20, 10)
    finally:
        camera.stop()
    told = [(r.levelname, r.getMessage(), bool(r.exc_info)) for r in caplog.records if "decoding" in r.getMessage()]
    assert told == [("ERROR", "decoding, drawing or encoding failed; frames are skipped until it works again", True),
                    ("WARNING", "decoding, drawing and encoding work again, after 10 frames skipped", False)]


def test_broadcast_wakes_every_reader_for_every_frame_it_waits_for():
    """Lock-step: each frame is published only once every reader has the one before,
    so a reader that missed a wake-up would sit out its 5 s timeout."""
    broadcast = Broadcast()
    frames = 300
    latest = [0] * 8
    progressed = threading.Condition()

    def reader(index):
        seq = 0
        while seq < frames:
            frame = broadcast.wait_newer(seq, 5.0)
            assert frame is not None and frame.seq > seq
            seq = frame.seq
            with progressed:
                latest[index] = seq
                progressed.notify_all()

    readers = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(len(latest))]
    for thread in readers:
        thread.start()
    started = time.time()
    for seq in range(1, frames + 1):
        broadcast.publish(Frame(seq, b"jpeg", [], 1, 1, 0.0, time.time()))
        with progressed:
            assert progressed.wait_for(lambda: min(latest) >= seq, 2.0), (seq, latest)
    for thread in readers:
        thread.join(5)
    assert time.time() - started < 10
    assert broadcast.wait_newer(frames, 0.2) is None  # nothing newer: the timeout, not a hang


@pytest.mark.skipif(cv2.getNumThreads() < 2, reason="OpenCV has a single thread here anyway")
def test_opencv_keeps_its_worker_threads_only_when_it_runs_the_model(red_square_model):
    cv2.setNumThreads(-1)  # OpenCV's default, whatever an earlier test's pipeline set
    default = cv2.getNumThreads()
    try:
        for backend, threads in (("opencv", default), ("onnxruntime", 1)):
            camera = Camera(open_source("test://"), Detector(red_square_model, backend=backend)).start()
            camera.stop()
            assert cv2.getNumThreads() == threads, backend
    finally:
        cv2.setNumThreads(-1)


def test_frames_in_flight_overlap_and_reach_viewers_in_capture_order(red_square_model):
    """Two frames at once; every other inference is slow, so later frames overtake
    earlier ones: those are dropped, never shown after their successors. Only the
    frames the detectors take are prepared."""
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=2)
    assert detector.engine.frames_in_flight == 2
    run, running, most = detector.run, [0], [0]
    calls = itertools.count()
    lock = threading.Lock()

    def uneven_run(blob):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.12 if next(calls) % 2 else 0.01)
        try:
            return run(blob)
        finally:
            with lock:
                running[0] -= 1
    detector.run = uneven_run
    prepared = count_calls(detector, "prepare")
    camera = Camera(open_source("test://?fps=60"), detector)
    published = []
    publish = camera.broadcast.publish
    camera.broadcast.publish = lambda frame: (published.append(frame), publish(frame))
    camera.start()
    try:
        assert wait_until(lambda: camera.stats()["frames_published"] >= 20, 10)
    finally:
        camera.stop()
    captured = [frame.captured_at for frame in published if frame.status is None]
    assert most[0] == 2
    assert captured == sorted(captured) and len(set(captured)) == len(captured)
    stats = camera.stats()
    assert stats["frames_inferred"] > stats["frames_published"]  # the overtaken ones
    assert len(prepared) == stats["frames_inferred"] < stats["frames_captured"]
    assert stats["frames_in_flight"] == 2


@pytest.mark.parametrize("in_flight, drawn_by", [(1, {"camera-render_loop"}), (2, {"detect-loop"})])
def test_who_draws_and_encodes_a_frame(red_square_model, in_flight, drawn_by):
    """One frame in flight: the render thread, so that drawing and encoding overlap with the
    next inference. Several: every core is inferring anyway, and a render thread would
    interrupt one detector per frame, so each detector draws the frame it inferred."""
    threads = []

    def noting_encoder(image, quality):
        threads.append(threading.current_thread().name)
        return encode_opencv(image, quality)
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=in_flight)
    camera = Camera(open_source("test://?fps=30"), detector, encoders={"noting": noting_encoder}).start()
    try:
        assert wait_until(lambda: camera.counters["frames_published"] >= 10, 10)
    finally:
        camera.stop()
    live = [name for name in threads if name != "MainThread"]  # the "stopped" picture: camera.stop()'s
    assert len(live) >= 10 and set(live) == drawn_by


def test_frames_in_flight_start_apart(red_square_model):
    """Two detectors that started together would finish together, one frame of the
    two wasted whenever the older finishes last: starts are kept at least STAGGER
    of the even spacing apart, even when a new frame is there sooner."""
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=2)
    prepare, infer, starts = detector.prepare, detector.engine.infer, []

    def prepare_and_note(frame):  # the first thing a detector does with the frame it took
        starts.append(time.time())
        return prepare(frame)

    def steady_infer(blob):
        time.sleep(0.1)
        return infer(blob)
    detector.prepare, detector.engine.infer = prepare_and_note, steady_infer
    camera = Camera(open_source("test://?fps=60"), detector).start()
    try:
        assert wait_until(lambda: len(starts) >= 16, 10)
    finally:
        camera.stop()
    inference_s = camera.stats()["inference_ms"] / 1000.0
    assert inference_s >= 0.1
    gaps = np.diff(starts[4:])  # once the average inference time is known
    # Without the stagger, the two would start one frame of the source apart (1/60 s),
    # below this bound; the margin is for a busy machine's scheduling.
    assert gaps.min() >= 0.8 * STAGGER * inference_s / 2 > 1 / 60.0, gaps


def test_only_frames_a_detector_will_take_are_decoded(red_square_model):
    """A 60 FPS source and a 0.1 s detector: five frames in six would be replaced
    unseen, so they are grabbed but neither decoded nor pre-processed; the
    detector still gets a frame as soon as it is free."""
    detector = Detector(red_square_model, backend="onnxruntime")
    infer, starts = detector.engine.infer, []

    def steady_infer(blob):
        starts.append(time.time())
        time.sleep(0.1)
        return infer(blob)
    detector.engine.infer = steady_infer
    prepared = count_calls(detector, "prepare")
    source = open_source("test://?fps=60")
    decoded = count_calls(source, "retrieve")
    camera = Camera(source, detector).start()
    try:
        # from the fourth inference on: until the first ends, its time is unknown and every frame decoded
        assert wait_until(lambda: len(starts) >= 4, 10)
        decoded_before, started_before = len(decoded), len(starts)
        assert wait_until(lambda: len(starts) >= 24, 10)
    finally:
        camera.stop()
    stats = camera.stats()
    assert stats["frames_captured"] >= 4 * stats["frames_inferred"]
    assert len(decoded) == len(prepared) == stats["frames_decoded"]
    assert len(decoded) - decoded_before <= 1.5 * (len(starts) - started_before) + 1
    # The detector was not kept waiting for a frame to be decoded: a wait would add
    # up to a source frame interval (17 ms) between one inference and the next.
    gaps = np.diff(starts[3:])
    assert np.median(gaps) < stats["inference_ms"] / 1000.0 + 0.008, gaps


def test_every_frame_is_decoded_while_the_detector_waits_for_frames(red_square_model):
    detector = Detector(red_square_model, backend="onnxruntime", frames_in_flight=2)
    source = open_source("test://?fps=15")
    decoded = count_calls(source, "retrieve")
    camera = Camera(source, detector).start()
    try:
        assert wait_until(lambda: camera.stats()["frames_inferred"] >= 15, 10)
    finally:
        camera.stop()
    stats = camera.stats()
    assert len(decoded) == stats["frames_decoded"] == stats["frames_captured"]
    assert stats["frames_inferred"] >= stats["frames_captured"] - 1
