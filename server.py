"""The development server (`serve` without --production): Werkzeug's threaded server with
its request log as nginx's, a clean stop on SIGTERM, and the port checks both servers use."""
import errno
import logging
import re
import signal
import socket
import sys

from werkzeug.serving import WSGIRequestHandler, run_simple

from errors import ServerSetupError
from web import create_app

log = logging.getLogger("streamdetect")

ANSWERED_POLL = re.compile(r'"GET /(api/stats|api/detections|healthz)[?\s][^"]*" [23]\d\d ')
TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")
TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


def plain_request_log(record):
    """The development server's request log as nginx's in production: without the answered
    polls of the live page (two a second per open page) and of health checks, without the
    access token of a URL, and without the terminal colours Werkzeug adds even into files
    and the journal."""
    message = TOKEN_IN_URL.sub(r"\1***", record.getMessage())
    if not sys.stderr.isatty():
        message = TERMINAL_STYLE.sub("", message)
    record.msg, record.args = message, ()
    return not ANSWERED_POLL.search(message)


# At a stop, how long the development server lets viewers take the 'stopped' picture and the end
# of their streams before it exits (a viewer that never reads would otherwise hold it).
VIEWERS_LEAVE_SECONDS = 2.0


def serve_development(args):
    """`serve`: the app in Werkzeug's threaded server until SIGTERM or Ctrl-C."""
    require_free_port(args.host, args.port, "--port")
    app = create_app(args, start=True)
    camera = app.extensions["streamdetect"].camera
    log.info("serving on http://%s:%d/ (source %s, backend %s)", url_host(args.host, shown=True), args.port,
             camera.source.uri, camera.detector.backend)

    class LettingFrozenClientsGo(WSGIRequestHandler):
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
        app.extensions["streamdetect"].stop()
        camera.wait_for_viewers_to_leave(VIEWERS_LEAVE_SECONDS)
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
