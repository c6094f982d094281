"""Logging in to network cameras: a URL's user and password taken out of it, Basic and
Digest answers to a camera's challenge, and what a 401 means."""
import base64
import hashlib
import os
import re
import ssl
import urllib.parse
import urllib.request


def without_login(uri):
    """(`uri` without its user:password@, the user, the password); None for both when it has none."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None:
        return uri, None, None
    url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")


def unauthorized(uri):
    """What a camera's 401 to `uri` means: the URL's login is wrong, or it has none."""
    parts = urllib.parse.urlsplit(uri)
    return "it answers 401 Unauthorized: " + (
        "the user name or password in the URL is wrong" if parts.username is not None else
        "give the camera's user name and password in the URL, {}://USER:PASSWORD@host/...".format(parts.scheme))


def authorization(challenges, method, url, user, password):
    """The Authorization header that answers a server's WWW-Authenticate challenges with this
    login: Digest (MD5, as cameras ask) where offered, else Basic; None for schemes not known."""

    def md5(text):
        return hashlib.md5(text.encode()).hexdigest()
    for challenge in sorted(challenges, key=lambda text: not text.lower().startswith("digest")):
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            return "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()
        fields = {name.lower(): quoted or plain for name, quoted, plain in
                  re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', rest)}
        if scheme.lower() != "digest" or fields.get("algorithm", "MD5").upper() != "MD5":
            continue
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
        secret, request = md5("{}:{}:{}".format(user, realm, password)), md5("{}:{}".format(method, url))
        header = 'Digest username="{}", realm="{}", nonce="{}", uri="{}"'.format(user, realm, nonce, url)
        if "auth" in [qop.strip() for qop in fields.get("qop", "").split(",")]:
            cnonce = "".join("{:02x}".format(byte) for byte in os.urandom(8))
            response = md5(":".join([secret, nonce, "00000001", cnonce, "auth", request]))
            header += ', qop=auth, nc=00000001, cnonce="{}"'.format(cnonce)
        else:
            response = md5(":".join([secret, nonce, request]))
        header += ', response="{}"'.format(response)
        return header + (', opaque="{}"'.format(fields["opaque"]) if "opaque" in fields else "")
    return None


def camera_opener(uri):
    """(`uri` without its user:password@, a urllib opener that logs in with them, by Basic or
    Digest authentication as the camera asks). Certificates are not checked, as FFmpeg does
    not: cameras serve HTTPS with certificates of their own making."""
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    handlers = [urllib.request.HTTPSHandler(context=unverified)]
    url, user, password = without_login(uri)
    if user is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, url, user, password)
        handlers += [urllib.request.HTTPBasicAuthHandler(passwords), urllib.request.HTTPDigestAuthHandler(passwords)]
    return url, urllib.request.build_opener(*handlers)
