"""Parsers of what people type, shared by the command line, the web API and the sources:
numbers in a range, comma-separated names, cameras' NAME=URI, and the did-you-mean for a
mistyped name."""
import difflib
import re


def number_in_range(text, kind, low, high=None):
    """`text` as a `kind` (int or float) from `low` to `high` (None: no limit), else None
    (NaN too): the one check behind the command line's numbers and test:// parameters."""
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if low <= value <= (value if high is None else high) else None


def listed_names(text):
    """'person, car,' (--classes, ?classes=) -> ['person', 'car']."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def slip_for(name, names):
    """The one of `names` that `name` looks like a slip for (a letter off, another case, a
    longer or shorter word: class, Conf, confidence), or None; of several, the most alike
    (MODELURL: MODEL_URL, not MODEL), then the first in `names`' order."""
    lowered = {candidate.lower(): candidate for candidate in names}
    name = name.lower()
    likeness = {candidate: difflib.SequenceMatcher(None, name, candidate).ratio() for candidate in lowered}

    def prefixed(candidate):
        shorter, longer = sorted((name, candidate), key=len)
        return len(shorter) >= 3 and longer.startswith(shorter)
    likely = [candidate for candidate in lowered if prefixed(candidate) or likeness[candidate] >= 0.75]
    return lowered[max(likely, key=likeness.get)] if likely else None


# A camera's name, in routes (/cameras/NAME/) and MQTT topics: letters, digits, - and _.
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
# The name of a camera given by its URI alone.
DEFAULT_CAMERA = "camera"


def named_sources(text, taken=()):
    """--source 'door=/dev/video0' -> [('door', '/dev/video0')]; a bare URI is named camera,
    then camera2...; several NAME=URI separated by spaces (as $STREAMDETECT_SOURCE has them)
    give several. ValueError saying what is wrong with a name; `taken`: names given before.
    A URI's own '=' (test://?fps=5, ./a=b.mp4) comes after a ':', '/' or '.'."""
    items = text.split()
    if len(items) < 2 or not all(_name_of(item) for item in items):
        items = [text]
    named, names = [], list(taken)
    for item in items:
        name = _name_of(item)
        uri = item[len(name) + 1:] if name else item
        if name is None:
            name, number = DEFAULT_CAMERA, 1
            while name in names:
                number += 1
                name = DEFAULT_CAMERA + str(number)
        elif not CAMERA_NAME.match(name):
            raise ValueError("'{}' is no camera name: a name has letters, digits, - and _ only (door, "
                             "back-yard), as in --source door=/dev/video0".format(name))
        if not uri.strip():
            raise ValueError("camera '{}' has no source after its '='".format(name))
        if name in names:
            raise ValueError("camera name '{}' is given twice; each camera needs a name of its own "
                             "(--source NAME=URI)".format(name))
        names.append(name)
        named.append((name, uri))
    return named


def _name_of(item):
    """The NAME of 'NAME=URI', or None when `item` is a URI alone."""
    name, equals, _ = item.partition("=")
    if not equals or not name or any(mark in name for mark in ":/.?\\"):
        return None
    return name


def sources_text(sources):
    """[(name, uri)...] as one $STREAMDETECT_SOURCE value that named_sources() reads back."""
    if len(sources) == 1 and sources[0][0] == DEFAULT_CAMERA:
        return sources[0][1]
    unsplittable = [uri for _, uri in sources if len(uri.split()) != 1]
    if unsplittable:
        raise ValueError("the source '{}' has a space, which cannot stand beside other cameras in "
                         "$STREAMDETECT_SOURCE; give it a name without one".format(unsplittable[0]))
    return " ".join("{}={}".format(name, uri) for name, uri in sources)
