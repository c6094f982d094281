"""/metrics: the pipeline's stats and the objects in view, in Prometheus' text format."""
import collections

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from camera import Camera


def prometheus_text(camera):
    """The stats in Prometheus' text format, from a registry of our own."""

    class StatsCollector(object):
        def collect(self):
            stats = camera.stats()
            for name in ("frames_captured", "frames_decoded", "frames_inferred", "frames_dropped",
                         "frames_published", "reconnects"):
                yield CounterMetricFamily("streamdetect_" + name, name.replace("_", " "), value=stats[name])
            yield GaugeMetricFamily("streamdetect_fps", "frames per second delivered to viewers", value=stats["fps"])
            for name, help_text in (("inference", "inference time per frame"),
                                    ("wait", "capture to start of inference"),
                                    ("render", "decoding, drawing and encoding"),
                                    ("latency", "capture to publication")):
                yield GaugeMetricFamily("streamdetect_{}_seconds".format(name), help_text + ", moving average",
                                        value=round(stats[name + "_ms"] / 1000.0, 6))
            yield GaugeMetricFamily("streamdetect_viewers", "viewers connected to /video_feed or /api/events",
                                    value=stats["viewers"])
            yield GaugeMetricFamily("streamdetect_uptime_seconds", "time since the pipeline started",
                                    value=stats["uptime"])
            yield GaugeMetricFamily("streamdetect_source_up", "1 while the source streams",
                                    value=1.0 if stats["state"] == "streaming" else 0.0)
            # One series per state, 1 for the current one: a label that changed with the
            # state would end one series and begin another at every change.
            states = GaugeMetricFamily("streamdetect_state", "the pipeline's state", labels=["state"])
            for state in Camera.STATES:
                states.add_metric([state], 1.0 if stats["state"] == state else 0.0)
            yield states
            # Every class the server reports, 0 when absent: a series that vanished
            # could not be told from a stopped server in a graph or an alert.
            counts = collections.Counter(detection.label for detection in camera.latest_frame().detections)
            objects = GaugeMetricFamily("streamdetect_objects", "objects of each class in the latest frame",
                                        labels=["label"])
            for label in camera.detector.class_names() or camera.detector.labels:
                objects.add_metric([label], counts[label])
            yield objects
            if "mqtt" in stats:
                for family in mqtt_families(stats["mqtt"]):
                    yield family

    registry = CollectorRegistry()
    registry.register(StatsCollector())
    return generate_latest(registry)


def mqtt_families(mqtt):
    """The MQTT client's connection and its events sent and dropped (--mqtt)."""
    yield GaugeMetricFamily("streamdetect_mqtt_connected", "1 while connected to the MQTT broker",
                            value=1.0 if mqtt["connected"] else 0.0)
    yield CounterMetricFamily("streamdetect_mqtt_events_sent", "tracked objects' events published",
                              value=mqtt["events_sent"])
    yield CounterMetricFamily("streamdetect_mqtt_events_dropped", "events dropped while the broker was away",
                              value=mqtt["events_dropped"])
