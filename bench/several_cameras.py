"""(9) three cameras on one server: their inferences and published frames against bare
inference, the fairness of their shares, and batching on ONNX Runtime; (10) the server's
memory with one camera and with three."""
import math
import threading
import time

import numpy as np

from clients import process_usage, watch_many
from get_engine import create_engine
from measure import inference_rate, wait_until_idle
from streaming import Server

NAMES = ("a", "b", "c")


def cameras_server(model_path, source_fps, names, *options):
    """The development server with a test:// camera of each name at `source_fps`, paused
    without viewers (--idle-stop), so that bare inference can run between rounds."""
    sources = ["--source={}=test://?fps={}".format(name, source_fps) for name in names]
    return Server("serve", *sources, "--model", model_path, "--backend", "onnxruntime", "--idle-stop", "0.5",
                  "--log-level", "WARNING", *options)


def watch_cameras(server, names, seconds):
    """One viewer per camera for `seconds` (after a second's warm-up); {name: (inferred,
    published) per second} from the server's counters over those seconds."""
    viewers = [threading.Thread(target=watch_many, args=(server.port, 1, seconds + 0.5),
                                kwargs={"path": "/cameras/{}/video_feed".format(name), "warmup": 1.0})
               for name in names]
    for viewer in viewers:
        viewer.start()
    time.sleep(1.0)
    before, started = server.stats()["cameras"], time.time()
    time.sleep(seconds)
    after, elapsed = server.stats()["cameras"], time.time() - started
    for viewer in viewers:
        viewer.join()
    return {name: tuple((after[name][key] - before[name][key]) / elapsed
                        for key in ("frames_inferred", "frames_published")) for name in names}


def bench_cameras(results, model_path, seconds, rounds):
    """(9) rounds of: bare inference, one camera, three cameras at one frame a call, three at a
    batch of three; the sources together a quarter faster than bare inference, so that
    inference is the bound. (10) RSS of a one-camera and a three-camera server after their
    rounds, the same model, the same frames."""
    engine = create_engine(model_path, "onnxruntime", frames_in_flight=0)
    bare = inference_rate(engine, seconds)[0]
    source_fps = int(max(10, math.ceil(1.25 * bare / len(NAMES))))
    servers = {"one": cameras_server(model_path, max(60, math.ceil(1.25 * bare)), NAMES[:1]),
               "three": cameras_server(model_path, source_fps, NAMES),
               "batch": cameras_server(model_path, source_fps, NAMES, "--batch", "3")}
    measured = {name: [] for name in servers}
    bare_rates = []
    with servers["one"], servers["three"], servers["batch"]:
        for _ in range(rounds):
            for server in servers.values():
                wait_until_idle(server)
            bare_rates.append(inference_rate(engine, seconds)[0])
            for name, server in servers.items():
                measured[name].append(watch_cameras(server, NAMES if name != "one" else NAMES[:1], seconds))
        for server in servers.values():
            wait_until_idle(server)
        bare_rates.append(inference_rate(engine, seconds)[0])
        memory = {name: process_usage(server.process.pid)[0] / 1e6 for name, server in servers.items()}
    engine.close()
    add_rows(results, source_fps, measured, bare_rates, memory, rounds)


def add_rows(results, source_fps, measured, bare_rates, memory, rounds):
    bare_around = (np.array(bare_rates[:-1]) + np.array(bare_rates[1:])) / 2

    def totals(name, column):
        return np.array([sum(rates[column] for rates in round_.values()) for round_ in measured[name]])
    inferred, published = totals("three", 0), totals("three", 1)
    title = "(9) 3 cameras, test:// 640x480 @{} each, 1 viewer each / bare, median of {} alternating rounds".format(
        source_fps, rounds)
    for what, rates, goal in (("inferences", inferred, 0.9), ("published frames", published, 0.95)):
        ratios = rates / bare_around
        results.add("{}: {}".format(title, what), "{:.1f} / {:.1f} = {:.3f} (rounds {:.2f}-{:.2f})".format(
            np.median(rates), np.median(bare_rates), np.median(ratios), ratios.min(), ratios.max()),
            ">= {}".format(goal), np.median(ratios) >= goal)
    shares = np.array([[rates[0] for rates in round_.values()] for round_ in measured["three"]])
    fairness = shares.min(axis=1) / shares.max(axis=1)
    results.add("(9) fairness: least / most camera's inferences per round", "{:.2f} (rounds {:.2f}-{:.2f})".format(
        np.median(fairness), fairness.min(), fairness.max()), ">= 0.8", np.median(fairness) >= 0.8)
    batched = totals("batch", 0) / inferred
    results.add("(9) ONNX Runtime, batches of 3 / one frame a call (--batch 3 / 1), inferences",
                "{:.1f} / {:.1f} = {:.3f} (rounds {:.2f}-{:.2f})".format(
                    np.median(totals("batch", 0)), np.median(inferred), np.median(batched), batched.min(),
                    batched.max()))
    one = np.array([round_["a"][1] for round_ in measured["one"]]) / bare_around
    results.add("(9) 1 camera (its source a quarter faster than bare) in the same rounds: published / bare", "{:.3f} (rounds {:.2f}-{:.2f})".format(
        np.median(one), one.min(), one.max()), ">= 0.95", np.median(one) >= 0.95)
    ratio = memory["three"] / memory["one"]
    results.add("(10) server RSS, 3 cameras / 1 camera (same model)", "{:.1f} / {:.1f} MB = {:.2f}".format(
        memory["three"], memory["one"], ratio), "<= 1.5", ratio <= 1.5)
