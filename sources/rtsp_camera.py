"""rtsp:// cameras, read by OpenCV's FFmpeg; when one cannot be opened, its answer to an
RTSP DESCRIBE says why (no such stream, a login wanted, a wrong one)."""
import socket
import urllib.parse

import cv2

from errors import SourceError
from sources.login import authorization, unauthorized, without_login
from sources.opencv_source import OpenCVSource


class RTSPSource(OpenCVSource):
    """An rtsp:// camera, read by OpenCV's FFmpeg. When it cannot be opened, the camera's
    answer to DESCRIBE (a player's first request) says why: no stream at that path, a login
    wanted, or a wrong one."""

    def __init__(self, uri):
        super(RTSPSource, self).__init__(uri, uri, cv2.CAP_FFMPEG)

    def open(self):
        try:
            super(RTSPSource, self).open()
        except SourceError:
            raise SourceError("cannot open {}: {}".format(self.uri, rtsp_refusal(self.target) or
                                                          "its server answers, but OpenCV cannot read the stream"))


def rtsp_refusal(uri, timeout=5.0):
    """Why the RTSP server of `uri` refuses it, from its answer to DESCRIBE with the URL's
    login (Digest or Basic, as the server asks); None when it accepts."""
    parts = urllib.parse.urlsplit(uri)
    url, user, password = without_login(uri)
    login = None
    try:
        for _ in range(2):
            status, reason, challenges = _rtsp_describe(parts.hostname, parts.port or 554, url, login, timeout)
            if status != 401 or login is not None or user is None:
                break
            login = authorization(challenges, "DESCRIBE", url, user, password)
            if login is None:
                break
    except OSError as exc:
        return "cannot reach it: {}".format(exc.strerror or exc)
    except ValueError:
        return "it does not answer RTSP"
    if status == 401:
        return unauthorized(uri)
    if status >= 300:
        return "it answers {} {}".format(status, reason)
    return None


def _rtsp_describe(host, port, url, authorization, timeout):
    """(status, reason, WWW-Authenticate values) of one DESCRIBE of `url`."""
    request = "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\nUser-Agent: streamdetect\r\n{}\r\n".format(
        url, "Authorization: {}\r\n".format(authorization) if authorization else "")
    with socket.create_connection((host, port), timeout) as connection:
        connection.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer and len(answer) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    lines = answer.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("RTSP/") or not code.isdigit():
        raise ValueError("not an RTSP answer")
    challenges = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("www-authenticate:")]
    return int(code), reason, challenges
