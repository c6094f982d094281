"""The command line and its environment: every option of every command, each also read
from $STREAMDETECT_<OPTION>, with the checks that make a wrong value a one-line error; and
the Detector the model options describe."""
import argparse
import logging
import os
import re
import sys

from errors import ServerSetupError
from evaluation import EVALUATE_CONF
from get_engine import BACKENDS, PRECISIONS
from mqtt_events import BrokerAddress
from parsing import listed_names, named_sources, number_in_range, slip_for
from sources import CAPTURE_LIMITS, FLIPS
from yolo_tool import DEFAULT_MODEL, NAMED_MODELS, Detector, parse_anchors, read_labels

log = logging.getLogger("streamdetect")

COMMANDS = ("serve", "detect", "fetch-model", "build-engine", "check", "compare", "evaluate")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class FromEnvironment(str):
    """A setting as an environment variable gave it, so that an error can name the variable."""

    def __new__(cls, value, variable):
        text = str.__new__(cls, value)
        text.variable = variable
        return text


# The $STREAMDETECT_<NAME> settings: those with no option, then each option's as env() and
# env_switch() are called while the parser is built.
ENVIRONMENT_SETTINGS = {"HOME", "MODEL_URL", "TOKEN"}


def env(name, default):
    """A setting's default: $STREAMDETECT_<NAME> when set, else `default`."""
    ENVIRONMENT_SETTINGS.add(name)
    variable = "STREAMDETECT_" + name
    return FromEnvironment(os.environ[variable], variable) if variable in os.environ else default


def env_switch(name):
    """An on/off setting's default: $STREAMDETECT_<NAME> as 1, true, yes, on or 0, false, no, off
    (any case; unset is off), else argparse's kind of one-line error: 'False' must not mean on."""
    ENVIRONMENT_SETTINGS.add(name)
    variable = "STREAMDETECT_" + name
    value = os.environ.get(variable, "")
    word = value.strip().lower()
    if word in ("", "0", "false", "no", "off"):
        return False
    if word in ("1", "true", "yes", "on"):
        return True
    print("python app.py: error: ${}='{}' is neither 1, true, yes, on nor 0, false, no, off".format(variable, value),
          file=sys.stderr)
    sys.exit(2)


def quoted(text):
    """'text', and the variable it came from when it came from the environment."""
    return "'{}'{}".format(text, " (from ${})".format(text.variable) if isinstance(text, FromEnvironment) else "")


def ranged(kind, low, high=None):
    """An argparse type: a `kind` (int or float) from `low` to `high` (None: no limit)."""
    def parse(text):
        value = number_in_range(text, kind, low, high)
        if value is None:
            raise argparse.ArgumentTypeError("{} is not a {} {}".format(
                quoted(text), "whole number" if kind is int else "number",
                "of {} or more".format(low) if high is None else "from {} to {}".format(low, high)))
        return value
    return parse


def origins(text):
    """--cors-origins: 'https://a.example, http://b.example:3000/' -> the origins as a browser
    sends them; '*' for any."""
    found = [name.rstrip("/") for name in listed_names(text)]
    for name in found:
        if name != "*" and not re.match(r"^https?://[^/\s]+$", name):
            raise argparse.ArgumentTypeError("'{}' is not an origin like https://dash.example:3000 (or *){}".format(
                name, " (in ${})".format(text.variable) if isinstance(text, FromEnvironment) else ""))
    return found


def one_of(choices):
    """An argparse type for an option with `choices`: argparse checks those on the
    command line only, not in a default taken from the environment."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError("{} is not one of {}".format(quoted(text), ", ".join(choices)))
        return str(text)
    return parse


count = ranged(int, 0)


port_number = ranged(int, 1, 65535)


def add_model_options(parser):
    group = parser.add_argument_group("model (each also read from $STREAMDETECT_<OPTION>)")
    group.add_argument("--model", type=os.path.expanduser, default=env("MODEL", DEFAULT_MODEL),
                       help="ONNX file, or a known name ({}); default %(default)s, downloaded on "
                            "first use".format(", ".join(sorted(NAMED_MODELS))))
    group.add_argument("--backend", choices=BACKENDS, type=one_of(BACKENDS), default=env("BACKEND", "auto"),
                       help="inference engine; auto picks the best one here and logs why "
                            "(default %(default)s)")
    group.add_argument("--labels", type=os.path.expanduser, default=env("LABELS", None),
                       help="file with one class label per line (default: VOC's 20 labels)")
    group.add_argument("--anchors", default=env("ANCHORS", None),
                       help="anchor sizes 'w1,h1,w2,h2,...' in grid cells (default: VOC anchors)")
    group.add_argument("--input-scale", type=ranged(float, 0.0001, 255.0), default=env("INPUT_SCALE", None),
                       help="multiplier from 0-255 pixels to the model's input range "
                            "(1 for the zoo model, 0.00392 for models trained on 0-1)")
    group.add_argument("--precision", choices=PRECISIONS, type=one_of(PRECISIONS), default=env("PRECISION", "auto"),
                       help="auto = fp16 where the GPU has fast FP16 (TensorRT), else fp32; int8: TensorRT's, "
                            "or ONNX Runtime's on the CPU, calibrated on --calibration-images (default %(default)s)")
    group.add_argument("--workspace-mb", type=ranged(int, 1), default=env("WORKSPACE_MB", 256),
                       help="TensorRT builder workspace in MB (default %(default)s)")
    group.add_argument("--calibration-images", type=os.path.expanduser, default=env("CALIBRATION_IMAGES", None),
                       metavar="DIR",
                       help="--precision int8: folder of typical images to calibrate with (a hundred or more)")
    group.add_argument("--conf", type=ranged(float, 0.0, 1.0), default=env("CONF", 0.5),
                       help="confidence threshold, 0-1 (default %(default)s)")
    group.add_argument("--iou", type=ranged(float, 0.0, 1.0), default=env("IOU", 0.45),
                       help="per-class NMS IoU threshold, 0-1 (default %(default)s)")
    group.add_argument("--classes", default=env("CLASSES", None), metavar="LABEL,LABEL",
                       help="report only these classes, e.g. person,car (default: all)")


def detector_from_args(args):
    """Build the Detector the model options describe."""
    in_flight = getattr(args, "frames_in_flight", 1)  # only the server runs frames side by side
    detector = Detector(
        model=args.model,
        backend=args.backend,
        labels=read_labels(args.labels) if args.labels else None,
        anchors=parse_anchors(args.anchors) if args.anchors else None,
        input_scale=args.input_scale,
        conf_threshold=args.conf,
        iou_threshold=args.iou,
        precision=args.precision,
        workspace_mb=args.workspace_mb,
        calibration_images=args.calibration_images,
        frames_in_flight=in_flight,
        batch=getattr(args, "batch", 1),  # the server's cameras may share a batch
        cameras=len(getattr(args, "source", ())) or 1,
        classes=listed_names(args.classes),
    )
    if in_flight > 1 and detector.engine.frames_in_flight != in_flight:
        log.warning("--frames-in-flight %d is for ONNX Runtime; %s runs one frame at a time",
                    in_flight, detector.backend)
    return detector


def add_serve_options(parser):
    group = parser.add_argument_group("server (each also read from $STREAMDETECT_<OPTION>)")
    group.add_argument("--host", default=env("HOST", "0.0.0.0"), help="address to listen on (default %(default)s)")
    group.add_argument("--port", type=port_number, default=env("PORT", 8080), help="default %(default)s")
    add_source_options(group)
    add_pipeline_options(group)
    add_event_options(group)
    add_web_options(group)
    add_production_options(group)


def add_source_options(group):
    """What to read and how: --source, its capture size and rate, --flip, --loop."""
    group.add_argument("--source", action=AddCameras, default=environment_sources(),
                       metavar="[NAME=]URI",
                       help="0 or /dev/videoN (USB camera; also by a name udev keeps across replugging, "
                            "/dev/v4l/by-id/...), csi://0 (Jetson CSI camera), rtsp://... or "
                            "http://... (network stream, or a camera's snapshot URL), a video file, a folder of "
                            "images and videos, or test:// "
                            "(synthetic scene). auto: the first USB camera (by its by-id name), else test:// "
                            "(default auto). Repeat it for several cameras, each named: --source "
                            "door=/dev/video0 --source yard=csi://0 (in $STREAMDETECT_SOURCE separated by "
                            "spaces); they share one model, and the options below apply to each")
    group.add_argument("--width", type=ranged(*CAPTURE_LIMITS["width"]), default=env("WIDTH", 640),
                       help="capture width asked of cameras; a larger frame, of any source but test://, is "
                            "shown scaled down to fit --width x --height (default %(default)s)")
    group.add_argument("--height", type=ranged(*CAPTURE_LIMITS["height"]), default=env("HEIGHT", 480),
                       help="capture height asked of cameras (default %(default)s)")
    group.add_argument("--fps", type=ranged(*CAPTURE_LIMITS["fps"]), default=env("FPS", 30),
                       help="capture rate asked of cameras and test:// (default %(default)s)")
    flips = sorted(FLIPS)
    group.add_argument("--flip", choices=flips, type=one_of(flips), default=env("FLIP", "none"),
                       help="turn each frame before detection, for a camera mounted upside down "
                            "(rotate-180) or sideways, or a mirror view (horizontal); a CSI camera "
                            "turns it in hardware (default %(default)s)")
    group.add_argument("--loop", action="store_true", default=env_switch("LOOP"),
                       help="repeat a video file without end (else it plays when its first viewer comes, "
                            "and again for one who joins after its end)")


def environment_sources():
    """--source's default: the cameras of $STREAMDETECT_SOURCE (else auto), as a tuple of
    (name, uri); a bad name there is argparse's kind of one-line error, as env_switch's."""
    text = env("SOURCE", "auto")
    try:
        return tuple((name, os.path.expanduser(uri)) for name, uri in named_sources(text))
    except ValueError as exc:
        print("python app.py: error: {} (in $STREAMDETECT_SOURCE)".format(exc), file=sys.stderr)
        sys.exit(2)


class AddCameras(argparse.Action):
    """--source, repeatable: the cameras given on the command line replace those of
    $STREAMDETECT_SOURCE (the default, a tuple), and each has a name of its own."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest)
        given = [] if isinstance(given, tuple) else given
        try:
            added = named_sources(values, [name for name, _ in given])
        except ValueError as exc:
            raise argparse.ArgumentError(self, str(exc))
        setattr(namespace, self.dest, given + [(name, os.path.expanduser(uri)) for name, uri in added])


def add_event_options(group):
    """Tracking, and the events of tracked objects over MQTT."""
    group.add_argument("--track-timeout", type=ranged(float, 0.0), default=env("TRACK_TIMEOUT", 1.0),
                       metavar="SECONDS", help="an object unseen for this long has left: its end event is sent "
                                               "(default %(default)s)")
    group.add_argument("--mqtt", type=mqtt_url, default=env("MQTT", None),
                       metavar="mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX]",
                       help="publish tracked objects' events and counts to this MQTT broker (mqtts:// for TLS "
                            "with the system's CAs; port 1883, prefix streamdetect by default), with Home "
                            "Assistant's discovery; the stream goes on while the broker is down")
    group.add_argument("--no-ha-discovery", action="store_true", default=env_switch("NO_HA_DISCOVERY"),
                       help="--mqtt: do not announce the count sensors to Home Assistant")


def mqtt_url(text):
    """--mqtt: a broker's URL, checked now (its password never shown)."""
    try:
        BrokerAddress(text)
    except ServerSetupError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1] + (
            " (in ${})".format(text.variable) if isinstance(text, FromEnvironment) else ""))
    return str(text)


def add_pipeline_options(group):
    """How the pipeline runs: JPEG quality, viewers, pauses, hangs, frames in flight."""
    group.add_argument("--jpeg-quality", type=ranged(int, 1, 100), default=env("JPEG_QUALITY", 80),
                       help="stream JPEG quality 1-100 (default %(default)s)")
    group.add_argument("--max-viewers", type=count, default=env("MAX_VIEWERS", 100),
                       help="refuse stream viewers (/video_feed, /api/events) beyond this many with 503; 0 = no limit "
                            "(default %(default)s)")
    group.add_argument("--idle-stop", type=ranged(float, 0.0), default=env("IDLE_STOP", 0), metavar="SECONDS",
                       help="pause capture and inference after this long without viewers; 0 = never "
                            "(default %(default)s)")
    group.add_argument("--exit-on-hang", type=ranged(float, 0.0), default=env("EXIT_ON_HANG", 60), metavar="SECONDS",
                       help="end the server (exit status 3) when a live source has given no frame for this long "
                            "without failing, its opening has not returned, or an inference has not: a driver "
                            "call that never returns holds the camera or GPU until the process ends. Under "
                            "--production uWSGI starts a new worker at once; otherwise a supervisor (Docker's "
                            "--restart, systemd's Restart=) must start it again. 0 = keep waiting (default "
                            "%(default)s)")
    group.add_argument("--frames-in-flight", type=count, default=env("FRAMES_IN_FLIGHT", 0), metavar="N",
                       help="frames inferred at once by ONNX Runtime on the CPU, each on its share of "
                            "the cores; 2 gives more FPS than 1 (no cores wait for each other) at "
                            "about twice the latency; 0 = 2 where there are 2 cores or more "
                            "(default %(default)s)")
    group.add_argument("--batch", type=count, default=env("BATCH", 0), metavar="N",
                       help="with several cameras, infer up to N of their frames in one run, where the model's "
                            "batch dimension is symbolic (the zoo's is); 0 = one per camera on a GPU (TensorRT "
                            "builds its engine for 1 to N), 1 on the CPU, where a batch is no faster "
                            "(default %(default)s)")


def add_web_options(group):
    """What the web server allows its clients."""
    group.add_argument("--client-timeout", type=ranged(int, 1), default=env("CLIENT_TIMEOUT", 30), metavar="SECONDS",
                       help="let a viewer go whose connection has taken nothing for this long (a frozen or "
                            "vanished client), freeing its place (default %(default)s)")
    group.add_argument("--max-upload-mb", type=ranged(float, 0.01), default=env("MAX_UPLOAD_MB", 10),
                       help="largest /api/detect upload in MB (default %(default)s)")
    group.add_argument("--cors-origins", type=origins, default=env("CORS_ORIGINS", None), metavar="ORIGIN,ORIGIN",
                       help="web pages of these origins (https://dash.example:3000, or * for any) may call "
                            "the API from a browser; a token goes in their Authorization header "
                            "(default: none, same origin only)")
    group.add_argument("--max-upload-pixels", type=ranged(int, 1), default=env("MAX_UPLOAD_PIXELS", 40000000),
                       help="largest /api/detect image in pixels (default %(default)s)")


def add_production_options(group):
    """--production, and the settings of its uWSGI and nginx."""
    group.add_argument("--production", action="store_true",
                       help="serve through uWSGI behind nginx (both started here, stopped on SIGTERM "
                            "or Ctrl-C) instead of the development server")
    group.add_argument("--per-client-limit", type=ranged(int, 1), default=env("PER_CLIENT_LIMIT", 32),
                       help="--production: nginx's limit of connections per client address "
                            "(default %(default)s)")
    group.add_argument("--stats-port", type=port_number, default=env("STATS_PORT", 9191),
                       help="--production: uWSGI stats server port on 127.0.0.1 (default %(default)s)")
    group.add_argument("--tls-cert", type=os.path.expanduser, default=env("TLS_CERT", None),
                       help="--production: certificate file; adds an HTTPS + HTTP/2 listener")
    group.add_argument("--tls-key", type=os.path.expanduser, default=env("TLS_KEY", None),
                       help="--production: its key file")
    group.add_argument("--tls-port", type=port_number, default=env("TLS_PORT", 8443),
                       help="--production: HTTPS port (default %(default)s)")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), choices=LOG_LEVELS, type=one_of(LOG_LEVELS),
                        help="default %(default)s; DEBUG also shows OpenCV's own messages")
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="Live object detection (Tiny YOLOv2) streamed to browsers. With no command, "
                    "'serve' runs with the options given.",
        epilog="Each command has its own --help. Settings can also come from the environment: "
               "--source as STREAMDETECT_SOURCE, --max-viewers as STREAMDETECT_MAX_VIEWERS, and so on. "
               "STREAMDETECT_TOKEN, when set, is required by every route but /healthz.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_command(commands, common)
    add_detect_command(commands, common)
    add_model_commands(commands, common)
    add_compare_command(commands, common)
    add_evaluate_command(commands, common)
    for command in commands.choices.values():  # whose usage a mistyped option is shown with
        command.set_defaults(command_parser=command)
    return parser


def add_serve_command(commands, common):
    serve = commands.add_parser(
        "serve", parents=[common], help="stream live detections to browsers (the default)",
        description="Run the web server: / (live page), /video_feed (MJPEG stream), /snapshot.jpg, "
                    "/api/stats, /api/detections, /api/events (detections as server-sent events), "
                    "/api/detect (POST an image), /upload, /healthz, "
                    "/metrics.")
    add_serve_options(serve)
    add_model_options(serve)


def add_detect_command(commands, common):
    detect = commands.add_parser(
        "detect", parents=[common], help="detect objects in images and videos, print one JSON line per picture",
        description="Detect objects in images and videos. Prints one JSON object per image or video "
                    "frame (image, width, height, backend, inference_ms, detections; a frame adds "
                    "frame and time) and writes annotated copies with --out (a video's as an MJPG "
                    ".avi). A folder stands for its images and videos, in name order; - for a picture piped in "
                    "(curl -s http://camera/snapshot.jpg | python app.py detect -). Unreadable files "
                    "are reported on stderr and make the exit status 1.")
    detect.add_argument("images", nargs="+", metavar="FILE|FOLDER|-", help="- reads one picture from standard input")
    detect.add_argument("--out", type=os.path.expanduser, metavar="DIR", help="write annotated copies here")
    add_model_options(detect)


def add_model_commands(commands, common):
    """fetch-model, build-engine and check: the model's files and what this machine offers."""
    fetch = commands.add_parser(
        "fetch-model", parents=[common], help="download and verify the model, print its path",
        description="Download a named model into the cache ($STREAMDETECT_HOME, else "
                    "$XDG_CACHE_HOME/streamdetect), verify its SHA-256 and print its path.")
    fetch.add_argument("--model", type=os.path.expanduser, default=env("MODEL", DEFAULT_MODEL),
                       help="model name (default %(default)s)")

    build = commands.add_parser(
        "build-engine", parents=[common], help="build and cache the TensorRT engine ahead of time",
        description="Build the TensorRT engine for the model (minutes on a Jetson Nano) into the cache "
                    "($STREAMDETECT_HOME/engines) and print its path. The server then starts at once.")
    add_model_options(build)
    build.add_argument("--batch", type=count, default=env("BATCH", 1), metavar="N",
                       help="build for batches of 1 to N frames, as a server of N cameras uses (or its --batch "
                            "N), where the model's batch dimension is symbolic; 0 or 1: one frame "
                            "(default %(default)s)")

    commands.add_parser(
        "check", parents=[common], help="show what this machine offers and what auto will use",
        description="Print Python, OpenCV (and its GStreamer support), the inference backends and why "
                    "each can or cannot run, CUDA devices, cameras, what --backend auto and "
                    "--source auto will pick, and whether the model is downloaded (and intact).")


def add_compare_command(commands, common):
    compare = commands.add_parser(
        "compare", parents=[common], conflict_handler="resolve",  # its --precision takes a list
        help="run the model on each backend and precision and compare them",
        description="Run one model on each available backend, in each --precision, over a few images (a "
                    "folder: its images; default: test:// frames): median inference time, the largest "
                    "raw-output difference from the first row, whether the detections are the same, and "
                    "with --dataset each row's mAP@0.5. Exit status 1 if the detections differ.")
    compare.add_argument("images", nargs="*", metavar="IMAGE|FOLDER")
    compare.add_argument("--backends", help="comma-separated, in order (default: all available)")
    compare.add_argument("--frames", type=ranged(int, 1), default=5,
                         help="test:// frames without images (default %(default)s)")
    compare.add_argument("--repeat", type=ranged(int, 1), default=5, help="timed runs per image (default %(default)s)")
    compare.add_argument("--json", action="store_true", help="print one JSON object per row: backend, precision, "
                                                            "median_ms, max_abs_diff, same_detections, map50")
    add_model_options(compare)
    compare.add_argument("--precision", type=precisions, default=env("PRECISION", "auto"), metavar="P,P",
                         help="precisions to compare, in order: auto, fp32, fp16, int8 (default %(default)s)")
    compare.add_argument("--dataset", type=os.path.expanduser, metavar="DATASET",
                         help="a labelled dataset (as for evaluate) on which each row's mAP@0.5 is measured")


def precisions(text):
    """compare --precision fp32,int8: each one of PRECISIONS."""
    for name in listed_names(text):
        one_of(PRECISIONS)(name)
    if not listed_names(text):
        raise argparse.ArgumentTypeError("give one or more of {}".format(", ".join(PRECISIONS)))
    return ",".join(listed_names(text))


def add_evaluate_command(commands, common):
    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="measure the model on labelled pictures: AP per class, mAP",
        description="Run the model over a labelled dataset and print, per class, AP@0.5 and AP@[.5:.95] as COCO "
                    "defines them (101-point interpolation, up to 100 detections per picture and class, "
                    "all sizes), and their means over the classes that have labelled objects. DATASET is "
                    "a Pascal VOC folder (Annotations/*.xml and JPEGImages/; difficult objects ignored), a "
                    "folder of pictures with YOLO .txt labels beside them (class index, then the box's "
                    "normalised centre and size), or a COCO .json file (--images: its pictures' folder). "
                    "The detections are those detect gives with the same options, at --conf 0.001 unless "
                    "given. Pictures that cannot be read are reported and left out.")
    evaluate.add_argument("dataset", metavar="DATASET")
    evaluate.add_argument("--images", type=os.path.expanduser, metavar="DIR",
                          help="a COCO file's pictures (default: the file's folder)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object: map50, map, per_class "
                                                             "({label: {ap50, ap, objects}}), images, backend, "
                                                             "precision, model")
    add_model_options(evaluate)
    evaluate.set_defaults(conf=EVALUATE_CONF)


def settings_from_env():
    """The `serve` settings as $STREAMDETECT_* variables give them (uWSGI passes no argv)."""
    settings = build_parser().parse_args(["serve"])
    refuse_unknown_environment_settings()
    return settings


def refuse_unknown_environment_settings():
    """Exit with argparse's kind of one-line error on a $STREAMDETECT_* variable that is no
    setting: `-e STREAMDETECT_SOUCRE=rtsp://...` would otherwise stream another source. Called
    after build_parser(), which names the settings."""
    for variable in sorted(os.environ):
        name = variable[len("STREAMDETECT_"):]
        if variable.startswith("STREAMDETECT_") and name not in ENVIRONMENT_SETTINGS:
            meant = slip_for(name, sorted(ENVIRONMENT_SETTINGS))
            print("python app.py: error: ${} is no setting{}; the settings are the options of `python app.py "
                  "serve --help`, as $STREAMDETECT_MAX_VIEWERS for --max-viewers".format(
                      variable, " (did you mean $STREAMDETECT_{}?)".format(meant) if meant else ""),
                  file=sys.stderr)
            sys.exit(2)
