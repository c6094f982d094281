"""Many MJPEG viewers in one thread (selectors), cheap enough that the
benchmark client does not take the CPU the server is being measured on;
and /proc readings of a process tree's CPU, memory, threads and descriptors."""
import os
import selectors
import socket
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class _Connection(object):
    def __init__(self, port, path):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall("GET {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".format(path).encode())
        self.sock.setblocking(False)
        self.buffer = bytearray()      # the multipart body
        self.raw = bytearray()         # bytes as received, before de-chunking
        self.chunked = None
        self.frames = 0
        self.latencies = []
        self.first_at = None

    def feed(self, data, now):
        self.raw += data
        if self.chunked is None:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            self.chunked = b"transfer-encoding: chunked" in bytes(self.raw[:end]).lower()
            del self.raw[:end + 4]
        if not self.chunked:
            self.buffer += self.raw
            del self.raw[:]
        else:
            self._dechunk()
        self._parts(now)

    def _dechunk(self):
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self.raw[:line_end]).split(b";")[0], 16)
            if len(self.raw) < line_end + 2 + size + 2:
                return
            self.buffer += self.raw[line_end + 2:line_end + 2 + size]
            del self.raw[:line_end + 2 + size + 2]

    def _parts(self, now):
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).decode("latin-1")
            fields = dict(line.split(":", 1) for line in head.split("\r\n") if ":" in line)
            fields = {key.strip().lower(): value.strip() for key, value in fields.items()}
            length = int(fields["content-length"])
            if len(self.buffer) < head_end + 4 + length + 2:
                return
            del self.buffer[:head_end + 4 + length + 2]
            self.frames += 1
            if self.first_at is None:
                self.first_at = now
            elif "x-captured-at" in fields:
                self.latencies.append(now - float(fields["x-captured-at"]))


def watch_many(port, count, seconds, path="/video_feed", warmup=2.0):
    """`count` viewers for `warmup` + `seconds`; returns per-viewer frames per second
    and the capture-to-receipt latencies (seconds) seen during the measured part."""
    selector = selectors.DefaultSelector()
    connections = [_Connection(port, path) for _ in range(count)]
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    started = time.time()
    measuring_from, counts_at_start = started + warmup, None
    while time.time() < measuring_from + seconds:
        now = time.time()
        if counts_at_start is None and now >= measuring_from:
            counts_at_start = [c.frames for c in connections]
            for connection in connections:
                connection.latencies = []
        for key, _ in selector.select(timeout=0.2):
            data = key.fileobj.recv(1 << 18)
            if not data:
                selector.unregister(key.fileobj)
                continue
            key.data.feed(data, time.time())
    elapsed = time.time() - measuring_from
    rates = [(c.frames - before) / elapsed for c, before in zip(connections, counts_at_start)]
    latencies = [value for c in connections for value in c.latencies]
    for connection in connections:
        selector.unregister(connection.sock) if connection.sock in selector.get_map() else None
        connection.sock.close()
    selector.close()
    return rates, latencies


def descendants(pid):
    """`pid` and every process below it."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/{}/stat".format(entry)) as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _stat_cpu(path):
    """(name, user + system CPU seconds) from a /proc stat file."""
    with open(path) as handle:
        head, tail = handle.read().rsplit(")", 1)
    fields = tail.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / float(CLOCK_TICKS)


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            total += _stat_cpu("/proc/{}/stat".format(pid))[1]
        except OSError:
            pass
    return total


def process_usage(pid):
    """(RSS bytes, threads, open descriptors) of one process."""
    with open("/proc/{}/status".format(pid)) as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    rss = int(status["VmRSS"].split()[0]) * 1024
    threads = int(status["Threads"])
    descriptors = len(os.listdir("/proc/{}/fd".format(pid)))
    return rss, threads, descriptors


def thread_cpu(pid):
    """{thread name: CPU seconds} of one process, threads of the same name added up."""
    usage = {}
    for tid in os.listdir("/proc/{}/task".format(pid)):
        try:
            name, seconds = _stat_cpu("/proc/{}/task/{}/stat".format(pid, tid))
            usage[name] = usage.get(name, 0.0) + seconds
        except OSError:
            pass
    return usage
