"""Tracked objects' events over MQTT, for Home Assistant, Node-RED and scripts: each event on
PREFIX/CAMERA/events, the count of each label in view on PREFIX/CAMERA/LABEL (retained),
PREFIX/available (online, or offline as the last will), and Home Assistant's discovery.

The broker may be down at the start or go at any time: the stream goes on, the client
reconnects with backoff, and events meanwhile are dropped and counted, never queued without
bound. paho-mqtt 1.6 (Python 3.6's last) and 2.x are both supported."""
import json
import logging
import queue
import ssl
import threading
import urllib.parse

from errors import ServerSetupError

log = logging.getLogger("streamdetect.mqtt")

DEFAULT_PORT, DEFAULT_TLS_PORT, DEFAULT_PREFIX = 1883, 8883, "streamdetect"
# Events waiting for the client while it is connected; beyond, they are dropped and counted.
QUEUED_EVENTS = 1000


class BrokerAddress(object):
    """--mqtt mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX] (mqtts:// for TLS) taken apart."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ServerSetupError("--mqtt {}: give mqtt://[USER:PASSWORD@]HOST[:PORT][/PREFIX] (mqtts:// for "
                                   "TLS)".format(shown_url(url)))
        try:
            port = parts.port
        except ValueError:
            raise ServerSetupError("--mqtt {}: the port is not a number from 1 to 65535".format(shown_url(url)))
        self.tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname, port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)
        self.user = urllib.parse.unquote(parts.username) if parts.username else None
        self.password = urllib.parse.unquote(parts.password) if parts.password else None
        self.prefix = parts.path.strip("/") or DEFAULT_PREFIX
        self.shown = shown_url(url)


def shown_url(url):
    """The URL as logs and stats show it: the password as ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="{}:***@{}".format(
        parts.username, parts.netloc.rpartition("@")[2])))


def new_client(paho, client_id):
    """A paho Client, of 2.x's current callback API where it is installed (1.x's is deprecated
    there); the callbacks below take the arguments of both."""
    version = getattr(paho, "CallbackAPIVersion", None)
    if version is not None:
        return paho.Client(version.VERSION2, client_id=client_id)
    return paho.Client(client_id=client_id)


class EventPublisher(object):
    """The MQTT client of one server: start(), then publish(camera, events, counts) from the
    pipeline (it never blocks), stop() at the end."""

    def __init__(self, url, labels_by_camera, discovery=True):
        self.address = BrokerAddress(url)
        self.labels_by_camera = labels_by_camera  # {camera: labels}, for discovery and counts of 0
        self.discovery = discovery
        self.connected = False
        self.events_sent = self.events_dropped = 0
        self._queue = queue.Queue(QUEUED_EVENTS)
        self._latest = {}  # (camera, label) -> objects in view now
        self._sent = {}  # (camera, label) -> the count last published
        self._lost_told = False
        self._stop = threading.Event()
        self._client = None
        self._thread = None

    def topic(self, *parts):
        return "/".join((self.address.prefix,) + parts)

    def start(self):
        import paho.mqtt.client as paho
        client = new_client(paho, "streamdetect-" + self.address.prefix)
        if self.address.user is not None:
            client.username_pw_set(self.address.user, self.address.password)
        if self.address.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)  # the system's CAs
        client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.on_connect, client.on_disconnect = self._connected, self._disconnected
        client.connect_async(self.address.host, self.address.port, keepalive=30)
        client.loop_start()  # paho's thread connects, reconnects with backoff, sends
        self._client = client
        self._thread = threading.Thread(target=self._send_loop, name="mqtt-events")
        self._thread.daemon = True
        self._thread.start()
        log.info("MQTT: publishing events to %s (topics under %s/)", self.address.shown, self.address.prefix)
        return self

    def stop(self):
        """Send what is queued (the end events of a stopping camera), say offline, disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        if self._client is not None:
            if self.connected:
                self._client.publish(self.topic("available"), "offline", qos=1, retain=True).wait_for_publish(2.0)
            self._client.disconnect()
            self._client.loop_stop()

    def publish(self, camera, events, counts):
        """Hand over one frame's events and the counts of each label in view; dropped (and
        counted) while the broker is away or the queue is full."""
        changed = False
        for label in self.labels_by_camera[camera]:
            if self._latest.get((camera, label)) != counts.get(label, 0):
                self._latest[(camera, label)], changed = counts.get(label, 0), True
        if not events and not changed:
            return
        try:
            self._queue.put_nowait((camera, events))
        except queue.Full:
            self.events_dropped += len(events)

    def stats(self):
        return {"broker": self.address.shown, "connected": self.connected, "events_sent": self.events_sent,
                "events_dropped": self.events_dropped}

    def _send_loop(self):
        """Publish what the pipeline handed over, until stopped and nothing is left."""
        while True:
            try:
                camera, events = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if not self.connected:
                self.events_dropped += len(events)
                continue
            for event in events:
                self._client.publish(self.topic(camera, "events"), json.dumps(event), qos=1)
                self.events_sent += 1
            self._send_counts(camera)

    def _send_counts(self, camera, every=False):
        """PREFIX/CAMERA/LABEL, retained, for each label whose count changed since it was sent."""
        for label in self.labels_by_camera[camera]:
            count = self._latest.get((camera, label), 0)
            if every or self._sent.get((camera, label)) != count:
                self._client.publish(self.topic(camera, label), str(count), qos=1, retain=True)
                self._sent[(camera, label)] = count

    def _connected(self, client, userdata, flags, rc, *properties):
        """rc: an int from paho 1.x, a ReasonCode (equal to its int) from 2.x."""
        if rc != 0:
            log.warning("MQTT: %s refused the connection (%s)", self.address.shown, rc)
            return
        self.connected = True
        log.info("MQTT: connected to %s", self.address.shown)
        self._lost_told = False
        client.publish(self.topic("available"), "online", qos=1, retain=True)
        if self.discovery:
            self._announce(client)
        for camera in self.labels_by_camera:  # what the broker kept may be stale
            self._send_counts(camera, every=True)

    def _disconnected(self, client, userdata, *details):
        """details: (rc) from paho 1.x, (flags, reason code, properties) from 2.x."""
        self.connected = False
        if not self._stop.is_set() and not self._lost_told:
            self._lost_told = True
            log.warning("MQTT: lost %s (%s); events are dropped until it is back, reconnecting",
                        self.address.shown, details[1] if len(details) == 3 else details[0])

    def _announce(self, client):
        """Home Assistant's MQTT discovery: a sensor per camera and label, its count."""
        for camera, labels in self.labels_by_camera.items():
            for label in labels:
                unique = "{}_{}_{}".format(self.address.prefix, camera, label).replace(" ", "_")
                config = {"name": "{} {}".format(camera, label), "unique_id": unique,
                          "state_topic": self.topic(camera, label), "unit_of_measurement": "objects",
                          "availability_topic": self.topic("available"), "icon": "mdi:eye",
                          "device": {"identifiers": ["{}_{}".format(self.address.prefix, camera)],
                                     "name": "streamdetect {}".format(camera), "manufacturer": "streamdetect"}}
                client.publish("homeassistant/sensor/{}/config".format(unique), json.dumps(config), qos=1,
                               retain=True)
