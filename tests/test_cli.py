"""The command line as a user runs it: `python app.py ...` in a subprocess."""
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from errors import SourceError
from parsing import slip_for
from settings import build_parser, detector_from_args
from sources import open_source
from streaming import ROOT, free_port, red_square_scene, run_app as run, taken_port, write_clip


def test_help_lists_the_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "detect", "fetch-model", "build-engine", "check", "compare", "evaluate"):
        assert command in result.stdout
    detect_help = run("detect", "--help")
    assert "--out" in detect_help.stdout and "--backend" in detect_help.stdout


def test_an_option_a_command_does_not_take_is_named_with_that_command():
    result = run("check", "--model", "x.onnx")
    assert result.returncode == 2 and result.stderr.startswith("usage: python app.py check [-h]")
    assert result.stderr.endswith("python app.py check: error: unrecognized arguments: --model x.onnx\n")
    assert "python app.py serve: error: unrecognized arguments: --sauce" in run("--sauce", "test://").stderr


def test_frames_in_flight_must_be_a_count():
    result = run("serve", "--frames-in-flight", "-1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--frames-in-flight: '-1' is not a whole number of 0 or more" in result.stderr
    assert "frames inferred at once" in run("serve", "--help").stdout


def test_out_of_range_settings_are_refused_by_name(capsys, monkeypatch):
    """A typo must not allocate gigabytes (--width 99999), spin a core (--fps -3) or serve nothing."""
    refused = [
        (["--fps", "0"], "--fps: '0' is not a number from 0.1 to 240.0"),
        (["--fps", "nan"], "--fps: 'nan' is not a number"),
        (["--width", "99999"], "--width: '99999' is not a whole number from 16 to 7680"),
        (["--jpeg-quality", "500"], "--jpeg-quality: '500' is not a whole number from 1 to 100"),
        (["--port", "70000"], "--port: '70000' is not a whole number from 1 to 65535"),
        (["--max-viewers", "-1"], "--max-viewers: '-1' is not a whole number of 0 or more"),
        (["--conf", "1.5"], "--conf: '1.5' is not a number from 0.0 to 1.0"),
        (["--input-scale", "-1"], "--input-scale: '-1' is not a number from 0.0001 to 255.0"),  # no detections
        (["--input-scale", "x"], "--input-scale: 'x' is not a number from 0.0001 to 255.0"),
    ]
    for argv, message in refused:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve"] + argv)
        assert message in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--fps", "240", "--width", "16", "--conf", "0"])
    assert (args.fps, args.width, args.conf) == (240.0, 16, 0.0)
    monkeypatch.setenv("STREAMDETECT_FPS", "abc")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])
    assert "--fps: 'abc' (from $STREAMDETECT_FPS) is not a number" in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--fps", "12"]).fps == 12.0


def test_a_choice_from_the_environment_is_checked_like_one_on_the_command_line(capsys, monkeypatch):
    """argparse checks `choices` on the command line only: a typo in $STREAMDETECT_FLIP
    would otherwise reach the pipeline (or, for the log level, crash the start)."""
    for option, variable in (("--flip", "FLIP"), ("--backend", "BACKEND"), ("--precision", "PRECISION"),
                             ("--log-level", "LOG_LEVEL")):
        monkeypatch.setenv("STREAMDETECT_" + variable, "sideways")
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve"])
        assert "{}: 'sideways' (from $STREAMDETECT_{}) is not one of ".format(option, variable) in \
            capsys.readouterr().err
        monkeypatch.delenv("STREAMDETECT_" + variable)
    monkeypatch.setenv("STREAMDETECT_FLIP", "rotate-180")
    assert build_parser().parse_args(["serve"]).flip == "rotate-180"
    assert build_parser().parse_args(["serve", "--flip", "horizontal"]).flip == "horizontal"


def test_an_environment_variable_that_is_no_setting_is_refused_by_name(tmp_path):
    """-e STREAMDETECT_SOUCRE=rtsp://... streamed another source without a word, on the command
    line and under uWSGI (which imports the app) alike."""
    environment = dict(os.environ, STREAMDETECT_SOUCRE="rtsp://camera/live")
    refused = ("python app.py: error: $STREAMDETECT_SOUCRE is no setting (did you mean $STREAMDETECT_SOURCE?); the "
               "settings are the options of `python app.py serve --help`, as $STREAMDETECT_MAX_VIEWERS for "
               "--max-viewers\n")
    result = run("detect", str(tmp_path / "a.jpg"), env=environment)
    assert (result.returncode, result.stderr) == (2, refused)
    imported = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env=environment, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
    assert (imported.returncode, imported.stderr) == (2, refused)
    environment = dict(os.environ, STREAMDETECT_WHATEVER="1", STREAMDETECT_HOME=str(tmp_path))
    assert run("detect", str(tmp_path / "a.jpg"), env=environment).stderr.startswith(
        "python app.py: error: $STREAMDETECT_WHATEVER is no setting; the settings are")
    del environment["STREAMDETECT_WHATEVER"]
    assert run("detect", str(tmp_path / "a.jpg"), env=environment).stderr.endswith("a.jpg: no such file\n")


def test_the_suggested_setting_is_the_closest_one():
    """$STREAMDETECT_MODELURL was told "did you mean $STREAMDETECT_MODEL?", the first name that
    is a prefix of it, rather than MODEL_URL, the name it is a slip for."""
    names = ["MODEL", "MODEL_URL", "SOURCE", "CLASSES"]
    assert slip_for("MODELURL", names) == "MODEL_URL"
    assert slip_for("model", names) == "MODEL"
    assert slip_for("MODELS", names) == "MODEL"
    assert slip_for("class", names) == "CLASSES"
    assert slip_for("SOUCRE", names) == "SOURCE"
    assert slip_for("confidence", ["conf", "classes"]) == "conf"
    assert slip_for("PORT", names) is None


def test_an_on_off_setting_from_the_environment_means_what_it_says(capsys, monkeypatch):
    """STREAMDETECT_LOOP=False (or no, off) looped the video: any word but 0 and false was on."""
    for value, loop in (("False", False), ("no", False), ("OFF", False), ("0", False), ("", False),
                        ("1", True), ("True", True), ("yes", True), ("on", True)):
        monkeypatch.setenv("STREAMDETECT_LOOP", value)
        assert build_parser().parse_args(["serve"]).loop is loop, value
    assert build_parser().parse_args(["serve", "--loop"]).loop is True
    monkeypatch.setenv("STREAMDETECT_LOOP", "forever")
    with pytest.raises(SystemExit):
        build_parser()
    assert capsys.readouterr().err == ("python app.py: error: $STREAMDETECT_LOOP='forever' is neither 1, true, yes, "
                                       "on nor 0, false, no, off\n")


def test_out_of_range_test_source_is_a_one_line_error(red_square_model):
    for uri in ("test://?fps=abc", "test://?width=0", "test://?height=100000", "test://?die_after=-1",
                "test://?hang_after=x"):
        with pytest.raises(SourceError, match="is not a number from"):
            open_source(uri)
    assert open_source("test://?width=320&fps=5").width == 320
    for uri, message in (("test://?fsp=10", "test://?fsp=10: fsp is not a test:// setting (width, height, fps, "
                                            "die_after, hang_after)"),
                         ("test://?w=1&h=2", "test://?w=1&h=2: h, w are not test:// settings (width, height, fps, "
                                             "die_after, hang_after)"),
                         ("test://?fps", "test://?fps: fps= is not a number from 0.1 to 240.0"),
                         ("csi://0?fps=10", "csi://0?fps=10: csi:// takes the camera's sensor number (csi://0, "
                                            "csi://1); its size and rate are --width, --height and --fps")):
        with pytest.raises(SourceError) as refused:
            open_source(uri)
        assert str(refused.value) == message
    for model in (red_square_model, "missing.onnx"):  # told before the model loads: not a word of it
        result = run("serve", "--source", "test://?fps=0", "--model", model, "--port", "1")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1] == "error: test://?fps=0: fps=0 is not a number from 0.1 to 240.0"


def serve_log_until(marker, *args):
    """The log of `python app.py serve ARGS...` up to the line with `marker` (then stopped)."""
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "serve", "--host", "127.0.0.1",
                               "--port", str(free_port())] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    lines = []
    try:
        for line in server.stdout:
            lines.append(line)
            if marker in line:
                break
    finally:
        server.kill()
        server.communicate()
    return "".join(lines)


def test_opencv_messages_show_only_at_debug(red_square_model):
    """A camera that is not there is told once per attempt, in our words. OpenCV 4.7+
    adds its own `[ WARN ] ... can't be used to capture by name` each time: only at
    --log-level DEBUG (OpenCV 4.6 and 4.1.1, JetPack's, print none at all)."""
    absent = "/dev/video99"
    attempt = "WARNING streamdetect.camera: cannot open {}; is a camera plugged in".format(absent)
    quiet = serve_log_until("reconnecting in 1.0 s", "--source", absent, "--model", red_square_model)
    assert quiet.count(attempt) == 2 and "Traceback" not in quiet
    assert "[ WARN" not in quiet and "capture by name" not in quiet
    probe = subprocess.run([sys.executable, "-c", "import cv2; cv2.VideoCapture({!r}, cv2.CAP_V4L2)".format(absent)],
                           stderr=subprocess.PIPE, universal_newlines=True)
    if "[ WARN" in probe.stderr:  # this OpenCV tells of a failed open: DEBUG shows it
        debug = serve_log_until("reconnecting in 1.0 s", "--source", absent, "--model", red_square_model,
                                "--log-level", "DEBUG")
        assert "[ WARN" in debug and debug.count(attempt) == 2


def test_ffmpeg_messages_show_only_at_debug(red_square_model):
    """An RTSP camera that cannot be reached is told in our words; FFmpeg's own
    `[tcp @ 0x...] Connection ... refused` beside it only at --log-level DEBUG, where
    OpenCV lets its FFmpeg's level be set (4.6 does; JetPack's 4.1.1 keeps FFmpeg's errors)."""
    closed = "rtsp://127.0.0.1:{}/stream".format(free_port())
    ours = "WARNING streamdetect.camera: cannot open {}: cannot reach it".format(closed)
    quiet = serve_log_until("reconnecting in", "--source", closed, "--model", red_square_model)
    assert ours in quiet and "Traceback" not in quiet
    assert ("[tcp @" not in quiet) == (tuple(int(part) for part in cv2.__version__.split(".")[:2]) >= (4, 6))
    debug = serve_log_until("reconnecting in", "--source", closed, "--model", red_square_model, "--log-level", "DEBUG")
    assert ours in debug and "[tcp @" in debug


def test_serve_names_a_port_it_cannot_listen_on_before_opening_anything(red_square_model):
    with taken_port() as number:
        result = run("serve", "--host", "127.0.0.1", "--port", str(number), "--model", red_square_model,
                     "--source", "test://")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: cannot listen on 127.0.0.1:{} (Address already in use); is another server (another " \
        "streamdetect?) using it? Pass another --port".format(number) in result.stderr
    assert "pipeline started" not in result.stderr  # the camera was never opened
    elsewhere = run("serve", "--host", "203.0.113.77", "--port", "8080", "--model", red_square_model)
    assert elsewhere.returncode == 2 and "is 203.0.113.77 an address of this machine (--host)?" in elsewhere.stderr


def test_detect_never_overwrites_its_inputs_and_reports_what_it_cannot_write(tmp_path, red_square_model):
    scene = tmp_path / "scene.png"
    cv2.imwrite(str(scene), np.full((60, 80, 3), 90, np.uint8))
    original = scene.read_bytes()
    result = run("detect", str(scene), "--out", str(tmp_path), "--model", red_square_model)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert "would overwrite {} with its annotated copy".format(scene) in result.stderr
    assert scene.read_bytes() == original
    result = run("detect", str(scene), "--out", str(scene / "out"), "--model", red_square_model)
    assert result.returncode == 2 and "error: cannot create --out" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("detect", str(scene), str(empty), "--out", "/proc/self", "--model", red_square_model)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["image"] == str(scene)  # still detected and printed
    assert "cannot write /proc/self/scene.png" in result.stderr
    assert "{}: a folder with no images or videos (.jpg".format(empty) in result.stderr
    twin = tmp_path / "twin" / "scene.png"
    twin.parent.mkdir()
    twin.write_bytes(original)
    result = run("detect", str(scene), str(twin), "--out", str(tmp_path / "out"), "--model", red_square_model)
    assert result.returncode == 2 and "would both be written to" in result.stderr


def test_frames_in_flight_that_a_backend_cannot_run_are_named(red_square_model, caplog):
    args = build_parser().parse_args(["serve", "--model", red_square_model, "--backend", "opencv",
                                          "--frames-in-flight", "2"])
    assert detector_from_args(args).engine.frames_in_flight == 1
    assert "--frames-in-flight 2 is for ONNX Runtime; opencv runs one frame at a time" in caplog.text
    args.backend, args.frames_in_flight = "onnxruntime", 3
    assert detector_from_args(args).engine.frames_in_flight == 3


def test_detect_prints_json_and_writes_annotated_images(tmp_path, red_square_model):
    scene = red_square_scene()
    good = tmp_path / "scene.png"
    cv2.imwrite(str(good), scene)
    tiff = tmp_path / "scene.tif"  # OpenCV opens it as a video of one frame too: an image all the same
    cv2.imwrite(str(tiff), scene)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = run("detect", str(good), str(text), str(tmp_path / "missing.jpg"), str(tmp_path / "empty.jpg"), str(tiff),
                 "--out", str(out), "--model", red_square_model, "--backend", "onnxruntime")
    assert result.returncode == 1
    line, tiff_line = result.stdout.strip().splitlines()
    assert "frame" not in json.loads(tiff_line) and cv2.imread(str(out / "scene.jpg")).shape == scene.shape
    record = json.loads(line)
    assert set(record) == {"image", "width", "height", "backend", "inference_ms", "detections"}
    assert (record["image"], record["width"], record["height"]) == (str(good), 320, 240)
    assert record["backend"] == "onnxruntime"
    assert record["detections"], "the red square should be found"
    best = max(record["detections"], key=lambda d: d["score"])
    assert best["label"] == "aeroplane" and best["class_id"] == 0
    x1, y1, x2, y2 = best["box"]
    assert 100 <= (x1 + x2) / 2 <= 180 and 60 <= (y1 + y2) / 2 <= 160
    errors = result.stderr.strip().splitlines()
    assert any("notes.jpg: not an image" in e for e in errors)
    assert any("missing.jpg: no such file" in e for e in errors)
    assert any("empty.jpg: an empty file (0 bytes" in e for e in errors)
    assert "Traceback" not in result.stderr
    annotated = cv2.imread(str(out / "scene.png"))
    assert annotated.shape == scene.shape and not np.array_equal(annotated, scene)
    assert "2 annotated copies written to {}".format(out) in result.stderr  # where to look for them


def test_detect_reads_a_video_frame_by_frame(tmp_path, red_square_model):
    """A video gives one line per frame, with its number and time, and with --out an annotated copy."""
    video = tmp_path / "clip.avi"
    write_clip(video, [red_square_scene()] * 3, 10)
    out = tmp_path / "out"
    result = run("detect", str(video), "--out", str(out), "--model", red_square_model, "--backend", "onnxruntime")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["image"], r["frame"], r["time"], r["width"]) for r in records] == [
        (str(video), 0, 0.0, 320), (str(video), 1, 0.1, 320), (str(video), 2, 0.2, 320)]
    assert all(max(r["detections"], key=lambda d: d["score"])["label"] == "aeroplane" for r in records)
    assert {max(r["detections"], key=lambda d: d["score"])["id"] for r in records} == {1}  # one object throughout
    source, annotated = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(out / "clip.avi"))
    for _ in range(3):
        (read, plain), (written, drawn) = source.read(), annotated.read()
        assert read and written and drawn.shape == plain.shape
        assert np.abs(drawn.astype(int) - plain.astype(int)).max() > 100  # boxes and labels drawn
    assert not annotated.read()[0]
    assert "1 annotated copy written to {}".format(out) in result.stderr
    refused = run("detect", str(video), "--out", str(tmp_path), "--model", red_square_model)
    assert refused.returncode == 2 and "would overwrite {} with its annotated copy".format(video) in refused.stderr


def test_detect_reads_a_folders_images_and_videos_in_name_order(tmp_path, red_square_model):
    folder = tmp_path / "shots"
    (folder / "older").mkdir(parents=True)
    cv2.imwrite(str(folder / "b.png"), red_square_scene())
    cv2.imwrite(str(folder / "A.JPG"), red_square_scene())
    cv2.imwrite(str(folder / "older" / "c.png"), red_square_scene())  # not its subfolders
    write_clip(folder / "d.avi", [red_square_scene()] * 2, 10)
    (folder / "notes.txt").write_text("left out, as a folder --source leaves it")
    out = tmp_path / "out"
    result = run("detect", str(folder), "--out", str(out), "--model", red_square_model, "--backend", "onnxruntime")
    assert result.returncode == 0 and result.stderr.count("error") == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["image"], r.get("frame")) for r in records] == [
        (str(folder / "A.JPG"), None), (str(folder / "b.png"), None), (str(folder / "d.avi"), 0),
        (str(folder / "d.avi"), 1)]
    assert all(r["detections"] for r in records)
    assert sorted(os.listdir(str(out))) == ["A.JPG", "b.png", "d.avi"]


def test_detect_reads_a_picture_piped_in(tmp_path, red_square_model):
    """`curl -s URL | python app.py detect -`: the picture from standard input, as from a file; a URL
    given as a file says how to read it, not 'no such file'."""
    picture, out = tmp_path / "scene.png", tmp_path / "out"
    cv2.imwrite(str(picture), red_square_scene())
    options = ("--model", red_square_model, "--backend", "onnxruntime")
    from_file = json.loads(run("detect", str(picture), *options).stdout)
    with open(str(picture), "rb") as piped:
        result = run("detect", "-", "--out", str(out), *options, stdin=piped)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["image"] == "-" and record["detections"] == from_file["detections"] and record["detections"]
    assert os.listdir(str(out)) == ["stdin.jpg"]
    terminal, _ = os.openpty()
    for stdin, message in ((terminal, "standard input is a terminal; pipe a picture in (curl -s URL | python app.py "
                                      "detect -)"),
                           (subprocess.DEVNULL, "standard input is empty (did the command before the | fail?)")):
        result = run("detect", "-", *options, stdin=stdin)
        assert result.returncode == 1 and result.stderr.endswith("error: -: {}\n".format(message))
    result = run("detect", "-", *options, input="<html>not found</html>")
    assert result.stderr.endswith("error: -: standard input holds no image that can be read (a video must be a file)\n")
    with open(str(picture), "rb") as png:
        tga = io.BytesIO()
        Image.open(png).save(tga, "TGA")  # which OpenCV does not read
    result = run("detect", "-", *options, input=tga.getvalue().decode("latin-1"), encoding="latin-1")
    assert result.returncode == 0 and json.loads(result.stdout)["detections"] == from_file["detections"]
    result = run("detect", "-", str(picture), "-", *options, input="")
    assert result.returncode == 2
    assert result.stderr == "error: - (standard input) is given twice; it holds one picture\n"
    result = run("detect", "http://camera/snapshot.jpg", str(picture), *options)
    assert result.returncode == 1 and json.loads(result.stdout)["image"] == str(picture)
    assert result.stderr.endswith("error: http://camera/snapshot.jpg: detect reads files: for a camera or stream, run "
                                  "'serve --source URL' and read /api/events; for a picture, pipe it in: curl -s URL | "
                                  "python app.py detect -\n")


def test_paths_from_an_environment_file_may_start_with_a_tilde(tmp_path, red_square_model):
    """systemd's EnvironmentFile and `docker --env-file` expand no ~ as a shell does:
    STREAMDETECT_MODEL=~/models/x.onnx would be 'neither a file nor a known name'."""
    import shutil
    (tmp_path / "models").mkdir()
    shutil.copy(red_square_model, str(tmp_path / "models" / "red.onnx"))
    cv2.imwrite(str(tmp_path / "scene.png"), red_square_scene())
    environment = dict(os.environ, HOME=str(tmp_path), STREAMDETECT_MODEL="~/models/red.onnx")
    result = run("detect", str(tmp_path / "scene.png"), "--out", "~/annotated", env=environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["detections"] and os.listdir(str(tmp_path / "annotated")) == ["scene.png"]
    environment.update(STREAMDETECT_SOURCE="~/door.mp4", STREAMDETECT_LABELS="~/labels.txt",
                       STREAMDETECT_TLS_CERT="~/tls/cert.pem", STREAMDETECT_TLS_KEY="~/tls/key.pem",
                       STREAMDETECT_CALIBRATION_IMAGES="~/shots")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        args = build_parser().parse_args(["serve"])
    assert [args.source[0][1], args.model, args.labels, args.tls_cert, args.tls_key, args.calibration_images] == [
        str(tmp_path / name) for name in ("door.mp4", "models/red.onnx", "labels.txt", "tls/cert.pem", "tls/key.pem",
                                          "shots")]


def test_detect_stops_quietly_when_its_reader_goes(tmp_path, red_square_model):
    """`detect ... | head -1`: the lines no one reads end the command, without a traceback."""
    import fcntl
    video = tmp_path / "clip.avi"
    write_clip(video, [red_square_scene()[:120, :160]] * 100, 10)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # ~25 lines, not 64 kB
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "detect", str(video), "--model",
                                red_square_model], stdout=write_end, stderr=subprocess.PIPE, universal_newlines=True)
    os.close(write_end)
    with os.fdopen(read_end) as lines:
        assert json.loads(lines.readline())["frame"] == 0
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 141 and "Traceback" not in errors, errors


def test_detect_reports_only_the_classes_asked_for(tmp_path, red_square_model):
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), red_square_scene())
    options = ("--model", red_square_model, "--backend", "onnxruntime")
    kept = run("detect", str(image), "--classes", "person, aeroplane", *options)
    assert kept.returncode == 0 and json.loads(kept.stdout)["detections"]
    other = run("detect", str(image), *options, env=dict(os.environ, STREAMDETECT_CLASSES="dog"))
    assert other.returncode == 0 and json.loads(other.stdout)["detections"] == []
    unknown = run("detect", str(image), "--classes", "dgo", *options)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1].startswith("error: --classes: dgo is not among the classes")


def test_fetch_model_without_network_is_one_line(tmp_path):
    env = dict(os.environ, STREAMDETECT_HOME=str(tmp_path),
               STREAMDETECT_MODEL_URL="http://127.0.0.1:9/tinyyolov2-8.onnx")
    result = run("fetch-model", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot download http://127.0.0.1:9/")
    assert "--model PATH" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(os.path.join(str(tmp_path), "models")) == []


def test_an_unwritable_cache_is_needed_only_for_what_it_holds(tmp_path, red_square_model):
    """A model given by path runs without the cache folder (a service user's home may be
    read-only); a download, which needs it, says in one line what to set."""
    (tmp_path / "a-file").write_text("")
    unwritable = dict(os.environ, STREAMDETECT_HOME=str(tmp_path / "a-file" / "home"))
    cv2.imwrite(str(tmp_path / "scene.png"), red_square_scene())
    result = run("detect", str(tmp_path / "scene.png"), "--model", red_square_model, env=unwritable)
    assert result.returncode == 0 and json.loads(result.stdout)["detections"][0]["label"] == "aeroplane"
    fetch = run("fetch-model", env=unwritable)
    assert fetch.returncode == 2 and "Traceback" not in fetch.stderr
    assert "error: cannot make the cache folder {} (Not a directory); set STREAMDETECT_HOME to a writable " \
        "folder".format(tmp_path / "a-file" / "home" / "models") in fetch.stderr


def test_corrupt_model_is_one_line_for_detect(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((10, 10, 3), np.uint8))
    result = run("detect", str(image), "--model", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not a readable ONNX model" in result.stderr


def test_detect_with_nothing_to_read_says_so_before_loading_the_model(tmp_path):
    """A typo in the only file's name is told at once, not after a download or a TensorRT build:
    the model named here does not exist, and is not looked at."""
    (tmp_path / "empty").mkdir()
    result = run("detect", str(tmp_path / "dgo.jpg"), str(tmp_path / "empty"), "--model", str(tmp_path / "none.onnx"),
                 "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and result.stdout == "" and not (tmp_path / "out").exists()
    assert result.stderr.splitlines() == ["error: {}: no such file".format(tmp_path / "dgo.jpg"), (
        "error: {}: a folder with no images or videos (.jpg .jpeg .png .bmp .webp .mp4 .avi .mkv .mov .webm .m4v "
        ".mpg .mpeg .mjpeg .mjpg)".format(tmp_path / "empty"))]


def test_check_tells_what_auto_will_use(tmp_path):
    result = run("check")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("backend       onnxruntime:") for line in lines)
    assert any(line.startswith("backend       tensorrt:") for line in lines)
    assert "auto backend  onnxruntime" in result.stdout or "auto backend  tensorrt" in result.stdout
    copy = tmp_path / "home" / "models" / "tinyyolov2-8.onnx"  # the isolated STREAMDETECT_HOME's
    assert lines[-1] == "model         tinyyolov2-voc ({}): not downloaded yet (63 MB, at the first start or by " \
                        "fetch-model)".format(copy)
    copy.write_bytes(b"the first bytes of a download that broke off")
    assert run("check").stdout.splitlines()[-1].endswith("): incomplete, downloaded again at the next start (or by "
                                                         "fetch-model)")


def test_compare_onnxruntime_and_opencv(tiny_yolov2_model, tmp_path):
    result = run("compare", "--model", tiny_yolov2_model, "--backends", "onnxruntime,opencv",
                 "--frames", "2", "--repeat", "1", "--conf", "0.3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [row["backend"] for row in report] == ["onnxruntime", "opencv"]
    assert report[1]["max_abs_diff"] < 1e-3 and report[1]["same_detections"]
    cv2.imwrite(str(tmp_path / "scene.png"), red_square_scene())
    (tmp_path / "notes.txt").write_text("not an image: left out")
    result = run("compare", str(tmp_path), "--model", tiny_yolov2_model, "--backends", "onnxruntime", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)[0]["backend"] == "onnxruntime", result.stderr
    (tmp_path / "empty").mkdir()
    result = run("compare", str(tmp_path / "empty"), "--model", tiny_yolov2_model)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: {}: a folder with no images".format(tmp_path / "empty"))


def test_build_engine_without_tensorrt_is_one_line(red_square_model):
    result = run("build-engine", "--model", red_square_model)
    if result.returncode == 0:
        return  # a machine with TensorRT built it: tests/test_tensorrt_gpu.py covers that case
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_a_mistyped_command_is_named_with_the_one_meant(tmp_path):
    """`detetc x.jpg` ran the server's parser, which said only 'unrecognized arguments'."""
    result = run("detetc", str(tmp_path / "x.jpg"))
    assert (result.returncode, result.stderr) == (2, (
        "python app.py: error: 'detetc' is no command (did you mean detect?); the commands are serve, detect, "
        "fetch-model, build-engine, check, compare, evaluate (python app.py --help)\n"))
    assert "is no command;" in run("pictures").stderr
    assert "unrecognized arguments: --sauce" in run("--sauce", "test://").stderr  # options still go to serve


def test_an_empty_model_and_a_damaged_video_are_named_for_what_they_are(tmp_path, red_square_model):
    empty = tmp_path / "model.onnx"
    empty.write_bytes(b"")
    cv2.imwrite(str(tmp_path / "scene.png"), red_square_scene())
    result = run("detect", str(tmp_path / "scene.png"), "--model", str(empty))
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "error: {} is empty (0 bytes), not an ONNX model (a copy or download that failed?); pass --model PATH "
        "to an ONNX file".format(empty))
    damaged = tmp_path / "random.avi"
    damaged.write_bytes(np.random.RandomState(0).bytes(20000))
    result = run("detect", str(damaged), "--model", red_square_model)
    assert result.returncode == 1 and result.stderr.strip().endswith(
        "random.avi: not a video OpenCV can read (damaged, or in a codec this OpenCV lacks)")
