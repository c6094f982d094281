"""Parsers of what people type, shared by the command line, the web API and the sources:
numbers in a range, comma-separated names, and the did-you-mean for a mistyped name."""
import difflib


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
