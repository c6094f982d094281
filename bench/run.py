"""Benchmarks: one command, a table of figures next to their goals.

    python bench/run.py            # full run, rewrites the table in docs/benchmarks.md
    python bench/run.py --quick    # seconds: checks that every benchmark runs

Models are generated (the real Tiny YOLOv2 architecture, random weights), so
the figures are about speed, never accuracy. Ratios are measured in one run
on one machine, so they compare across machines where absolute times do not.
"""
import argparse
import itertools
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import data_processing  # noqa: E402
import onnx_models  # noqa: E402
from clients import cpu_seconds, descendants, process_usage, thread_cpu, watch_many  # noqa: E402
from drawing import jpeg_encoders  # noqa: E402
from get_engine import create_engine  # noqa: E402
from measure import inference_rate, own_cpu_seconds, random_blob, time_per_call, wait_until_idle  # noqa: E402
from mqtt_events import EventPublisher  # noqa: E402
from several_cameras import bench_cameras  # noqa: E402
from sources import CAPTURE_LIMITS  # noqa: E402
from sources.synthetic import SyntheticSource  # noqa: E402
from streaming import Server, free_port  # noqa: E402
from tracking import Tracker  # noqa: E402
from yolo_tool import VOC_ANCHORS, VOC_LABELS, Detection  # noqa: E402

TABLE = os.path.join(ROOT, "docs", "benchmarks.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


class Results(object):
    """Rows of (benchmark, figure, goal, met) printed as they come."""

    def __init__(self):
        self.rows = []

    def add(self, name, figure, goal="", met=None):
        verdict = "" if met is None else ("met" if met else "NOT met")
        self.rows.append((name, figure, goal, verdict))
        print("{:<58} {:>18}   {:<22} {}".format(name, figure, goal, verdict), flush=True)

    def markdown(self, header):
        lines = [header, "", "| benchmark | figure | goal | |", "|---|---:|---|---|"]
        lines += ["| {} | {} | {} | {} |".format(*row) for row in self.rows]
        return "\n".join(lines)


def bench_inference(results, model_path, seconds, rounds):
    """(1) bare inference FPS per engine (ONNX Runtime with one and with two frames at
    once, OpenCV DNN), the engines taking turns for `rounds` rounds: the machine's speed
    drifts over minutes, and one measurement per engine can fall in a slow spell."""
    engines = [create_engine(model_path, backend, **options) for backend, options in (
        ("onnxruntime", {"frames_in_flight": 1}), ("onnxruntime", {"frames_in_flight": 2}), ("opencv", {}))]
    measured = [[] for _ in engines]
    try:
        for _ in range(rounds):
            for engine, rates in zip(engines, measured):
                rates.append(inference_rate(engine, seconds))
    finally:
        for engine in engines:
            engine.close()
    for engine, rates in zip(engines, measured):
        fps, per_frame = np.array(rates).T
        results.add("(1) bare inference, {} ({}), median of {} rounds".format(engine.name, engine.detail, rounds),
                    "{:.1f} FPS (rounds {:.1f}-{:.1f}), {:.1f} ms per frame".format(
                        np.median(fps), fps.min(), fps.max(), np.median(per_frame) * 1000))


def calibration_folder(workdir):
    """test:// scenes to calibrate an INT8 model with."""
    folder = os.path.join(workdir, "calibration")
    os.makedirs(folder, exist_ok=True)
    source = SyntheticSource("test://")
    for number in range(20):
        cv2.imwrite(os.path.join(folder, "{:02d}.jpg".format(number)), source.scene(1000.0 + number * 0.9))
    return folder


def int8_options(workdir):
    """create_engine's options for ONNX Runtime INT8, cached where the servers started here look
    (their STREAMDETECT_HOME is the workdir's)."""
    return {"precision": "int8", "calibration_images": calibration_folder(workdir), "input_scale": 1.0,
            "cache_folder": os.path.join(os.environ["STREAMDETECT_HOME"], "engines")}


def bench_int8(results, model_path, seconds, rounds, workdir):
    """(8) ONNX Runtime's bare inference at INT8 against FP32, the two taking turns."""
    engines = [create_engine(model_path, "onnxruntime"), create_engine(model_path, "onnxruntime",
                                                                       **int8_options(workdir))]
    measured = [[], []]
    try:
        for _ in range(rounds):
            for engine, rates in zip(engines, measured):
                rates.append(inference_rate(engine, seconds)[0])
    finally:
        for engine in engines:
            engine.close()
    fp32, int8 = (float(np.median(rates)) for rates in measured)
    ratios = np.array(measured[1]) / np.array(measured[0])
    results.add("(8) bare inference, onnxruntime INT8 / FP32 ({}), median of {} alternating rounds".format(
        engines[1].detail, rounds), "{:.1f} / {:.1f} FPS = {:.2f}x (rounds {:.2f}-{:.2f})".format(
        int8, fp32, int8 / fp32, ratios.min(), ratios.max()), ">= 1.25x", int8 / fp32 >= 1.25)


def bench_postprocess(results, model_path, seconds):
    engine = create_engine(model_path, "onnxruntime")
    grid = engine.infer(random_blob(seed=1))
    per_call = time_per_call(lambda: data_processing.postprocess(grid, VOC_ANCHORS, (640, 480)), seconds)
    results.add("(5) post-processing per frame (decode + NMS, conf 0.5)", "{:.3f} ms".format(per_call * 1000),
                "<= 0.3 ms", per_call * 1000 <= 0.3)
    candidates = len(data_processing.decode_region(grid, VOC_ANCHORS, 0.05)[1])
    per_call = time_per_call(lambda: data_processing.postprocess(grid, VOC_ANCHORS, (640, 480), 0.05), seconds)
    results.add("post-processing at --conf 0.05 ({} candidates for NMS)".format(candidates),
                "{:.3f} ms".format(per_call * 1000))
    frame = np.random.RandomState(2).randint(0, 255, (480, 640, 3), dtype=np.uint8)
    per_call = time_per_call(lambda: data_processing.preprocess(frame, (416, 416)), seconds)
    results.add("pre-processing per 640x480 frame", "{:.3f} ms".format(per_call * 1000))


def bench_encoders(results, seconds):
    for width, height in ((640, 480), (1280, 720), (1920, 1080)):
        image = SyntheticSource("test://", width=width, height=height).scene(1000.0)
        figures = []
        for name, encode in sorted(jpeg_encoders().items()):
            per_call = time_per_call(lambda: encode(image, 80), seconds / 3.0)
            figures.append("{} {:.2f} ms".format(name, per_call * 1000))
        results.add("JPEG encode {}x{} (quality 80)".format(width, height), ", ".join(figures),
                    "fastest is used")


def bench_events(results, seconds):
    """(7) the event path of each frame in the pipeline's thread: tracking five moving objects
    and handing their events and counts to the MQTT publisher (whose own thread sends them)."""
    publisher = EventPublisher("mqtt://127.0.0.1/bench", {"camera": VOC_LABELS})
    tracker, frames = Tracker("camera", 1.0), itertools.count()

    def one_frame():
        number = next(frames)
        x = (number * 4) % 400
        detections = [Detection("person", 14, 0.8, [x + 120.0 * i, 100.0, x + 120.0 * i + 60, 260.0])
                      for i in range(5)]
        publisher.publish("camera", tracker.update(detections, number / 30.0, number), tracker.counts())
        if publisher._queue.full():  # no broker here: what its thread would have taken
            publisher._queue.queue.clear()
    per_frame = time_per_call(one_frame, seconds)
    results.add("(7) event path per frame: tracking 5 objects + handing events to MQTT",
                "{:.3f} ms".format(per_frame * 1000), "<= 0.3 ms", per_frame * 1000 <= 0.3)


class StageSampler(object):
    """The server's stage times (wait, inference, render) read every half second while
    viewers watch, for their means over the window: /api/stats averages only the
    last few frames, and one reading at the end can fall in a slow spell."""

    NAMES = ("wait_ms", "inference_ms", "render_ms")

    def __init__(self, server, delay, interval=0.5):
        self.server, self.delay, self.interval = server, delay, interval
        self.samples = []
        self.stats = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self):
        if self._done.wait(self.delay):
            return
        while not self._done.wait(self.interval):
            self._read()

    def _read(self):
        self.stats = self.server.stats()
        self.samples.append([self.stats[name] for name in self.NAMES])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        if not self.samples:  # a window shorter than the delay (--quick): one reading at its end
            self._read()


def stage_means(samplers):
    """{stage: mean ms} over every sample of `samplers`."""
    samples = np.array([sample for sampler in samplers for sample in sampler.samples])
    return dict(zip(StageSampler.NAMES, samples.mean(axis=0)))


def stream_server(model_path, source_fps, in_flight, *options):
    """The development server on test:// at `source_fps` with ONNX Runtime and
    `in_flight` frames at once (0: the server's default)."""
    return Server("serve", "--source", "test://?fps={}".format(source_fps), "--model", model_path,
                  "--backend", "onnxruntime", "--frames-in-flight", str(in_flight), "--log-level", "WARNING",
                  *options)


def bench_stream(results, model_path, seconds, rounds, in_flight=0, int8=None):
    """(2) one viewer on the development server against bare inference, with
    `in_flight` frames at once (0: the server's default); (4) capture-to-receipt
    latency in the same rounds.

    The source is a quarter faster than bare inference (at least 60 FPS), so that
    inference is the only bound: a fixed 60 FPS source capped the stream of a
    machine whose bare inference passed 60 FPS, and a much faster one would spend
    the cores on drawing frames that are dropped.

    Stream and bare inference alternate in `rounds` (the server pauses while no
    one watches: --idle-stop), and each stream is compared with the mean of the
    bare measurements just before and just after it, so that the machine's drift
    touches both alike; the ratio is the median of the rounds'. With `int8` (int8_options),
    the stream and bare inference both run the INT8 model."""
    engine = create_engine(model_path, "onnxruntime", frames_in_flight=in_flight, **(int8 or {}))
    source_fps = int(min(CAPTURE_LIMITS["fps"][2], max(60, math.ceil(1.25 * inference_rate(engine, seconds)[0]))))
    precision = ("--precision", "int8", "--calibration-images", int8["calibration_images"]) if int8 else ()
    with stream_server(model_path, source_fps, in_flight, "--idle-stop", "0.5", *precision) as server:
        bare_rates, stream_rates, latencies, samplers, cpu, client_cpu, elapsed = [], [], [], [], {}, 0.0, 0.0
        for _ in range(rounds):
            wait_until_idle(server)
            bare_rates.append(inference_rate(engine, seconds)[0])
            before, client_before, started = thread_cpu(server.process.pid), own_cpu_seconds(), time.time()
            with StageSampler(server, delay=1.0) as sampler:
                rates, round_latencies = watch_many(server.port, 1, seconds, warmup=1.0)
            samplers.append(sampler)
            after = thread_cpu(server.process.pid)
            elapsed += time.time() - started
            client_cpu += own_cpu_seconds() - client_before
            for name in after:
                cpu[name] = cpu.get(name, 0.0) + after[name] - before.get(name, 0.0)
            stream_rates.append(rates[0])
            latencies += round_latencies
        wait_until_idle(server)
        bare_rates.append(inference_rate(engine, seconds)[0])
    engine.close()
    bare_around = (np.array(bare_rates[:-1]) + np.array(bare_rates[1:])) / 2
    ratios = np.array(stream_rates) / bare_around
    ratio = float(np.median(ratios))
    setting = engine.detail.split(", ", 1)[-1] if engine.frames_in_flight > 1 else "1 frame at once"
    figure = "{:.1f} / {:.1f} = {:.3f} (rounds {:.2f}-{:.2f})".format(
        np.median(stream_rates), np.median(bare_rates), ratio, ratios.min(), ratios.max())
    title = "(2) stream FPS, 1 viewer, test:// 640x480 @{} / bare, {}{}, median of {} alternating rounds"
    if int8:
        results.add(title.replace("(2)", "(8)").format(source_fps, setting, ", INT8 / bare INT8", rounds), figure,
                    ">= 0.95", ratio >= 0.95)
        return
    if in_flight:  # an alternative setting, shown for its trade-off; the goal is the default's
        results.add(title.format(source_fps, setting, "", rounds), figure)
    else:
        results.add(title.format(source_fps, setting, " (default)", rounds), figure, ">= 0.95", ratio >= 0.95)
    shares = {name: seconds_used / elapsed * 100 for name, seconds_used in cpu.items()}
    shares["bench client"] = client_cpu / elapsed * 100
    results.add("(2) profile, {}: CPU % of a core by thread (2 cores = 200)".format(setting), ", ".join(
        "{} {:.0f}".format(name, share) for name, share in sorted(shares.items(), key=lambda i: -i[1])
        if share >= 0.5))
    add_latency(results, source_fps, latencies, samplers)


def bench_latency_at_30(results, model_path, seconds):
    """(4) from a 30 FPS source, with the default setting and with one frame at once."""
    for in_flight in (0, 1):
        with stream_server(model_path, 30, in_flight) as server:
            with StageSampler(server, delay=2.0) as sampler:
                _, latencies = watch_many(server.port, 1, seconds)
            add_latency(results, 30, latencies, [sampler])


def add_latency(results, source_fps, latencies, samplers):
    """(4) rows: capture-to-receipt percentiles against the mean inference time over
    the same window, and where a frame's time goes."""
    p50, p95 = np.percentile(np.array(latencies) * 1000, [50, 95])
    stages = stage_means(samplers)
    inference_ms = stages["inference_ms"]
    in_flight = samplers[-1].stats["frames_in_flight"]
    setting = "@{} FPS source, {} frame{} at once".format(source_fps, in_flight, "s" if in_flight > 1 else "")
    results.add("(4) latency {}: p50, p95 (inference {:.1f} ms per frame)".format(setting, inference_ms),
                "{:.1f}, {:.1f} ms = {:.2f} x inf".format(p50, p95, p95 / inference_ms),
                "p95 <= 1.5 x inference", p95 <= 1.5 * inference_ms)
    results.add("(4) where it goes {}: wait for the detector, inference, render".format(setting),
                "{:.1f} + {:.1f} + {:.1f} ms".format(stages["wait_ms"], stages["inference_ms"], stages["render_ms"]))


def command_line(pid):
    with open("/proc/{}/cmdline".format(pid), "rb") as handle:
        return handle.read()


def uwsgi_worker(pids):
    """The uWSGI worker: a uwsgi process whose parent is uwsgi too."""
    for pid in pids:
        with open("/proc/{}/stat".format(pid)) as handle:
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        if b"uwsgi" in command_line(pid) and parent in pids and b"uwsgi" in command_line(parent):
            return pid
    raise RuntimeError("no uWSGI worker among {}".format(pids))


def bench_production(results, model_path, seconds, rounds, churn_seconds):
    """(3) per-viewer FPS with 20 and 50 viewers through nginx + uWSGI, each against
    the mean of one viewer's just before and just after (the median of `rounds`);
    (6) memory under churn."""
    with Server("serve", "--production", "--source", "test://?fps=30", "--model", model_path,
                "--backend", "onnxruntime", "--stats-port", str(free_port()), "--per-client-limit", "256",
                "--max-viewers", "100", "--log-level", "WARNING") as stack:
        pids = [pid for pid in descendants(stack.process.pid) if pid != stack.process.pid]
        ratios, slowest, client_cpu = {20: [], 50: []}, {20: [], 50: []}, {20: 0.0, 50: 0.0}
        [single_before], _ = watch_many(stack.port, 1, seconds, warmup=1.0)
        for _ in range(rounds):
            for count in (20, 50):
                client_before, started = own_cpu_seconds(), time.time()
                rates, _ = watch_many(stack.port, count, seconds, warmup=1.0)
                client_cpu[count] += (own_cpu_seconds() - client_before) / (time.time() - started) * 100 / rounds
                [single_after], _ = watch_many(stack.port, 1, seconds, warmup=1.0)
                single = (single_before + single_after) / 2
                ratios[count].append(float(np.mean(rates)) / single)
                slowest[count].append(min(rates) / single)
                single_before = single_after
        for count in (20, 50):
            ratio = float(np.median(ratios[count]))
            results.add("(3) per-viewer FPS, {} viewers via nginx / 1 viewer, median of {} rounds (client CPU "
                        "{:.0f} %)".format(count, rounds, client_cpu[count]),
                        "{:.3f} (rounds {:.2f}-{:.2f}, slowest viewer {:.2f})".format(
                            ratio, min(ratios[count]), max(ratios[count]), min(slowest[count])),
                        ">= 0.95", ratio >= 0.95)
        bench_memory(results, stack, uwsgi_worker(pids), churn_seconds)


def bench_viewer_cost(results, seconds):
    """(3) CPU that one more viewer costs nginx + uWSGI, measured with a model so small
    that the CPU is not saturated (with the real one, inference takes what is left)."""
    with tempfile.TemporaryDirectory() as workdir:
        model_path = onnx_models.red_square(os.path.join(workdir, "red_square.onnx"))
        with Server("serve", "--production", "--source", "test://?fps=30", "--model", model_path,
                    "--stats-port", str(free_port()), "--per-client-limit", "256", "--max-viewers", "100",
                    "--log-level", "WARNING") as stack:
            pids = [pid for pid in descendants(stack.process.pid) if pid != stack.process.pid]
            servers = {"nginx": [pid for pid in pids if b"nginx" in command_line(pid)],
                       "uWSGI": [pid for pid in pids if b"uwsgi" in command_line(pid)]}
            cpu = {}
            for count in (1, 50):
                before, started = {name: cpu_seconds(group) for name, group in servers.items()}, time.time()
                watch_many(stack.port, count, seconds)
                cpu[count] = {name: (cpu_seconds(group) - before[name]) / (time.time() - started)
                              for name, group in servers.items()}
    extra = {name: (cpu[50][name] - cpu[1][name]) / 49 * 100 for name in servers}
    results.add("(3) server CPU per extra viewer at 30 FPS (50 vs 1 viewers)",
                "{:.2f} % of a core (nginx {:.2f}, uWSGI {:.2f})".format(sum(extra.values()), extra["nginx"],
                                                                         extra["uWSGI"]))


def bench_memory(results, stack, worker, churn_seconds):
    """(6) RSS, threads and descriptors of the uWSGI worker while viewers come and go."""
    import random
    import socket
    rng = random.Random(0)
    open_viewers = []
    started = time.time()
    early = None
    checkpoint = started + min(60.0, churn_seconds / 6.0)
    while time.time() - started < churn_seconds:
        now = time.time()
        while len(open_viewers) < 10:
            sock = socket.create_connection(("127.0.0.1", stack.port))
            sock.sendall(b"GET /video_feed HTTP/1.0\r\nHost: x\r\n\r\n")
            sock.setblocking(False)
            open_viewers.append((sock, now + rng.uniform(0.5, 5.0)))
        for sock, _ in open_viewers:
            try:
                while sock.recv(1 << 18):
                    pass
            except (BlockingIOError, ConnectionError):
                pass
        for sock, _ in [v for v in open_viewers if v[1] <= now]:
            sock.close()
        open_viewers = [v for v in open_viewers if v[1] > now]
        if early is None and now >= checkpoint:
            early = process_usage(worker)
        time.sleep(0.05)
    for sock, _ in open_viewers:
        sock.close()
    deadline = time.time() + 5
    while stack.stats()["viewers"] and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    late = process_usage(worker)
    growth = (late[0] - early[0]) / float(early[0])
    minutes = (checkpoint - started) / 60.0, churn_seconds / 60.0
    results.add("(6) worker RSS after {:.1f} vs {:.1f} min of churn".format(*minutes),
                "{:.1f} -> {:.1f} MB ({:+.1f} %)".format(early[0] / 1e6, late[0] / 1e6, growth * 100),
                "growth < 5 %", growth < 0.05)
    results.add("(6) worker threads, open descriptors (same times)",
                "{} -> {}, {} -> {}".format(early[1], late[1], early[2], late[2]), "no growth",
                late[1] <= early[1] and late[2] <= early[2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per benchmark, to check they run; the table untouched")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM, still stop the servers it started (their `with` blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit("stopped by SIGTERM"))
    seconds = 0.3 if args.quick else 5.0
    stream_seconds = 2.0 if args.quick else 20.0
    churn_seconds = 3.0 if args.quick else 600.0
    stream_rounds, viewer_rounds = (1, 1) if args.quick else (14, 6)
    results = Results()
    with tempfile.TemporaryDirectory() as workdir:
        model_path = onnx_models.tiny_yolov2(os.path.join(workdir, "tiny_yolov2.onnx"))
        bench_inference(results, model_path, seconds, stream_rounds // 2 or 1)
        bench_postprocess(results, model_path, seconds)
        bench_encoders(results, seconds)
        bench_events(results, seconds)
        bench_stream(results, model_path, seconds, stream_rounds)
        bench_stream(results, model_path, seconds, stream_rounds // 2 or 1, in_flight=1)
        os.environ["STREAMDETECT_HOME"] = os.path.join(workdir, "home")  # the INT8 model's cache, the servers' too
        bench_int8(results, model_path, seconds, stream_rounds // 2 or 1, workdir)
        bench_stream(results, model_path, seconds, stream_rounds // 2 or 1, int8=int8_options(workdir))
        bench_cameras(results, model_path, stream_seconds / 2, stream_rounds // 2 or 1)
        bench_latency_at_30(results, model_path, stream_seconds)
        bench_production(results, model_path, seconds, viewer_rounds, churn_seconds)
        bench_viewer_cost(results, stream_seconds)
    if not args.quick:
        header = "Measured {} on {} ({} cores, Python {}).".format(
            time.strftime("%Y-%m-%d"), platform.machine(), os.cpu_count(), platform.python_version())
        update_table(results.markdown(header))
    return 0


def update_table(table):
    with open(TABLE) as handle:
        text = handle.read()
    if START not in text or END not in text:
        raise SystemExit("{} has no {} ... {} markers for the table".format(TABLE, START, END))
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    with open(TABLE, "w") as handle:
        handle.write(before + START + "\n" + table + "\n" + END + after)
    print("docs/benchmarks.md table updated")


if __name__ == "__main__":
    sys.exit(main())
