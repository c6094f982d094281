"""`serve --production`: uWSGI (the app) behind nginx, their configurations made from
app.ini and nginx/ for these settings, both started, supervised and stopped together."""
import collections
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from errors import ServerSetupError
from server import require_free_port, url_host, without_token
from parsing import sources_text
from settings import ENVIRONMENT_SETTINGS
from uploads import upload_too_large
from yolo_tool import cache_dir, resolve_model

log = logging.getLogger("streamdetect")

APP_DIR = os.path.dirname(os.path.abspath(__file__))
# nginx's send buffer for each browser, fixed (nginx has no TCP_NOTSENT_LOWAT): docs/design.md
# says why 128 KB.
STREAM_SEND_BUFFER = " sndbuf=128k"


def run_directory(port):
    """Where sockets, pids and generated configs live: /run (not /tmp, which
    systemd's PrivateTmp hides from nginx), else the user's runtime folder."""
    if os.geteuid() == 0:
        base = "/run/streamdetect"
    else:
        base = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or cache_dir("run"), "streamdetect")
    path = os.path.join(base, str(port))
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def fill_template(path, values):
    """A config file from the repository with its @NAME@ fields filled in."""
    with open(path) as handle:
        text = handle.read()
    for name, value in values.items():
        text = text.replace("@{}@".format(name), str(value))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise ValueError("{}: no value for {}".format(path, ", ".join(sorted(set(leftover)))))
    return text


def settings_environment(args):
    """The serve settings as $STREAMDETECT_* variables, for the app under uWSGI."""
    environment = {}
    for name, value in vars(args).items():
        if name.upper() not in ENVIRONMENT_SETTINGS or value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else ""
        elif name == "source":
            try:
                value = sources_text(value)
            except ValueError as exc:
                raise ServerSetupError("--production: {}".format(exc))
        elif isinstance(value, list):
            value = ",".join(value)
        environment["STREAMDETECT_" + name.upper()] = str(value)
    return environment


def nginx_listen(host, port, parameters=""):
    """nginx's `listen` directives for --host and `port`: all addresses for 0.0.0.0, IPv4
    and IPv6 for ::, an IPv6 address in brackets."""
    if host in ("", "0.0.0.0"):
        addresses = [str(port)]
    elif host == "::":
        addresses = [str(port), "[::]:{}".format(port)]
    else:
        addresses = ["{}:{}".format(url_host(host), port)]
    return "\n    ".join("listen {}{};".format(address, parameters) for address in addresses)


def nginx_version(nginx):
    """The version of the `nginx` binary as a tuple of numbers, () where `nginx -v`
    (which writes to stderr) does not tell."""
    try:
        said = subprocess.run([nginx, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", said)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def tls_listen(host, port, version):
    """The TLS `listen` directives, with HTTP/2: nginx 1.25.1 deprecated the `http2` parameter
    of `listen` (a warning at every start) for `http2 on;`, which older ones (the Nano's 1.14,
    Debian 12's 1.22) do not know."""
    if version >= (1, 25, 1):
        return nginx_listen(host, port, STREAM_SEND_BUFFER + " ssl") + "\n    http2 on;"
    return nginx_listen(host, port, STREAM_SEND_BUFFER + " ssl http2")


def write_production_configs(args, run_dir, nginx):
    """uWSGI and nginx configurations for these settings and that `nginx` binary, in `run_dir`."""
    owner = "{}:{}".format(os.geteuid(), os.getegid())
    user_line = ""
    if os.geteuid() == 0:  # nginx workers drop to nobody: give its group the socket
        import grp
        import pwd
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrgid(nobody.pw_gid).gr_name
        owner, user_line = "0:{}".format(nobody.pw_gid), "user nobody {};".format(group)
    tls = ""
    if args.tls_cert:
        tls = ("{}\n    ssl_certificate {};\n    ssl_certificate_key {};"
               .format(tls_listen(args.host, args.tls_port, nginx_version(nginx)),
                       os.path.abspath(args.tls_cert), os.path.abspath(args.tls_key)))
    listen = nginx_listen(args.host, args.port, STREAM_SEND_BUFFER)
    threads = args.max_viewers + 16 if args.max_viewers else 256
    values = {
        "APP_DIR": APP_DIR, "RUN_DIR": run_dir, "THREADS": threads, "WORKER_CONNECTIONS": max(1024, 2 * threads + 64),
        "SOCKET_OWNER": owner, "STATS_PORT": args.stats_port, "USER_LINE": user_line,
        "LISTEN": listen, "TLS_SERVER": tls, "MAX_BODY": "{}k".format(int(args.max_upload_mb * 1024) + 1024),
        "TOO_LARGE_JSON": json.dumps({"error": upload_too_large(args.max_upload_mb)}),
        "PER_CLIENT": args.per_client_limit,
        "CLIENT_TIMEOUT": args.client_timeout,
    }
    static = os.path.join(run_dir, "static")  # a copy nginx's workers can read wherever the app lives
    if os.path.isdir(static):
        shutil.rmtree(static)
    shutil.copytree(os.path.join(APP_DIR, "static"), static)
    for name, template in (("uwsgi.ini", "app.ini"), ("nginx.conf", "nginx/nginx.conf"),
                           ("streamdetect.conf", "nginx/streamdetect.conf"), ("uwsgi_params", "nginx/uwsgi_params")):
        with open(os.path.join(run_dir, name), "w") as handle:
            handle.write(fill_template(os.path.join(APP_DIR, template), values))


def _die_with_parent():
    """In a child: get SIGTERM if the launcher dies, so nothing is orphaned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve_production(args):
    """uWSGI (the app) behind nginx, both in the foreground, stopped together."""
    uwsgi, nginx = shutil.which("uwsgi"), shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not uwsgi or not nginx:
        raise ServerSetupError("--production needs uwsgi and nginx on PATH (pip install uwsgi; "
                               "apt-get install nginx); or run without --production")
    if args.tls_cert and not args.tls_key:
        raise ServerSetupError("--tls-cert needs --tls-key")
    check_listeners(args)
    resolve_model(args.model)  # download here, in the foreground, with its progress bar
    run_dir = run_directory(args.port)
    write_production_configs(args, run_dir, nginx)
    check_nginx_config(nginx, run_dir)
    environment = dict(os.environ, **settings_environment(args))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    log.info("starting uWSGI and nginx (configs in %s)", run_dir)
    children, relays = [], []
    try:
        for command, child_environment in (([uwsgi, "--ini", os.path.join(run_dir, "uwsgi.ini")], environment),
                                           ([nginx, "-p", run_dir, "-c", os.path.join(run_dir, "nginx.conf")], None)):
            children.append(subprocess.Popen(command, env=child_environment, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, preexec_fn=_die_with_parent))
            relays += [relay(children[-1].stdout, sys.stdout), relay(children[-1].stderr, sys.stderr)]
        return _supervise(args, children, stopping)
    finally:
        _stop_children(children)
        for thread in relays:  # their last lines, up to the children's exit
            thread.join(2.0)
        log.info("stopped")


def check_listeners(args):
    """A one-line error for a port given twice or taken, before anything starts."""
    listeners = [(args.host, args.port, "--port"), ("127.0.0.1", args.stats_port, "--stats-port")]
    if args.tls_cert:
        listeners.append((args.host, args.tls_port, "--tls-port"))
    options_by_port = collections.defaultdict(list)
    for _, number, option in listeners:
        options_by_port[number].append(option)
    for number, options in sorted(options_by_port.items()):
        if len(options) > 1:
            raise ServerSetupError("{} are the same port ({}); give each its own".format(" and ".join(options), number))
    for host, number, option in listeners:
        require_free_port(host, number, option)


def relay(pipe, into):
    """A thread that copies a child's output, line by line, into our `into` with every token
    hidden: nginx writes the request line into its error log ('a client request body is
    buffered to a temporary file ... request: "POST /api/detect?token=..."'), which no
    log_format can change. Only this process writes to our output, so a file that the shell
    opened without appending (> server.log 2>&1) keeps every line."""
    def copy():
        for line in iter(pipe.readline, b""):
            into.write(without_token(line.decode("utf-8", "replace")))
            into.flush()
        pipe.close()
    thread = threading.Thread(target=copy, name="log-relay")
    thread.daemon = True
    thread.start()
    return thread


def check_nginx_config(nginx, run_dir):
    """nginx's own test of its configuration (a certificate that is none, say), before
    uWSGI starts: one line, rather than nginx failing while uWSGI loads the app."""
    test = subprocess.run([nginx, "-t", "-q", "-p", run_dir, "-c", os.path.join(run_dir, "nginx.conf")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if test.returncode != 0:
        reasons = re.findall(r"\[emerg\] (?:\d+#\d+: )?(.*)", test.stdout)
        raise ServerSetupError("nginx refuses its configuration: {}".format(
            reasons[0] if reasons else test.stdout.strip() or "nginx -t failed"))


def _supervise(args, children, stopping):
    """Wait for the first healthy answer, then until a signal or a child's exit."""
    url = "http://{}:{}/healthz".format(url_host(args.host), args.port)
    ready, last_note = False, time.monotonic()
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log.error("%s exited with status %s; stopping", os.path.basename(child.args[0]),
                          child.returncode)
                return 1
        if not ready:
            answer = _health(url)
            if answer.get("status") == "down":
                print("error: {}".format(answer.get("error")), file=sys.stderr)
                return 2
            if answer.get("status") in ("ok", "unhealthy"):
                ready = True
                log.info("ready: http://%s:%d/ (%s%s)", url_host(args.host, shown=True), args.port, answer.get("state"),
                         ": " + answer["error"] if answer.get("error") else "")  # idle or reconnecting: why
            elif time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log.info("waiting for the pipeline to start: %s", answer.get("error", "no answer yet"))
        time.sleep(0.2)
    return 0


def _health(url):
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen
    try:
        with urlopen(url, timeout=5) as response:
            return json.loads(response.read().decode())
    except HTTPError as exc:
        try:
            return json.loads(exc.read().decode())
        except ValueError:
            return {}
    except (URLError, OSError, ValueError):
        return {}


def _stop_children(children, grace=3.0):
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", os.path.basename(child.args[0]), grace)
            child.kill()
            child.wait(5)
