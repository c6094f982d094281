"""Tracked objects' events through a real MQTT broker (Debian's mosquitto, started here on a free
port): one new and one end per appearance, the count topic, Home Assistant's discovery, a broker
that goes away and comes back, and `available` at the end; under the development server and
under `serve --production`."""
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import cv2
import numpy as np
import pytest

from mqtt_events import new_client
from streaming import HAS_PRODUCTION_STACK, Server, free_port, get, get_json, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
pytestmark = pytest.mark.skipif(not os.path.exists(MOSQUITTO), reason="needs mosquitto (apt-get install mosquitto)")
PREFIX = "doorcam"


@contextlib.contextmanager
def broker(port=None):
    """A mosquitto on a loopback port while the block runs; yields its port."""
    port = port or free_port()
    folder = tempfile.mkdtemp()
    config = os.path.join(folder, "mosquitto.conf")
    with open(config, "w") as handle:
        handle.write("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n".format(port))
    process = subprocess.Popen([MOSQUITTO, "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _listening(port), 10), "mosquitto did not start"
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Subscriber(object):
    """Everything published under PREFIX/ and homeassistant/, as (topic, text, retained, time)."""

    def __init__(self, port):
        import paho.mqtt.client as paho
        self.messages = []
        self.lock = threading.Lock()
        self.client = new_client(paho, "test-subscriber-{}".format(time.time()))
        self.client.on_connect = lambda client, *_: client.subscribe([(PREFIX + "/#", 1), ("homeassistant/#", 1)])
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain), time.time()))

    def events(self):
        with self.lock:
            return [json.loads(text) for topic, text, _, _ in self.messages if topic == PREFIX + "/camera/events"]

    def values(self, topic):
        with self.lock:
            return [text for name, text, _, _ in self.messages if name == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def comings_and_goings(folder):
    """A slide show at 4 FPS where a red square, one cell of the model's grid (one object to it),
    shows for a quarter of each second."""
    square = np.full((416, 416, 3), 90, np.uint8)
    square[192:224, 192:224] = (0, 0, 255)
    cv2.imwrite(str(folder / "1.png"), square)
    for name in ("2.png", "3.png", "4.png"):
        cv2.imwrite(str(folder / name), np.full((416, 416, 3), 90, np.uint8))
    return str(folder)


def events_server(model, folder, port, *extra):
    return Server("serve", "--source", folder, "--fps", "4", "--model", model, "--track-timeout", "0.4",
                  "--mqtt", "mqtt://127.0.0.1:{}/{}".format(port, PREFIX), *extra)


def assert_one_new_and_one_end_per_appearance(events):
    by_id = {}
    for event in events:
        assert event["camera"] == "camera" and event["label"] == "aeroplane"
        by_id.setdefault(event["id"], []).append(event["type"])
    ended = [kinds for kinds in by_id.values() if kinds[-1] == "end"]
    assert len(ended) >= 2, by_id
    for kinds in ended:
        assert kinds[0] == "new" and kinds.count("new") == 1 and kinds.count("end") == 1, by_id


def test_each_appearance_is_one_new_and_one_end_and_the_count_goes_1_then_0(tmp_path, red_square_model):
    folder = comings_and_goings(tmp_path)
    with broker() as port:
        subscriber = Subscriber(port)
        try:
            with events_server(red_square_model, folder, port) as server:
                assert wait_until(lambda: len([e for e in subscriber.events() if e["type"] == "end"]) >= 3, 15)
                stats = get_json(server.port, "/api/stats")[1]
                detections = get_json(server.port, "/api/detections")[1]["detections"]
                log = server.log(None)
            assert_one_new_and_one_end_per_appearance(subscriber.events())
            counts = subscriber.values(PREFIX + "/camera/aeroplane")
            assert counts[:5] == ["0", "1", "0", "1", "0"], counts  # retained on connect, then each change
            assert subscriber.values(PREFIX + "/camera/person")[0] == "0"  # every label, 0 included
            config = json.loads(subscriber.values("homeassistant/sensor/doorcam_camera_aeroplane/config")[0])
            assert config["state_topic"] == PREFIX + "/camera/aeroplane"
            assert config["availability_topic"] == PREFIX + "/available"
            assert subscriber.values(PREFIX + "/available")[0] == "online"
            assert stats["mqtt"]["connected"] and stats["mqtt"]["events_sent"] >= 6
            assert all("id" in detection for detection in detections)
            assert "MQTT: connected to mqtt://127.0.0.1:{}/{}".format(port, PREFIX) in log
            assert wait_until(lambda: subscriber.values(PREFIX + "/available")[-1:] == ["offline"], 5)
        finally:
            subscriber.close()


def test_a_broker_that_goes_away_and_comes_back_costs_the_stream_nothing(tmp_path, red_square_model):
    """Down at the start, then up, down and up again: frames flow throughout, events during an
    outage are dropped (counted), one log line at each loss and return, events resume."""
    folder = comings_and_goings(tmp_path)
    port = free_port()
    with events_server(red_square_model, folder, port, "--log-level", "INFO") as server:
        assert get_json(server.port, "/healthz")[0] == 200 and not server.stats()["mqtt"]["connected"]
        for _ in range(2):
            with broker(port):
                subscriber = Subscriber(port)
                try:
                    assert wait_until(lambda: server.stats()["mqtt"]["connected"], 20)
                    assert wait_until(lambda: any(e["type"] == "end" for e in subscriber.events()), 10)
                finally:
                    subscriber.close()
            published = server.stats()["frames_published"]
            assert wait_until(lambda: not server.stats()["mqtt"]["connected"], 10)
            assert wait_until(lambda: server.stats()["mqtt"]["events_dropped"] > 0, 10)
            assert wait_until(lambda: server.stats()["frames_published"] > published + 4, 5)
            assert get_json(server.port, "/healthz")[0] == 200
        log = server.log(None)
        metrics = get(server.port, "/metrics")[2].decode()
    assert "streamdetect_mqtt_connected 0.0" in metrics and "streamdetect_mqtt_events_dropped_total" in metrics
    assert log.count("MQTT: lost mqtt://127.0.0.1:{}/{}".format(port, PREFIX)) == 2
    assert log.count("MQTT: connected to") == 2 and "Traceback" not in log


@pytest.mark.skipif(not HAS_PRODUCTION_STACK, reason="needs uwsgi (pip) and nginx (apt-get install nginx)")
def test_events_through_the_production_stack_and_offline_after_sigterm(tmp_path, red_square_model):
    folder = comings_and_goings(tmp_path)
    with broker() as port:
        subscriber = Subscriber(port)
        try:
            with events_server(red_square_model, folder, port, "--production", "--stats-port", str(free_port())):
                assert wait_until(lambda: len([e for e in subscriber.events() if e["type"] == "end"]) >= 2, 20)
            assert_one_new_and_one_end_per_appearance(subscriber.events())
            assert wait_until(lambda: subscriber.values(PREFIX + "/available")[-1:] == ["offline"], 10)
        finally:
            subscriber.close()


def test_a_broker_url_is_taken_apart_and_its_password_never_shown(capsys):
    from errors import ServerSetupError
    from mqtt_events import BrokerAddress
    from settings import build_parser
    address = BrokerAddress("mqtt://home:p%40ss@broker.local/frontdoor")
    assert (address.host, address.port, address.user, address.password, address.prefix, address.tls) == (
        "broker.local", 1883, "home", "p@ss", "frontdoor", False)
    assert address.shown == "mqtt://home:***@broker.local/frontdoor"
    secure = BrokerAddress("mqtts://broker.local")
    assert (secure.port, secure.prefix, secure.tls) == (8883, "streamdetect", True)
    with pytest.raises(ServerSetupError, match="give mqtt://"):
        BrokerAddress("http://broker.local")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--mqtt", "mqtt://home:s3cret@broker.local:70000"])
    said = capsys.readouterr().err
    assert "--mqtt: the port is not a number from 1 to 65535" in said and "s3cret" not in said


def test_several_cameras_publish_under_their_own_names(tmp_path, red_square_model):
    """Two cameras on one server: each its events, counts and Home Assistant sensors under its
    name; the one that never sees the square counts 0 and sends no event."""
    (tmp_path / "door").mkdir()
    (tmp_path / "yard").mkdir()
    door = comings_and_goings(tmp_path / "door")
    cv2.imwrite(str(tmp_path / "yard" / "empty.png"), np.full((416, 416, 3), 90, np.uint8))
    with broker() as port:
        subscriber = Subscriber(port)
        try:
            with Server("serve", "--source", "door=" + door, "--source", "yard=" + str(tmp_path / "yard"),
                        "--fps", "4", "--model", red_square_model, "--track-timeout", "0.4",
                        "--mqtt", "mqtt://127.0.0.1:{}/{}".format(port, PREFIX)):
                assert wait_until(lambda: subscriber.values(PREFIX + "/door/aeroplane")[:2] == ["0", "1"], 15)
                assert wait_until(lambda: subscriber.values(PREFIX + "/door/events"), 5)
            door_events = [json.loads(text) for text in subscriber.values(PREFIX + "/door/events")]
            assert door_events and {event["camera"] for event in door_events} == {"door"}
            assert subscriber.values(PREFIX + "/yard/events") == []
            assert set(subscriber.values(PREFIX + "/yard/aeroplane")) == {"0"}
            for camera in ("door", "yard"):
                config = json.loads(subscriber.values(
                    "homeassistant/sensor/{}_{}_aeroplane/config".format(PREFIX, camera))[0])
                assert config["state_topic"] == "{}/{}/aeroplane".format(PREFIX, camera)
        finally:
            subscriber.close()
