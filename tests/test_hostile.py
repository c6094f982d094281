"""What a hostile probe tried, sent byte for byte to the development server and to `serve
--production` alike: every request gets its answer in the app's JSON form ({"error": ...} with
a 4xx, or the data), never an HTML page, a 5xx or a traceback, and the access token reaches no
log line of any component (the app, Werkzeug, uWSGI, nginx's access and error logs)."""
import json
import re
import socket

import pytest
from werkzeug.wrappers import Request

from streaming import HAS_PRODUCTION_STACK, Server, free_port, get_json

TOKEN = "s3cret-of-the-hostile-tests"
# Werkzeug 2.2.3 and later refuse a multipart form of over 1,000 parts (Python 3.6's 2.0.3 has no limit).
PARTS_LIMIT = getattr(Request, "max_form_parts", None)


def request(method, path, headers=(), body=b""):
    """The bytes of one HTTP/1.1 request, closed after its answer."""
    lines = ["{} {} HTTP/1.1".format(method, path), "Host: 127.0.0.1"] + list(headers)
    if body or method == "POST":
        lines.append("Content-Length: {}".format(len(body)))
    return ("\r\n".join(lines + ["Connection: close", "", ""])).encode("latin-1") + body


def exchange(port, data, timeout=15):
    """(status, headers with lower-case names, body) of the answer to the raw bytes `data`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(data)
        except OSError:  # refused before it was all sent: the answer is there all the same
            pass
        answer = b""
        try:
            while not whole(answer):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict((name.strip().lower(), value.strip()) for name, _, value in
                   (line.partition(":") for line in header_lines))
    return int(status_line.split()[1]), headers, body


def whole(answer):
    """Whether `answer` holds a whole response of a stated length (nginx lingers on a refused
    upload's connection for the rest of its body, a client need not)."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    return bool(separator and length and len(body) >= int(length.group(1)))


def multipart(fields):
    boundary = "hostile"
    body = b"".join('--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'.format(
        boundary, name, value).encode() for name, value in fields) + "--{}--\r\n".format(boundary).encode()
    return ["Content-Type: multipart/form-data; boundary=" + boundary], body


def authorised(path):
    return path + ("&" if "?" in path else "?") + "token=" + TOKEN


NESTED = b'{"a":' + b"[" * 5000
AVIF = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 64
PARTS = multipart([("field{}".format(i), "x") for i in range(1001)])
# (name, request bytes, {server: (status, what the error says)}), the same for both servers
# where one pair is given.
CORPUS = [
    ("deeply nested JSON", request("POST", authorised("/api/detect"), body=NESTED),
     (400, "nested too deeply")),
    ("deeply nested JSON to the form", request("POST", authorised("/upload"), body=NESTED),
     (400, "nested too deeply")),
    ("over 1,000 multipart parts", request("POST", authorised("/api/detect"), *PARTS),
     (413, "over 1000 parts") if PARTS_LIMIT else (400, "has no file")),
    ("a URL over 8 KB", request("GET", authorised("/api/stats") + "&x=" + "a" * 9000),
     {"dev": (200, None), "production": (414, "the URL is over 8 KB")}),
    ("a URL over 64 KB", request("GET", authorised("/api/stats") + "&x=" + "a" * 70000),
     {"dev": (414, "Request-URI Too Long"), "production": (414, "the URL is over 8 KB")}),
    ("a header over 8 KB", request("GET", authorised("/api/stats"), ["X-Big: " + "a" * 9000]),
     {"dev": (200, None), "production": (431, "a request header is over 8 KB")}),
    ("a header over 64 KB", request("GET", authorised("/api/stats"), ["X-Big: " + "a" * 70000]),
     {"dev": (431, "Line too long"), "production": (431, "a request header is over 8 KB")}),
    ("a URL and headers over 32 KB in all", request("GET", authorised("/api/stats") + "&x=" + "a" * 7000,
                                                    ["X-Big-{}: {}".format(i, "b" * 7000) for i in range(3)]),
     (200, None)),
    ("no HTTP", b"GARBAGE\r\n\r\n", {"dev": (400, "Bad request"), "production": (400, "no HTTP request")}),
    ("a bearer token in lower case", request("GET", "/api/stats", ["Authorization: bearer " + TOKEN]), (200, None)),
    ("the token twice", request("GET", "/api/stats?token={}&token=x".format(TOKEN)), (200, None)),
    ("the token's name percent-escaped", request("GET", "/api/stats?%74oken=" + TOKEN), (200, None)),
    ("the token's name capitalised", request("GET", "/api/stats?Token=" + TOKEN), (401, "needs its token")),
    ("an upload over 16 KB", request("POST", authorised("/api/detect"), body=b"x" * 20000),
     (400, "not an image")),
    ("an upload over the limit", request("POST", authorised("/api/detect"), body=b"x" * 1200000),
     (413, "larger than 1 MB")),
    ("a form's upload over the limit, from a script", request("POST", authorised("/upload"), *multipart(
        [("image", "x" * 1200000)])), (413, "larger than 1 MB")),
    ("an AVIF picture", request("POST", authorised("/api/detect"), body=AVIF), (400, "is an AVIF picture")),
]


def hostile_server(kind, model):
    options = ["serve", "--source", "test://?fps=10", "--model", model, "--max-upload-mb", "1"]
    if kind == "production":
        if not HAS_PRODUCTION_STACK:
            pytest.skip("needs uwsgi (pip) and nginx (apt-get install nginx)")
        options += ["--production", "--stats-port", str(free_port())]
    return Server(*options, STREAMDETECT_TOKEN=TOKEN)


@pytest.fixture(scope="module", params=["dev", "production"])
def server(request, red_square_model):
    with hostile_server(request.param, red_square_model) as running:
        running.kind = request.param
        yield running


def test_every_hostile_request_gets_its_answer_in_json_and_the_token_stays_out_of_the_logs(server):
    failures = []
    for name, data, expected in CORPUS:
        want_status, want_text = expected[server.kind] if isinstance(expected, dict) else expected
        status, headers, body = exchange(server.port, data)
        try:
            record = json.loads(body.decode())
        except ValueError:
            record = None
        said = record.get("error") if isinstance(record, dict) else None
        if (status != want_status or not headers.get("content-type", "").startswith("application/json")
                or record is None or (want_text is not None and want_text not in (said or ""))):
            failures.append("{}: {} {} {!r}".format(name, status, headers.get("content-type"), body[:200]))
    assert not failures, "\n".join(failures)
    assert get_json(server.port, "/api/stats", headers={"Authorization": "Bearer " + TOKEN})[0] == 200
    log = server.log()
    assert TOKEN not in log and "Traceback" not in log
    assert "token=***" in log  # the requests were logged, with the token hidden
    if server.kind == "production":
        assert "invalid request block size" not in log
        assert "buffered to a temporary file" in log  # nginx wrote the request line there: hidden too


def test_the_upload_form_answers_a_browser_with_its_page(server):
    """Scripts get JSON from /upload (above); a browser's form, which asks for HTML, its page."""
    form = request("POST", authorised("/upload"), ["Accept: text/html,application/xhtml+xml,*/*;q=0.8"]
                   + multipart([("image", "x" * 1200000)])[0], multipart([("image", "x" * 1200000)])[1])
    status, headers, body = exchange(server.port, form)
    assert status == 413 and headers["content-type"].startswith("text/html")
    assert b'<p class="error">upload is larger than 1 MB (--max-upload-mb)</p>' in body


def test_an_upload_declared_over_the_limit_is_refused_before_its_body_comes(server):
    """Of a body said to be 50 MB only 1 KB comes: the answer is at once, and the connection is
    closed, rather than a thread waiting for the rest until --client-timeout (30 s)."""
    import time
    started = time.monotonic()
    head = request("POST", authorised("/api/detect"), ["Content-Type: application/octet-stream"])
    status, headers, body = exchange(server.port, head.replace(b"Content-Length: 0", b"Content-Length: 50000000")
                                     + b"x" * 1000)
    assert status == 413 and "larger than 1 MB" in json.loads(body.decode())["error"]
    assert time.monotonic() - started < 5
