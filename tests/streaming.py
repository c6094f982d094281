"""Helpers for tests and benchmarks that run the real server: start it, read
its multipart stream like a browser does and its events like a script does,
poll its JSON API."""
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `serve --production` needs both; tests of the production stack are skipped without them.
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # Debian's, where /usr/sbin is not on PATH
HAS_PRODUCTION_STACK = bool(shutil.which("uwsgi") and os.path.exists(NGINX))


def run_app(*args, **kwargs):
    """`python app.py ARGS...` run to its end: the CompletedProcess, output as text."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "app.py")] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120, **kwargs)


def wait_until(predicate, seconds):
    """predicate() once it holds, or after `seconds`."""
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.02)
    return predicate()


def red_square_scene():
    """A grey 320x240 picture with a red square, which the red-square test model calls an aeroplane."""
    import cv2
    import numpy as np
    scene = np.full((240, 320, 3), 90, np.uint8)
    cv2.rectangle(scene, (100, 60), (180, 160), (0, 0, 255), -1)  # red in BGR
    return scene


def write_clip(path, pictures, fps):
    """An MJPG video of `pictures` (BGR, all of one size) at `fps`."""
    import cv2
    writer = None
    for picture in pictures:
        if writer is None:
            height, width = picture.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
        writer.write(picture)
    writer.release()


def basic_auth(user, password):
    """The Authorization header of an HTTP Basic login."""
    import base64
    return {"Authorization": "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()}


@contextlib.contextmanager
def taken_port():
    """A loopback port that another program listens on while the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


@contextlib.contextmanager
def http_server(handler):
    """A threaded HTTP server of `handler` (a BaseHTTPRequestHandler class) on a loopback
    port while the block runs: (its base URL, the server)."""
    import http.server
    import socketserver

    class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True  # http.server.ThreadingHTTPServer, which Python 3.6 lacks

    server = ThreadingServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:{}".format(server.server_address[1]), server
    finally:
        server.shutdown()
        server.server_close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path, headers=None, timeout=10, method="GET", body=None):
    """(status, headers dict, body bytes) of one request; the body of a stream, which has no
    end, is left unread (b"")."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        streamed = response.getheader("Content-Type", "").startswith(("multipart/x-mixed-replace", "text/event-stream"))
        return response.status, dict(response.getheaders()), b"" if streamed else response.read()
    finally:
        conn.close()


def get_json(port, path, **kwargs):
    status, _, body = get(port, path, **kwargs)
    return status, json.loads(body.decode())


def read_events(port, count, path="/api/events", timeout=10):
    """(status, headers, events) of the first `count` server-sent events of `path`,
    each event (id, data parsed as JSON, seconds since the epoch at its receipt);
    the connection is closed after them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        events, fields = [], {}
        while response.status == 200 and len(events) < count:
            line = response.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if not line:  # an event ends; a comment alone (": ...") is none
                if "data" in fields:
                    events.append((int(fields["id"]), json.loads(fields["data"]), time.time()))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        return response.status, dict(response.getheaders()), events
    finally:
        conn.close()


class Server(object):
    """`python app.py ARGS...` on a free port, stopped on exit; entered once /healthz says 200
    (with healthy=False: once it answers at all, for a source that gives no frames)."""

    def __init__(self, *args, healthy=True, **env):
        self.port = free_port()
        self.args = list(args)
        self.healthy = healthy
        self.env = dict(os.environ, **env)
        self.process = None
        self.log_path = None

    def __enter__(self):
        import tempfile
        log = tempfile.NamedTemporaryFile(prefix="streamdetect-server-", suffix=".log", delete=False)
        self.log_path = log.name
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "app.py")] + self.args
            + ["--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        try:
            self.wait_healthy()
        except BaseException:  # not entered, so never exited: stop it here, or it outlives the tests
            self.__exit__()
            raise
        return self

    def wait_healthy(self, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited {}:\n{}".format(self.process.returncode, self.log()))
            try:
                if get(self.port, "/healthz", timeout=2)[0] == 200 or not self.healthy:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not healthy after {} s:\n{}".format(timeout, self.log()))

    def log(self, last=5000):
        """The server's output, its `last` characters (None: all)."""
        with open(self.log_path) as handle:
            text = handle.read()
        return text[-last:] if last else text

    def stats(self):
        return get_json(self.port, "/api/stats")[1]

    def stop(self):
        """SIGTERM to the server (SIGKILL after 10 s); nothing once it has ended."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def __exit__(self, *exc):
        self.stop()
        os.remove(self.log_path)


class Viewer(threading.Thread):
    """Reads /video_feed as a browser would and checks every part.

    `frames` counts the parts received; `bad` the parts that were not a whole
    JPEG or whose Content-Length was wrong; `latencies` the seconds from each
    frame's capture (X-Captured-At) to its receipt.
    """

    def __init__(self, port, path="/video_feed", headers=None, decode_every=0):
        super(Viewer, self).__init__()
        self.daemon = True
        self.port, self.path, self.headers = port, path, headers or {}
        self.decode_every = decode_every
        self.frames = 0
        self.bad = 0
        self.seqs = []
        self.latencies = []
        self.status = None
        self.error = None
        self.started_at = None
        self.closed_at = None
        self._closing = threading.Event()
        self.connected = threading.Event()
        self.conn = None

    def run(self):
        try:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.conn.request("GET", self.path, headers=self.headers)
            response = self.conn.getresponse()
            self.status = response.status
            self.content_type = response.getheader("Content-Type", "")
            self.connected.set()
            if response.status != 200:
                response.read()
                return
            boundary = b"--" + self.content_type.split("boundary=")[1].encode()
            assert response.readline().rstrip(b"\r\n") == boundary
            self.started_at = time.time()
            while not self._closing.is_set():
                headers = {}
                while True:
                    line = response.readline()
                    if not line:
                        return
                    line = line.rstrip(b"\r\n")
                    if not line:
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = response.read(int(headers["content-length"]))
                now = time.time()
                trailer = response.readline() + response.readline()
                if self._closing.is_set():
                    return  # a part that close() cut short is not the server's fault
                whole = body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9" and trailer == b"\r\n" + boundary + b"\r\n"
                if whole and self.decode_every and self.frames % self.decode_every == 0:
                    import cv2
                    import numpy as np
                    whole = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR) is not None
                self.frames += 1
                self.bad += 0 if whole and headers.get("content-type") == "image/jpeg" else 1
                self.seqs.append(int(headers.get("x-frame-seq", -1)))
                if "x-captured-at" in headers:
                    self.latencies.append(now - float(headers["x-captured-at"]))
        except Exception as exc:  # reported through .error, checked by the test
            if not self._closing.is_set():
                self.error = exc
        finally:
            self.connected.set()
            self.close()

    def close(self):
        self.closed_at = self.closed_at or time.time()
        self._closing.set()
        if self.conn is not None:
            try:
                self.conn.sock and self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()

    def rate(self):
        """Frames per second between the first part and close()."""
        if not self.started_at:
            return 0.0
        return self.frames / max((self.closed_at or time.time()) - self.started_at, 1e-6)


def stream_request(port, path, receive_buffer):
    """A socket that has asked for `path` with a receive buffer of `receive_buffer` bytes (the
    smaller, the sooner the server's writes block), to be read and closed by the caller."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".format(path).encode())
    return sock


def frozen_viewer(port, path="/video_feed"):
    """A client that asks for the stream and then takes nothing, as a frozen tab or a
    suspended laptop does: the socket, to be closed by the caller."""
    return stream_request(port, path, 4096)


class StreamCuttingProxy(object):
    """A TCP proxy in front of a server on `port` that can cut the connections carrying
    /video_feed while the server and the others go on, as a network does to a laptop that
    slept or a phone that changed networks. With `script_delay`, the page's scripts come that
    many seconds late, after its first picture, as they can on a slow link."""

    def __init__(self, port, script_delay=0.0):
        self.upstream_port = port
        self.script_delay = script_delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = "http://127.0.0.1:{}".format(self.listener.getsockname()[1])
        self.streams = []  # (browser side, server side) of each connection that asked for /video_feed
        self.streams_opened = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source, target, from_browser):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_browser and b"GET /video_feed" in data:
                    with self._lock:
                        self.streams.append((source, target))
                        self.streams_opened += 1
                if from_browser and b"GET /static/" in data:
                    time.sleep(self.script_delay)
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut_streams(self):
        with self._lock:
            cut, self.streams = self.streams, []
        for pair in cut:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.listener.close()


def slow_viewer_latencies(port, bytes_per_second, seconds, path="/video_feed"):
    """A viewer on a slow link: reads the stream at `bytes_per_second` for `seconds`, with a
    small receive buffer (as the link holds little). [(seconds since it began, the frame's
    age then from its X-Captured-At)] for each frame received."""
    sock = stream_request(port, path, 32768)
    received, unread, ages, started = 0, b"", [], time.time()
    with sock:
        while time.time() - started < seconds:
            chunk = sock.recv(8192)
            if not chunk:
                break
            received += len(chunk)
            unread += chunk
            end = 0
            for match in re.finditer(rb"X-Captured-At: ([0-9.]+)\r\n", unread):
                ages.append((time.time() - started, time.time() - float(match.group(1))))
                end = match.end()
            unread = unread[end:][-100:]  # enough for a header split between two reads
            time.sleep(max(0.0, received / bytes_per_second - (time.time() - started)))
    return ages


def requests_logged_around_polls(server):
    """Load a page, then ask what a live page polls and a health check asks (answered), one
    failing poll with an access token, and load a page again with one (in the URL, and as the
    user name of a login, "s3cret:"): the server's whole log, and the requests ("METHOD PATH
    PROTOCOL") logged from the first page load on."""
    get(server.port, "/upload?from=polls-test")
    for path in ("/api/stats", "/api/detections", "/healthz") * 3:
        assert get(server.port, path)[0] == 200
    assert get(server.port, "/api/stats?token=s3cret", method="POST")[0] == 405  # failing, with a token
    # an access token is not logged, nor one typed into a login prompt's user name field
    get(server.port, "/upload?to=polls-test&token=s3cret", headers=basic_auth("s3cret", ""))
    assert wait_until(lambda: '"GET /upload?to=polls-test&token=*** ' in server.log(), 5)
    log = server.log(last=None)
    assert '"GET /upload?from=polls-test' in log, "the first page load's line was overwritten"
    since = log.split('"GET /upload?from=polls-test', 1)[1]
    return log, [line.split('"')[1] for line in since.splitlines() if line.count('"') >= 2]


def wait_for_viewers(server, count, seconds):
    """The server's viewer count once it is `count`, or after `seconds`."""
    deadline = time.time() + seconds
    while server.stats()["viewers"] != count and time.time() < deadline:
        time.sleep(0.05)
    return server.stats()["viewers"]


def watch(port, count, seconds, **kwargs):
    """`count` viewers for `seconds`; returns them, closed."""
    viewers = [Viewer(port, **kwargs) for _ in range(count)]
    for viewer in viewers:
        viewer.start()
    for viewer in viewers:
        viewer.connected.wait(15)
    time.sleep(seconds)
    for viewer in viewers:
        viewer.close()
    for viewer in viewers:
        viewer.join(10)
    return viewers
