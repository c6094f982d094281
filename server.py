"""The development server (`serve` without --production): Werkzeug's threaded server with
its request log as nginx's, a clean stop on SIGTERM, and the port checks both servers use."""
import errno
import json
import logging
import os
import re
import signal
import socket
import sys
import urllib.parse

from werkzeug.serving import WSGIRequestHandler, run_simple

from errors import ServerSetupError
from web import create_app

log = logging.getLogger("streamdetect")

ANSWERED_POLL = re.compile(r'"GET /(api/stats|api/detections|healthz)[?\s][^"]*" [23]\d\d ')
TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")
# ?token=VALUE in a URL, also spelt ?Token= or with percent-escapes (?%74oken=), which browsers
# and Werkzeug decode alike.
TOKEN_IN_URL = re.compile(r"([?&](?:t|%74|%54)(?:o|%6f|%4f)(?:k|%6b|%4b)(?:e|%65|%45)(?:n|%6e|%4e)=)[^&\s\"]*",
                          re.IGNORECASE)
# The token itself is hidden wherever it stands in a log line, once it is this long (a shorter
# one would hide letters of every line; the URLs' token= values are hidden whatever they are).
TOKEN_SHOWN_BELOW = 4


def without_token(text):
    """`text`, a log line, with every URL's token= value and the server's token as ***."""
    text = TOKEN_IN_URL.sub(r"\1***", text)
    token = os.environ.get("STREAMDETECT_TOKEN", "")
    if len(token) >= TOKEN_SHOWN_BELOW:
        for form in {token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token)}:
            text = text.replace(form, "***")
    return text


def plain_request_log(record):
    """The development server's request log as nginx's in production: without the answered
    polls of the live page (two a second per open page) and of health checks, without the
    access token of a URL, and without the terminal colours Werkzeug adds even into files
    and the journal."""
    message = without_token(record.getMessage())
    if not sys.stderr.isatty():
        message = TERMINAL_STYLE.sub("", message)
    record.msg, record.args = message, ()
    return not ANSWERED_POLL.search(message)


# At a stop, how long the development server lets viewers take the 'stopped' picture and the end
# of their streams before it exits (a viewer that never reads would otherwise hold it).
VIEWERS_LEAVE_SECONDS = 2.0


# The longest request line the development server reads, as http.server's.
REQUEST_LINE_LIMIT = 65536


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, whose own refusals (a header line or a request line over 64 KB,
    over 100 headers) are answered in the app's JSON form, not as an HTML page."""

    def handle_one_request(self):
        """One request, of a request line of at most 64 KB, as http.server's own (Werkzeug 2.0,
        Python 3.6's, reads a line of any length)."""
        self.raw_requestline = self.rfile.readline(REQUEST_LINE_LIMIT + 1)
        if len(self.raw_requestline) > REQUEST_LINE_LIMIT:
            self.requestline, self.request_version, self.command = "", "", ""
            self.send_error(414)
        elif not self.raw_requestline:
            self.close_connection = True
        elif self.parse_request():
            self.run_wsgi()

    def send_error(self, code, message=None, explain=None):
        if self.request_version == "HTTP/0.9":  # a line that was no request: answered with a status line
            self.request_version = "HTTP/1.0"
        short, long = self.responses.get(code, ("Error", ""))
        body = (json.dumps({"error": "{}: {}".format(message or short, explain or long)}) + "\n").encode()
        self.log_error("code %d, message %s", code, message or short)
        self.send_response(code, message or short)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)


def serve_development(args):
    """`serve`: the app in Werkzeug's threaded server until SIGTERM or Ctrl-C."""
    require_free_port(args.host, args.port, "--port")
    app = create_app(args, start=True)
    cameras = app.extensions["streamdetect"]
    log.info("serving on http://%s:%d/ (%s, backend %s)", url_host(args.host, shown=True), args.port,
             ", ".join("camera {} from {}".format(name, camera.source.uri) for name, camera in cameras.cameras.items())
             if len(cameras.cameras) > 1 else "source " + cameras.camera.source.uri, cameras.camera.detector.backend)

    class LettingFrozenClientsGo(RequestHandler):
        """A blocked write to a client that takes nothing (a frozen tab, a suspended
        laptop) would hold its thread and viewer place for good."""
        timeout = args.client_timeout

    def stop_as_on_ctrl_c(signum, frame):
        """SIGTERM (systemctl stop, docker stop, kill) ends as Ctrl-C does: the server
        closes and the pipeline stops in order, not killed mid-frame."""
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)
    logging.getLogger("werkzeug").addFilter(plain_request_log)
    try:
        run_simple(args.host, args.port, app, threaded=True, use_reloader=False,
                   request_handler=LettingFrozenClientsGo)
    finally:
        cameras.stop()
        cameras.wait_for_viewers_to_leave(VIEWERS_LEAVE_SECONDS)
        log.info("stopped")
    return 0


def url_host(host, shown=False):
    """--host as a URL has it: an IPv6 address in brackets; for all addresses, the one
    that reaches this machine (`shown`: localhost, for people)."""
    if host in ("", "0.0.0.0", "::"):
        return "localhost" if shown else "127.0.0.1"
    return "[{}]".format(host) if ":" in host else host


def require_free_port(host, number, option):
    """An error naming the option now, before the camera and model are opened, rather
    than the server failing to bind later (a second instance would collide on the
    default --stats-port, say)."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx, uWSGI and Werkzeug bind
        probe.bind((host or "0.0.0.0", number))
    except OSError as exc:
        hint = ("is another server (another streamdetect?) using it? Pass another " + option
                if exc.errno == errno.EADDRINUSE else "is {} an address of this machine (--host)?".format(host))
        raise ServerSetupError("cannot listen on {}:{} ({}); {}".format(host or "0.0.0.0", number, exc.strerror, hint))
    finally:
        probe.close()
