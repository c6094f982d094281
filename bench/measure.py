"""What the benchmarks measure with: time per call, bare inference, the benchmark
process's own CPU, and a server's pause for lack of viewers."""
import os
import threading
import time

import numpy as np


def time_per_call(function, seconds, min_calls=3):
    """Mean seconds per call of `function`, run for about `seconds`."""
    function()
    calls, started = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < seconds:
        function()
        calls += 1
    return (time.perf_counter() - started) / calls


def own_cpu_seconds():
    """CPU seconds this benchmark process (the viewers' client) has used."""
    times = os.times()
    return times.user + times.system


def random_blob(seed=0):
    """A model input of random pixels."""
    return (np.random.RandomState(seed).rand(1, 3, 416, 416) * 255).astype(np.float32)


def inference_rate(engine, seconds):
    """Frames per second of `engine` alone on the machine, with as many frames at once
    as the pipeline gives it (engine.frames_in_flight), and its mean time per frame."""
    blob = random_blob()
    engine.infer(blob)
    rates = []

    def caller():
        rates.append(1.0 / time_per_call(lambda: engine.infer(blob), seconds))
    callers = [threading.Thread(target=caller) for _ in range(engine.frames_in_flight)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    return sum(rates), float(np.mean([1.0 / rate for rate in rates]))


def wait_until_idle(server, timeout=10.0):
    """Until the server's pipeline has paused for lack of viewers (--idle-stop)."""
    deadline = time.time() + timeout
    while server.stats()["state"] != "idle":
        if time.time() > deadline:
            raise RuntimeError("the server did not pause without viewers:\n" + server.log())
        time.sleep(0.1)
    time.sleep(0.2)  # the inference under way when it paused
