"""Several cameras in one server: one detector shared fairly, a route and a tile for each,
and one camera's outage costing the others nothing."""
import os
import re
import time

import pytest

from broadcast import TooManyViewers, ViewerLimit
from camera import Camera
from parsing import named_sources, sources_text
from scheduler import DetectorPool
from sources import open_source
from streaming import HAS_PRODUCTION_STACK, Server, Viewer, free_port, get, get_json, read_events, run_app, \
    wait_until
from tracking import Tracker
from yolo_tool import Detector


def slowed(detector, seconds):
    """`detector` with each inference taking at least `seconds`, so that inference is the
    bottleneck however fast this machine is."""
    infer = detector.engine.infer

    def slow_infer(blob):
        time.sleep(seconds)
        return infer(blob)
    detector.engine.infer = slow_infer
    return detector


def run_cameras(detector, uris, seconds):
    """Cameras named a, b, c... reading `uris` on one pool for `seconds` after a warm-up;
    (inferred, captured) per camera in that time."""
    pool = DetectorPool(detector)
    cameras = [Camera(open_source(uri), detector, tracker=Tracker(name), pool=pool)
               for name, uri in zip("abcdef", uris)]
    pool.start()
    for camera in cameras:
        camera.start()
    try:
        assert wait_until(lambda: all(camera.counters["frames_published"] >= 3 for camera in cameras), 15)
        before = [dict(camera.counters) for camera in cameras]
        time.sleep(seconds)
        after = [dict(camera.counters) for camera in cameras]
    finally:
        for camera in cameras:
            camera.stop()
        pool.stop(time.monotonic() + 5)
    assert all(camera.state == "stopped" for camera in cameras)
    return [(a["frames_inferred"] - b["frames_inferred"], a["frames_captured"] - b["frames_captured"])
            for a, b in zip(after, before)]


def test_three_cameras_get_equal_shares_of_one_detector(red_square_model):
    """Three 60 FPS cameras, one detector of two frames in flight at 30 ms each (about 66
    inferences a second for 180 frames offered): each camera gets a third, within 20 %."""
    detector = slowed(Detector(red_square_model, backend="onnxruntime", frames_in_flight=2), 0.03)
    counts = run_cameras(detector, ["test://?fps=60"] * 3, 5)
    inferred = [done for done, _ in counts]
    assert min(inferred) >= 0.8 * max(inferred), counts
    assert sum(inferred) >= 0.8 * 2 / 0.03 * 5, counts  # the detectors hardly idle


def test_a_camera_that_gives_fewer_frames_gets_them_all_and_the_others_the_rest(red_square_model):
    detector = slowed(Detector(red_square_model, backend="onnxruntime", frames_in_flight=1), 0.03)
    (fast_a, _), (fast_b, _), (slow, slow_captured) = run_cameras(
        detector, ["test://?fps=60", "test://?fps=60", "test://?fps=4"], 5)
    assert slow >= slow_captured - 1 and slow_captured >= 15
    assert min(fast_a, fast_b) >= 0.8 * max(fast_a, fast_b)
    assert fast_a + fast_b + slow >= 0.8 / 0.03 * 5  # what the slow camera leaves, the others take


def test_an_upload_is_run_by_the_shared_detectors(red_square_model):
    """Uploads run in the pool's threads (which own any GPU context), with the cameras' frames."""
    import threading
    import numpy as np
    detector = Detector(red_square_model, backend="onnxruntime")
    infer, threads = detector.engine.infer, set()

    def noting_infer(blob):
        threads.add(threading.current_thread().name)
        return infer(blob)
    detector.engine.infer = noting_infer
    pool = DetectorPool(detector).start()
    camera = Camera(open_source("test://?fps=10"), detector, pool=pool).start()
    try:
        picture = np.zeros((240, 320, 3), np.uint8)
        assert camera.detect_image(picture)[0] == []
        picture[80:160, 100:200] = (0, 0, 255)
        detections, _ = camera.detect_image(picture)
        assert detections and {d.label for d in detections} == {"aeroplane"}
        assert wait_until(lambda: camera.counters["frames_inferred"] >= 2, 5)
    finally:
        camera.stop()
        pool.stop(time.monotonic() + 5)
    assert threads == {"detect-loop"}


def test_frames_of_several_cameras_inferred_as_one_batch_go_back_to_their_cameras(tmp_path):
    """An engine that takes a batch (--batch 3, a symbolic batch): a free detector takes the
    frames of every camera waiting, and each camera gets the detections of its own frame."""
    import cv2
    import numpy as np
    import onnx_models
    model = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    pictures = {"red": np.zeros((240, 320, 3), np.uint8), "black": np.zeros((240, 320, 3), np.uint8)}
    pictures["red"][80:160, 100:200] = (0, 0, 255)
    for name, picture in pictures.items():
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "picture.png"), picture)
    detector = Detector(model, backend="onnxruntime", frames_in_flight=1, batch=3, cameras=3)
    infer, batches = detector.engine.infer, []

    def noting_infer(blob):
        batches.append(blob.shape[0])
        time.sleep(0.05)  # slower than the cameras: their frames wait together
        return infer(blob)
    detector.engine.infer = noting_infer
    pool = DetectorPool(detector)
    cameras = [Camera(open_source(str(tmp_path / folder), fps=20), detector, tracker=Tracker(name), pool=pool)
               for name, folder in (("a", "red"), ("b", "black"), ("c", "red"))]
    pool.start()
    for camera in cameras:
        camera.start()
    try:
        assert wait_until(lambda: all(camera.counters["frames_published"] >= 5 for camera in cameras), 15)
        found = [camera.latest_frame().detections for camera in cameras]
    finally:
        for camera in cameras:
            camera.stop()
        pool.stop(time.monotonic() + 5)
    assert pool.batch == 3 and max(batches) == 3
    assert found[0] and not found[1] and found[2]
    assert {d.label for d in found[0] + found[2]} == {"aeroplane"}


def test_a_camera_stopped_while_the_shared_detectors_run_its_frame_stays_stopped(red_square_model):
    """The pool outlives a camera it serves: a frame of the camera's that a detector was
    inferring when it stopped, or one still waiting, is not shown after the 'stopped' picture."""
    detector = slowed(Detector(red_square_model, backend="onnxruntime", frames_in_flight=2), 0.3)
    pool = DetectorPool(detector).start()
    camera = Camera(open_source("test://?fps=30"), detector, pool=pool).start()
    other = Camera(open_source("test://?fps=30"), detector, tracker=Tracker("other"), pool=pool).start()
    try:
        assert wait_until(lambda: camera.counters["frames_published"] >= 2, 10)
        assert wait_until(lambda: camera.handover.busy_since, 5)  # one of its frames is being inferred
        camera.stop()
        stopped = camera.latest_frame()
        published = other.counters["frames_published"]
        assert wait_until(lambda: other.counters["frames_published"] >= published + 3, 10)  # the pool goes on
    finally:
        other.stop()
        pool.stop(time.monotonic() + 5)
    assert stopped.status == "stopped" and camera.latest_frame() is stopped


def test_max_viewers_counts_every_camera_together():
    limit = ViewerLimit(2)
    limit.take()
    limit.take()
    with pytest.raises(TooManyViewers, match="all cameras together"):
        limit.take()
    limit.give_back()
    limit.take()


@pytest.mark.parametrize("given, named", [
    ("test://?fps=5", [("camera", "test://?fps=5")]),
    ("./a=b.mp4", [("camera", "./a=b.mp4")]),
    ("door=/dev/video0", [("door", "/dev/video0")]),
    ("door=/dev/video0 yard=csi://0", [("door", "/dev/video0"), ("yard", "csi://0")]),
    ("/videos/my clip.mp4", [("camera", "/videos/my clip.mp4")]),
])
def test_source_names(given, named):
    assert named_sources(given) == named
    assert named_sources(sources_text(named)) == named  # as --production passes them to uWSGI


@pytest.mark.parametrize("argv, error", [
    (["--source", "front door=/dev/video0"], "'front door' is no camera name: a name has letters, digits, - and _"),
    (["--source", "a=test://", "--source", "a=test://?fps=5"], "camera name 'a' is given twice"),
    (["--source", "a="], "camera 'a' has no source after its '='"),
])
def test_a_bad_camera_name_is_a_one_line_error(argv, error, red_square_model):
    result = run_app("serve", "--model", red_square_model, *argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error in result.stderr.strip().splitlines()[-1]


def test_a_bad_camera_name_in_the_environment_is_a_one_line_error(red_square_model):
    result = run_app("serve", "--model", red_square_model,
                     env=dict(os.environ, STREAMDETECT_SOURCE="a=test:// a=test://"))
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "python app.py: error: camera name 'a' is given twice; each camera needs a name of its own "
        "(--source NAME=URI) (in $STREAMDETECT_SOURCE)"]


def camera_rates(server, names, seconds):
    """Frames each camera published per second over `seconds`."""
    before = server.stats()["cameras"]
    time.sleep(seconds)
    after = server.stats()["cameras"]
    return {name: (after[name]["frames_published"] - before[name]["frames_published"]) / seconds for name in names}


def test_three_cameras_each_with_its_routes_and_one_down_costs_the_others_nothing(red_square_model):
    """Two test:// cameras and one that reads another server's MJPEG stream, which the test
    then stops: that camera goes RECONNECTING, /healthz names it, the other two keep their
    rates, and it streams again when the stream is back on its port."""
    upstream = Server("serve", "--source", "test://?fps=10", "--model", red_square_model)
    with upstream:
        url = "http://127.0.0.1:{}/video_feed".format(upstream.port)
        with Server("serve", "--source", "a=test://?fps=10", "--source", "b=test://?fps=10", "--source",
                    "c=" + url, "--model", red_square_model, "--max-viewers", "2") as server:
            check_each_camera_route(server)
            rates = camera_rates(server, "ab", 3)
            upstream.stop()
            assert wait_until(lambda: server.stats()["cameras"]["c"]["state"] == "reconnecting", 10)
            status, health = get_json(server.port, "/healthz")
            assert status == 503 and health["down"] == ["c"] and health["error"].startswith("c: ")
            assert health["cameras"]["a"]["state"] == "streaming"
            while_down = camera_rates(server, "ab", 3)
            assert all(while_down[name] >= 0.8 * rates[name] for name in "ab"), (rates, while_down)
            back = Server("serve", "--source", "test://?fps=10", "--model", red_square_model)
            back.port = upstream.port
            with back:
                assert wait_until(lambda: server.stats()["cameras"]["c"]["state"] == "streaming", 20)
                published = server.stats()["cameras"]["c"]["frames_published"]
                assert wait_until(lambda: server.stats()["cameras"]["c"]["frames_published"] > published + 5, 10)
                assert get(server.port, "/healthz")[0] == 200
            log = server.log(last=None)
            assert log.count(" loaded ") == 1, log  # one model for three cameras


def check_each_camera_route(server):
    stats = server.stats()
    assert sorted(stats["cameras"]) == ["a", "b", "c"] and stats["name"] == "a"
    for name, camera in stats["cameras"].items():
        assert camera["state"] == "streaming" and camera["frames_inferred"] > 0 and camera["name"] == name
        assert {"fps", "frames_captured", "frames_published", "frames_dropped", "viewers", "source", "width",
                "height"} <= set(camera)
    assert stats["cameras"]["c"]["source"].endswith("/video_feed")
    assert get_json(server.port, "/cameras/b/api/stats")[1]["source"] == "test://?fps=10"
    status, headers, jpeg = get(server.port, "/cameras/b/snapshot.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8" and headers["Content-Type"] == "image/jpeg"
    status, record = get_json(server.port, "/cameras/c/api/detections")
    assert status == 200 and record["image"].endswith("/video_feed") and record["detections"]
    status, page = get(server.port, "/cameras/b/")[::2]
    assert status == 200 and b"/cameras/b/video_feed" in page and b"/cameras/b/api/stats" in page
    status, answer = get_json(server.port, "/cameras/d/video_feed")
    assert status == 404 and answer["error"] == "there is no camera 'd'; the cameras are a, b, c"
    status, _, metrics = get(server.port, "/metrics")
    for name in "abc":
        assert re.search(r'streamdetect_frames_inferred_total\{{camera="{}"\}} [1-9]'.format(name), metrics.decode())
    status, _, events = read_events(server.port, 2, "/cameras/a/api/events")
    assert status == 200 and all(event["image"] == "test://?fps=10" for _, event, _ in events)
    assert wait_until(lambda: not any(each["viewers"] for each in server.stats()["cameras"].values()), 5)
    viewers = [Viewer(server.port, path) for path in ("/cameras/c/video_feed", "/video_feed")]
    for viewer in viewers:
        viewer.start()
    assert wait_until(lambda: all(viewer.frames >= 3 for viewer in viewers), 10), [(v.status, v.frames, v.error) for v in viewers]
    status, refused = get_json(server.port, "/cameras/b/api/events")
    assert status == 503 and "of all cameras together" in refused["error"]  # --max-viewers 2: c's and a's
    for viewer in viewers:
        viewer.close()
        viewer.join(5)
        assert viewer.bad == 0 and viewer.error is None


@pytest.mark.skipif(not HAS_PRODUCTION_STACK, reason="needs uwsgi (pip) and nginx (apt-get install nginx)")
def test_chromium_shows_every_camera_on_the_grid_through_nginx(red_square_model, tmp_path):
    """The grid at / under --production: each tile's stream moves and says its state and FPS;
    a click opens that camera's page, whose stream is that camera's (nginx streams
    /cameras/NAME/video_feed unbuffered, as /video_feed)."""
    import cv2
    import numpy as np
    from browser import chromium_page
    names = ("door", "yard", "shed")
    sources = ["--source={}=test://?fps=10".format(name) for name in names]
    with Server("serve", "--production", *sources, "--model", red_square_model, "--stats-port", str(free_port())) \
            as server, chromium_page() as page:
        page.goto("http://127.0.0.1:{}/".format(server.port))
        tiles = page.locator(".tile")
        assert tiles.count() == 3
        page.wait_for_function("[...document.querySelectorAll('.tile img')].every(i => i.naturalWidth > 0)",
                               timeout=15000)
        page.wait_for_function("[...document.querySelectorAll('.tile .state')].every(s => s.textContent === "
                               "'streaming')", timeout=10000)
        shots = []
        for round_ in range(2):
            shots.append([])
            for index in range(3):
                path = str(tmp_path / "{}-{}.png".format(round_, index))
                tiles.nth(index).locator("img").screenshot(path=path)
                shots[-1].append(cv2.imread(path).astype(int))
            time.sleep(1.0)
        for before, after in zip(*shots):
            assert np.abs(before - after).mean() > 1.0  # each tile's scene moved
        assert [float(text) for text in page.locator(".tile .fps").all_text_contents()] > [0.0] * 3
        tiles.nth(1).click()
        page.wait_for_url("**/cameras/yard/")
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        assert "/cameras/yard/video_feed?" in page.evaluate("document.getElementById('stream').src")
        page.wait_for_function("document.getElementById('source').textContent.startsWith('test://')", timeout=10000)


def test_one_camera_whose_read_never_returns_ends_the_server_while_the_other_streams(red_square_model):
    """--exit-on-hang watches each camera: the hung one's device is held until the process ends,
    however well the others stream."""
    with Server("serve", "--source", "good=test://?fps=10", "--source", "hung=test://?hang_after=20",
                "--exit-on-hang", "1", "--model", red_square_model) as server:
        server.process.wait(20)
        assert server.process.returncode == 3
        log = server.log(last=None)
        assert re.search(r"no frame from test://\?hang_after=20 for [5-9] s: a driver call that does not "
                         r"return holds the device", log)
        assert "hung: state starting -> streaming" in log and "good: pipeline started" in log
        assert "Traceback" not in log
