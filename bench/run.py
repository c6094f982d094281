"""Benchmarks: one command, a table of figures next to their goals.

    python bench/run.py            # full run, rewrites the table in README.md
    python bench/run.py --quick    # seconds: checks that every benchmark runs

Models are generated (the real Tiny YOLOv2 architecture, random weights), so
the figures are about speed, never accuracy. Ratios are measured in one run
on one machine, so they compare across machines where absolute times do not.
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import data_processing  # noqa: E402
import onnx_models  # noqa: E402
from get_engine import create_engine  # noqa: E402
from yolo_tool import VOC_ANCHORS  # noqa: E402

README = os.path.join(ROOT, "README.md")
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


def time_per_call(function, seconds, min_calls=3):
    """Mean seconds per call of `function`, run for about `seconds`."""
    function()
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        function()
        calls += 1
    return (time.perf_counter() - started) / calls


def bench_inference(results, model_path, seconds):
    """Bare inference FPS per engine; returns {backend: fps}."""
    blob = (np.random.RandomState(0).rand(1, 3, 416, 416) * 255).astype(np.float32)
    fps = {}
    for backend in ("onnxruntime", "opencv"):
        engine = create_engine(model_path, backend)
        per_call = time_per_call(lambda: engine.infer(blob), seconds)
        fps[backend] = 1.0 / per_call
        results.add("bare inference, {} ({})".format(backend, engine.detail),
                    "{:.1f} ms = {:.1f} FPS".format(per_call * 1000, fps[backend]))
        engine.close()
    return fps


def bench_postprocess(results, model_path, seconds):
    engine = create_engine(model_path, "onnxruntime")
    frame_blob = (np.random.RandomState(1).rand(1, 3, 416, 416) * 255).astype(np.float32)
    grid = engine.infer(frame_blob)
    per_call = time_per_call(lambda: data_processing.postprocess(grid, VOC_ANCHORS, (640, 480)), seconds)
    results.add("post-processing per frame (decode + NMS, conf 0.5)", "{:.3f} ms".format(per_call * 1000),
                "<= 0.3 ms", per_call * 1000 <= 0.3)
    frame = np.random.RandomState(2).randint(0, 255, (480, 640, 3), dtype=np.uint8)
    per_call = time_per_call(lambda: data_processing.preprocess(frame, (416, 416)), seconds)
    results.add("pre-processing per 640x480 frame", "{:.3f} ms".format(per_call * 1000))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds per benchmark, to check they run; README untouched")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else 5.0
    results = Results()
    with tempfile.TemporaryDirectory() as workdir:
        model_path = onnx_models.tiny_yolov2(os.path.join(workdir, "tiny_yolov2.onnx"))
        bench_inference(results, model_path, seconds)
        bench_postprocess(results, model_path, seconds)
    if not args.quick:
        header = "Measured {} on {} ({} cores, Python {}).".format(
            time.strftime("%Y-%m-%d"), platform.machine(), os.cpu_count(), platform.python_version())
        update_readme(results.markdown(header))
    return 0


def update_readme(table):
    with open(README) as handle:
        text = handle.read()
    if START not in text or END not in text:
        raise SystemExit("README.md has no {} ... {} markers for the table".format(START, END))
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    with open(README, "w") as handle:
        handle.write(before + START + "\n" + table + "\n" + END + after)
    print("README.md table updated")


if __name__ == "__main__":
    sys.exit(main())
