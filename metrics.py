"""/metrics: each camera's stats and the objects in its view, in Prometheus' text format."""
import collections

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from camera import Camera


def prometheus_text(cameras):
    """The stats of `cameras` in Prometheus' text format, from a registry of our own; every
    series of one camera labelled camera="NAME"."""

    class StatsCollector(object):
        def collect(self):
            every = [(camera, camera.stats()) for camera in cameras]
            for family in camera_families(every):
                yield family
            stats = every[0][1]
            yield GaugeMetricFamily("streamdetect_uptime_seconds", "time since the pipeline started",
                                    value=stats["uptime"])
            if "mqtt" in stats:
                for family in mqtt_families(stats["mqtt"]):
                    yield family

    registry = CollectorRegistry()
    registry.register(StatsCollector())
    return generate_latest(registry)


def camera_families(every):
    """Each camera's counters, rates, times, viewers and state; and the objects it sees now.
    `every`: [(camera, its stats)]."""
    def family(kind, name, help_text, labels=()):
        return kind("streamdetect_" + name, help_text, labels=["camera"] + list(labels))
    # The stats each given as they are, by their names in /api/stats.
    as_given = {name: family(CounterMetricFamily, name, name.replace("_", " "))
                for name in ("frames_captured", "frames_decoded", "frames_inferred", "frames_dropped",
                             "frames_published", "reconnects")}
    as_given["fps"] = family(GaugeMetricFamily, "fps", "frames per second delivered to viewers")
    as_given["viewers"] = family(GaugeMetricFamily, "viewers", "viewers connected to /video_feed or /api/events")
    times = {name: family(GaugeMetricFamily, name + "_seconds", help_text + ", moving average")
             for name, help_text in TIMES}
    source_up = family(GaugeMetricFamily, "source_up", "1 while the source streams")
    # One series per state, 1 for the current one: a label that changed with the
    # state would end one series and begin another at every change.
    states = family(GaugeMetricFamily, "state", "the pipeline's state", ["state"])
    objects = family(GaugeMetricFamily, "objects", "objects of each class in the latest frame", ["label"])
    for camera, stats in every:
        name = camera.name
        for key, metric in as_given.items():
            metric.add_metric([name], stats[key])
        for key, metric in times.items():
            metric.add_metric([name], round(stats[key + "_ms"] / 1000.0, 6))
        source_up.add_metric([name], 1.0 if stats["state"] == "streaming" else 0.0)
        for state in Camera.STATES:
            states.add_metric([name, state], 1.0 if stats["state"] == state else 0.0)
        # Every class the server reports, 0 when absent: a series that vanished
        # could not be told from a stopped server in a graph or an alert.
        latest = camera.latest_frame()
        counts = collections.Counter(detection.label for detection in (latest.detections if latest else ()))
        for label in camera.detector.class_names() or camera.detector.labels:
            objects.add_metric([name, label], counts[label])
    return list(as_given.values()) + list(times.values()) + [source_up, states, objects]


# The moving averages of where a frame's time goes, as /api/stats names them without _ms.
TIMES = (("inference", "inference time per frame"), ("wait", "capture to start of inference"),
         ("render", "decoding, drawing and encoding"), ("latency", "capture to publication"))


def mqtt_families(mqtt):
    """The MQTT client's connection and its events sent and dropped (--mqtt)."""
    yield GaugeMetricFamily("streamdetect_mqtt_connected", "1 while connected to the MQTT broker",
                            value=1.0 if mqtt["connected"] else 0.0)
    yield CounterMetricFamily("streamdetect_mqtt_events_sent", "tracked objects' events published",
                              value=mqtt["events_sent"])
    yield CounterMetricFamily("streamdetect_mqtt_events_dropped", "events dropped while the broker was away",
                              value=mqtt["events_dropped"])
