"""The production stack as deployed: nginx -> uWSGI -> app, started by
`python app.py serve --production`, on loopback with test:// and a generated model."""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from production import check_nginx_config, nginx_version, tls_listen, write_production_configs
from settings import build_parser
from streaming import HAS_PRODUCTION_STACK, NGINX, ROOT, Server, Viewer, free_port, frozen_viewer, get, get_json, \
    read_events, red_square_scene, requests_logged_around_polls, run_app, slow_viewer_latencies, taken_port, \
    wait_for_viewers, wait_until, watch, write_clip

pytestmark = pytest.mark.skipif(not HAS_PRODUCTION_STACK,
                                reason="needs uwsgi (pip) and nginx (apt-get install nginx)")
FPS = 20


def production(model, *extra):
    """--production with `extra` options; its source test:// unless they give one."""
    source = () if "--source" in extra else ("--source", "test://?fps={}".format(FPS))
    return Server("serve", "--production", *source, "--model", model, "--stats-port", str(free_port()),
                  "--per-client-limit", "64", *extra)


@pytest.fixture(scope="module")
def stack(red_square_model):
    with production(red_square_model, "--max-upload-mb", "1") as running:
        yield running


def test_twenty_viewers_get_what_one_viewer_gets(stack):
    def inferred_per_second_while(watching):
        before, started = stack.stats()["frames_inferred"], time.monotonic()
        viewers = watching()
        return viewers, (stack.stats()["frames_inferred"] - before) / (time.monotonic() - started)

    [single], single_inferred = inferred_per_second_while(lambda: watch(stack.port, 1, 5, decode_every=10))
    assert single.error is None and single.bad == 0 and single.rate() > FPS * 0.7

    many, many_inferred = inferred_per_second_while(lambda: watch(stack.port, 20, 10, decode_every=50))
    for viewer in many:
        assert viewer.error is None and viewer.status == 200 and viewer.bad == 0
        assert viewer.rate() >= 0.9 * single.rate(), (viewer.rate(), single.rate())
    assert many_inferred == pytest.approx(single_inferred, rel=0.10)


def test_viewers_that_come_and_go_do_not_disturb_the_others(stack):
    assert wait_for_viewers(stack, 0, 5) == 0
    [baseline] = watch(stack.port, 1, 4)
    steady = [Viewer(stack.port) for _ in range(5)]
    for viewer in steady:
        viewer.start()
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            viewer = Viewer(stack.port)
            viewer.start()
            time.sleep(0.7)
            viewer.close()
            viewer.join(5)
            time.sleep(0.2)

    churners = [threading.Thread(target=churn) for _ in range(5)]
    for thread in churners:
        thread.start()
    time.sleep(5)  # some 25 viewers come and go
    stop.set()
    for thread in churners:
        thread.join(10)
    assert wait_for_viewers(stack, 5, 3) == 5
    for viewer in steady:
        viewer.close()
    for viewer in steady:
        viewer.join(5)
        assert viewer.error is None and viewer.bad == 0
        assert viewer.rate() == pytest.approx(baseline.rate(), rel=0.10)
    assert wait_for_viewers(stack, 0, 3) == 0


def test_a_viewer_on_a_slow_link_sees_new_frames_through_nginx(stack):
    """As with the development server: at 2 Mbit/s, fresh frames, not seconds of old ones
    queued in nginx's and the kernel's buffers (5 s after 8 s, before they were bounded)."""
    ages = slow_viewer_latencies(stack.port, 250000, 9)
    late = [age for at, age in ages if at > 6]
    assert len(late) > 10 and max(late) < 2.5, ages[-5:]


def test_events_pass_through_nginx_as_they_happen(stack):
    """Server-sent events stream through nginx and uWSGI one by one: each arrives
    within half a second of its frame's capture."""
    status, headers, events = read_events(stack.port, 20)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream") and len(events) == 20
    delays = [received_at - record["captured_at"] for _, record, received_at in events]
    assert max(delays) < 0.5, delays


def test_uploads_through_nginx(stack):
    import cv2
    import numpy as np
    status, record = get_json(stack.port, "/api/detect", method="POST",
                              body=cv2.imencode(".jpg", red_square_scene())[1].tobytes())
    assert status == 200 and record["detections"][0]["label"] == "aeroplane"
    status, record = get_json(stack.port, "/api/detect", method="POST", body=np.random.bytes(1500000),
                              headers={"Content-Type": "application/octet-stream"})
    assert status == 413 and "larger than 1 MB" in record["error"]
    status, _, page = get(stack.port, "/")
    script = re.search(rb'<script src="(/static/live\.js\?v=[0-9a-f]{10})"', page).group(1).decode()
    status, headers, body = get(stack.port, script)  # as nginx serves it, an hour in the browser's cache
    assert status == 200 and b"api/stats" in body and headers["Cache-Control"] == "max-age=3600"
    # named by its content: after an upgrade, the page asks for the new script, not the cached one
    assert script.endswith("?v=" + hashlib.sha1(body).hexdigest()[:10])
    # the form's hint for scripts names the address the browser used, port included
    status, _, page = get(stack.port, "/upload")
    assert status == 200 and "http://127.0.0.1:{}/api/detect".format(stack.port).encode() in page
    form = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
            + np.random.bytes(1500000) + b"\r\n--b--\r\n")
    status, headers, page = get(stack.port, "/upload", method="POST", body=form,  # as a browser's form asks
                                headers={"Content-Type": "multipart/form-data; boundary=b", "Accept": "text/html"})
    assert status == 413 and b'<p class="error">upload is larger than 1 MB (--max-upload-mb)</p>' in page


def test_the_log_keeps_every_request_but_the_pages_polls(stack):
    """A live page asks two API routes every second: their answers would fill a device's
    disk with log lines. Other requests, and failures of those, are logged - and kept in a
    log file opened without appending, as the server's is here (and by `> server.log`)."""
    get(stack.port, "/upload?from=a-page", headers={"Referer": "http://host/?token=s3cret&fps=5"})
    log, requests = requests_logged_around_polls(stack)  # fails if nginx's first line was overwritten
    assert '"GET /upload?from=a-page HTTP/1.1" 200 ' in log and '"http://host/?token=***&fps=5"' in log
    assert "POST /api/stats?token=*** HTTP/1.1" in requests
    assert not [request for request in requests if request.startswith("GET /api/") or "/healthz" in request]
    assert "s3cret" not in log


def test_long_urls_are_answered_by_the_app_not_with_a_gateway_error(stack):
    """uWSGI's default 4 KB request buffer made nginx answer a 5,000-character URL with 502."""
    status, record = get_json(stack.port, "/api/stats?" + "x=1&" * 1500)
    assert status == 200 and record["state"] == "streaming"
    status, record = get_json(stack.port, "/" + "a" * 6000)
    assert status == 404 and "Not Found" in record["error"]
    status, _, _ = get(stack.port, "/" + "a" * 9000)  # beyond nginx's 8 KB request line
    assert status == 414


def test_chunked_uploads_through_nginx(stack):
    """curl -H 'Transfer-Encoding: chunked' and streaming clients send no Content-Length."""
    import cv2
    import numpy as np
    jpeg = cv2.imencode(".jpg", red_square_scene())[1].tobytes()
    status, record = get_json(stack.port, "/api/detect", method="POST", body=iter([jpeg[:1000], jpeg[1000:]]))
    assert status == 200 and record["detections"][0]["label"] == "aeroplane"
    for size in (1200000, 2500000):  # over the app's 1 MB; over nginx's limit (the app's + 1 MB)
        status, record = get_json(stack.port, "/api/detect", method="POST", body=iter([np.random.bytes(size)]),
                                  headers={"Content-Type": "application/octet-stream"})
        assert status == 413 and record["error"] == "upload is larger than 1 MB (--max-upload-mb)", size


def test_chromium_sees_the_stream_move_through_nginx(stack, tmp_path):
    import cv2
    import numpy as np
    from browser import chromium_page
    with chromium_page() as page:
        page.goto("http://127.0.0.1:{}/?token=s3cret".format(stack.port))  # (this server needs none)
        page.wait_for_function("document.getElementById('stream').naturalWidth > 0", timeout=15000)
        page.wait_for_function("document.getElementById('fps').textContent !== '…'", timeout=10000)
        assert "/video_feed?token=s3cret" in page.evaluate("document.getElementById('stream').src")
        stream = page.locator("#stream")
        first = tmp_path / "first.png"
        second = tmp_path / "second.png"
        stream.screenshot(path=str(first))
        time.sleep(1.0)
        page.screenshot(path=str(tmp_path / "page.png"))
        stream.screenshot(path=str(second))
    a, b = cv2.imread(str(first)), cv2.imread(str(second))
    assert a.shape == b.shape and a.shape[0] > 100
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0  # the scene moved
    # the FPS overlay: a black band with yellow text in the top-left corner of the stream
    band = a[: a.shape[0] // 12, : a.shape[1] // 3]
    yellow = (band[:, :, 2] > 150) & (band[:, :, 1] > 150) & (band[:, :, 0] < 100)
    assert yellow.sum() > 30
    # the token in the page's URL reaches the log neither in the URLs asked for nor as their Referer
    log = stack.log(last=None)
    assert '"GET /video_feed?token=***&viewer=' in log and "s3cret" not in log
    script_loads = [line for line in log.splitlines() if '"GET /static/live.js?v=' in line and "HeadlessChrome" in line]
    assert script_loads and all(' "-" "Mozilla/' in line for line in script_loads)  # the page sends no Referer
    if os.environ.get("KEEP_PAGE_SCREENSHOT"):
        shutil.copy(str(tmp_path / "page.png"), os.environ["KEEP_PAGE_SCREENSHOT"])


def test_a_client_over_its_connection_limit_gets_json(red_square_model):
    with production(red_square_model, "--per-client-limit", "2") as server:
        viewers = []

        def two_watching():
            """Start viewers until two are watching. The readiness polls of `production`
            count against the limit until nginx has finished with them, a moment after
            the answer: a viewer refused in that moment is replaced."""
            viewers[:] = [viewer for viewer in viewers if viewer.status != 503]
            while len(viewers) < 2:
                viewer = Viewer(server.port)
                viewer.start()
                viewer.connected.wait(5)
                viewers.append(viewer)
            return all(viewer.frames for viewer in viewers)
        try:
            # /api/stats would be the third connection: watch the viewers instead
            assert wait_until(two_watching, 10), [(viewer.status, viewer.error, viewer.frames) for viewer in viewers]
            status, record = get_json(server.port, "/api/stats")
            assert status == 503 and record["error"] == "too many connections from your address (--per-client-limit 2)"
        finally:
            for viewer in viewers:
                viewer.close()


def test_a_source_whose_read_never_returns_gets_a_new_worker(red_square_model):
    """uWSGI's master starts a new worker when the old one ends itself (--exit-on-hang): the
    camera is opened again in a new process, behind the same nginx."""
    source = "test://?fps={}&hang_after={}".format(FPS, FPS)
    with production(red_square_model, "--source", source, "--exit-on-hang", "1") as server:
        first = get_json(server.port, "/api/stats")[1]["started_at"]
        assert wait_until(lambda: get_json(server.port, "/api/stats")[1].get("started_at", first) != first, 30)
        assert wait_until(lambda: get_json(server.port, "/api/stats")[1].get("state") == "streaming", 20)
        assert server.process.poll() is None
        log = server.log(last=None)
        assert re.search(r"no frame from test://\?fps=\d+&hang_after=\d+ for \d+ s: a driver call that does not "
                         r"return holds the device", log)
        assert "Traceback" not in log


def test_a_frozen_viewer_is_let_go_after_the_client_timeout(red_square_model):
    """uWSGI's socket-timeout is --client-timeout: a client that takes nothing frees its
    thread and viewer's place once nginx's buffers and uWSGI's wait are spent."""
    with production(red_square_model, "--client-timeout", "2") as stack:
        frozen = frozen_viewer(stack.port)
        try:
            assert wait_for_viewers(stack, 1, 5) == 1
            assert wait_for_viewers(stack, 0, 20) == 0
        finally:
            frozen.close()


def test_a_video_file_waits_for_its_first_viewer_and_the_launcher_says_so(red_square_model, tmp_path):
    clip = str(tmp_path / "clip.avi")
    write_clip(clip, [red_square_scene()] * 15, 10)
    with production(red_square_model, "--source", clip) as server:
        assert wait_until(lambda: ":{}/ (idle: waiting for a viewer to play {})".format(server.port, clip)
                          in server.log(last=None), 10), server.log()
        time.sleep(1.0)
        assert server.stats()["frames_captured"] == 0
        [viewer] = watch(server.port, 1, 2.5)
        assert viewer.error is None and viewer.frames >= 14 and server.stats()["frames_captured"] == 15
        assert server.stats()["state"] == "ended"


def test_a_taken_port_is_named_before_anything_starts(red_square_model):
    with taken_port() as number:
        result = run_app("serve", "--production", "--model", red_square_model, "--source", "test://",
                         "--port", str(free_port()), "--stats-port", str(number))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot listen on 127.0.0.1:{} (Address already in use)".format(number) in result.stderr
    assert "Pass another --stats-port" in result.stderr and "starting uWSGI" not in result.stderr


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
def test_production_listens_on_the_address_given(red_square_model, host):
    """--host ADDRESS: nginx listens there (an IPv6 one in brackets), and the launcher asks
    for health there, so it starts the pipeline and says it is ready."""
    port = free_port()
    command = [sys.executable, os.path.join(ROOT, "app.py"), "serve", "--production", "--host", host,
               "--port", str(port), "--stats-port", str(free_port()), "--model", red_square_model,
               "--source", "test://"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               start_new_session=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()

    def healthy():
        connection = http.client.HTTPConnection(host, port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    try:
        address = "[{}]".format(host) if ":" in host else host
        assert wait_until(lambda: any("ready: http://{}:{}/ (streaming)".format(address, port) in line
                                      for line in lines), 60), "".join(lines)[-3000:]
        assert wait_until(healthy, 10)  # once its first frame is out
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (apt-get install openssl)")
def test_tls_listener_speaks_https_and_http2_for_many_streams_in_one_page(red_square_model, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    tls_port = free_port()
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    with production(red_square_model, "--tls-cert", cert, "--tls-key", key, "--tls-port", str(tls_port)):
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            with context.wrap_socket(raw) as tls:
                assert tls.selected_alpn_protocol() == "h2"
        context.set_alpn_protocols(["http/1.1"])
        connection = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10, context=context)
        connection.request("GET", "/api/stats")
        response = connection.getresponse()
        assert response.status == 200 and b'"state":"streaming"' in response.read()
        connection.request("GET", "/upload")
        assert "https://127.0.0.1:{}/api/detect".format(tls_port).encode() in connection.getresponse().read()
        connection.close()
        # What HTTP/2 is for: a page with more streams than a browser's six connections per host
        # (over plain HTTP, Chromium shows six of these eight and leaves two blank).
        from browser import chromium_page
        with chromium_page(ignore_https_errors=True) as page:
            streams = "".join('<img width="80" src="https://127.0.0.1:{}/video_feed?n={}">'.format(tls_port, n)
                              for n in range(8))
            page.set_content(streams, wait_until="domcontentloaded")
            page.wait_for_function("[...document.images].every(image => image.naturalWidth > 0)", timeout=15000)


def test_a_certificate_that_is_none_is_named_before_anything_starts(red_square_model, tmp_path):
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    result = run_app("serve", "--production", "--model", red_square_model, "--source", "test://",
                     "--port", str(free_port()), "--stats-port", str(free_port()),
                     "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "cert.pem"))
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    assert "error: nginx refuses its configuration: cannot load certificate \"{}\"".format(
        tmp_path / "cert.pem") in result.stderr
    assert "starting uWSGI" not in result.stderr


def test_nginx_has_two_connections_for_every_uwsgi_thread(tmp_path):
    """A viewer takes two of nginx's connections (its browser's and uWSGI's): with
    --max-viewers 600, a fixed 1,024 would have run out at about 500 viewers."""
    args = build_parser().parse_args(["serve", "--production", "--max-viewers", "600"])
    write_production_configs(args, str(tmp_path), NGINX)
    threads = int(re.search(r"^threads = (\d+)$", (tmp_path / "uwsgi.ini").read_text(), re.M).group(1))
    connections = int(re.search(r"worker_connections (\d+);", (tmp_path / "nginx.conf").read_text()).group(1))
    assert threads == 616 and connections >= 2 * threads
    check_nginx_config(NGINX, str(tmp_path))  # and nginx takes it


def test_nginx_answers_in_json_when_the_app_does_not(tmp_path):
    """A request nginx cannot pass on (uWSGI between workers, or down) gets the app's JSON
    form of an error, not nginx's HTML page: scripts parse every answer, and the page shows
    the reason."""
    port = free_port()
    args = build_parser().parse_args(["serve", "--production", "--port", str(port)])
    write_production_configs(args, str(tmp_path), NGINX)  # and no uWSGI behind it
    alone = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    try:
        assert wait_until(listening, 5)
        for path in ("/api/stats", "/", "/video_feed"):
            status, headers, body = get(port, path)
            assert status == 502 and headers["Content-Type"] == "application/json"
            assert json.loads(body.decode()) == {
                "error": "the app did not answer (a worker restarting, or down: see the log); try again"}
    finally:
        alone.terminate()
        alone.wait(10)


def test_http2_is_asked_of_each_nginx_in_its_own_words(tmp_path):
    """nginx 1.25.1 and later warn at every start about `listen ... http2` (Debian 13 has
    1.26): they get `http2 on;`, which older ones refuse."""
    said = subprocess.run([NGINX, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True).stdout
    assert ".".join(str(part) for part in nginx_version(NGINX)) == said.split("nginx/")[1].split()[0]
    assert nginx_version(str(tmp_path / "no-nginx")) == ()
    for version in ((1, 14, 0), (1, 22, 1), (1, 25, 0)):
        assert tls_listen("0.0.0.0", 8443, version) == "listen 8443 sndbuf=128k ssl http2;"
    for version in ((1, 25, 1), (1, 26, 3), (2, 0)):
        assert tls_listen("::", 8443, version) == (
            "listen 8443 sndbuf=128k ssl;\n    listen [::]:8443 sndbuf=128k ssl;\n    http2 on;")


def test_one_port_for_two_listeners_is_named_before_anything_starts(red_square_model):
    port = str(free_port())
    result = run_app("serve", "--production", "--model", red_square_model, "--source", "test://",
                     "--port", port, "--stats-port", port)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --port and --stats-port are the same port ({}); give each its own".format(port) \
        in result.stderr
    assert "starting uWSGI" not in result.stderr


def processes_mentioning(text):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/{}/cmdline".format(pid), "rb") as handle:
                    if text.encode() in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_sigterm_stops_the_stack_quickly_and_completely(red_square_model):
    server = production(red_square_model)
    server.__enter__()
    try:
        run_dir = "/run/streamdetect/{}".format(server.port) if os.geteuid() == 0 else str(server.port)
        children = [pid for pid in processes_mentioning(run_dir) if pid != server.process.pid]
        assert len(children) >= 3  # uWSGI master and worker, nginx master (and its worker)
        [viewer] = [Viewer(server.port)]
        viewer.start()
        viewer.connected.wait(5)
        started = time.time()
        os.kill(server.process.pid, signal.SIGTERM)
        server.process.wait(10)
        elapsed = time.time() - started
        time.sleep(0.3)
        assert elapsed < 5.0
        assert server.process.returncode == 0
        assert "Segmentation Fault" not in server.log() and "backtrace" not in server.log()
        assert [pid for pid in children if os.path.exists("/proc/{}".format(pid))
                and open("/proc/{}/stat".format(pid)).read().split()[2] != "Z"] == []
        viewer.close()
    finally:
        server.__exit__(None, None, None)
