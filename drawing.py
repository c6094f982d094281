"""Drawing on frames (boxes and labels, the stats overlay, status banners) and encoding them
as JPEG with the fastest encoder here."""
import colorsys
import functools
import time
import unicodedata

import cv2
import numpy as np


def class_colors(count):
    """A distinct, stable BGR colour per class (hues spread by the golden ratio)."""
    colors = []
    for index in range(count):
        r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 1.0)
        colors.append((int(b * 255), int(g * 255), int(r * 255)))
    return colors


def draw_detections(frame, detections, colors):
    """Draw each box with its label and score onto `frame` in place: the boxes first, so that
    no box's line crosses a label."""
    height, width = frame.shape[:2]
    thickness = max(1, int(round(min(width, height) / 240.0)))
    font_scale = max(0.4, min(width, height) / 900.0)
    texts = ["{} {:.2f}".format(drawn_label(det.label, det.class_id), det.score) for det in detections]
    sizes = [cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1) for text in texts]
    places = label_places([det.box for det in detections], [(w + 4, h + base + 2) for (w, h), base in sizes],
                          width, height)
    for det in detections:
        x1, y1, x2, y2 = [int(round(v)) for v in det.box]
        cv2.rectangle(frame, (x1, y1), (x2, y2), colors[det.class_id % len(colors)], thickness)
    for det, text, ((_, text_h), _), (left, top, right, bottom) in zip(detections, texts, sizes, places):
        cv2.rectangle(frame, (left, top), (right, bottom), colors[det.class_id % len(colors)], -1)
        cv2.putText(frame, text, (left + 2, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return frame


# The Latin letters that Unicode does not decompose into an ASCII letter and accents.
LATIN_LETTERS_WITHOUT_ASCII_FORM = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o",
                                                  "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d",
                                                  "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"})


@functools.lru_cache(maxsize=None)
def drawn_label(label, class_id):
    """The label as OpenCV can draw it. Before OpenCV 5, putText draws a '?' for each byte beyond
    ASCII: Latin letters are then drawn without accents ('café' -> 'cafe', 'Straße' -> 'Strasse'),
    and a label of another script as its class number."""
    if _opencv_draws_unicode() or _is_ascii(label):
        return label
    plain = "".join(char for char in unicodedata.normalize("NFKD", label.translate(LATIN_LETTERS_WITHOUT_ASCII_FORM))
                    if not unicodedata.combining(char))
    return plain if _is_ascii(plain) else "class {}".format(class_id)


def _is_ascii(text):
    return all(ord(char) < 128 for char in text)


@functools.lru_cache(maxsize=None)
def _opencv_draws_unicode():
    """Whether putText draws 'é' otherwise than the '??' (one per byte) of OpenCV before 5."""
    def drawn(text):
        canvas = np.zeros((24, 24), np.uint8)
        cv2.putText(canvas, text, (2, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
        return canvas
    return not np.array_equal(drawn("\u00e9"), drawn("??"))


def label_places(boxes, label_sizes, width, height):
    """Each label's [left, top, right, bottom]: above its box, else inside its top edge, else
    below it, else inside its bottom edge - the first place in the picture that covers no
    label placed before it (boxes side by side would otherwise hide each other's labels);
    above (or inside the top) when every place is taken."""
    placed = []
    for (x1, y1, x2, y2), (label_w, label_h) in zip(boxes, label_sizes):
        x1, y1, y2 = int(round(x1)), int(round(y1)), int(round(y2))
        left = max(0, min(x1, width - label_w))
        tops = [top for top in (y1 - label_h, y1, y2, y2 - label_h) if 0 <= top <= height - label_h]
        places = [(left, top, left + label_w, top + label_h) for top in tops or [max(0, y1 - label_h)]]
        free = [place for place in places if not any(_overlap(place, other) for other in placed)]
        placed.append((free or places)[0])
    return placed


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_overlay(frame, text):
    """The stats line in the top-left corner, on a dark band for contrast."""
    scale = max(0.5, frame.shape[0] / 800.0)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(frame, (0, 0), (text_w + 12, text_h + baseline + 10), (0, 0, 0), -1)
    cv2.putText(frame, text, (6, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 255, 255), 1, cv2.LINE_AA)


def draw_banner(frame, text):
    """A status line across the middle of the picture, cut to fit its width."""
    height, width = frame.shape[:2]
    scale = max(0.5, height / 700.0)
    while len(text) > 8 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 20:
        text = text[:-4] + "..."
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = height // 2 - text_h
    cv2.rectangle(frame, (0, top - 10), (width, top + text_h + baseline + 10), (0, 0, 160), -1)
    cv2.putText(frame, text, ((width - text_w) // 2, top + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)


def encode_opencv(image, quality):
    ok, buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buffer.tobytes()


def jpeg_encoders():
    """JPEG encoders available here: OpenCV always, simplejpeg (libjpeg-turbo) when installed."""
    encoders = {"opencv": encode_opencv}
    try:
        import simplejpeg
    except ImportError:
        return encoders

    def encode_simplejpeg(image, quality):
        return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=int(quality), colorspace="BGR",
                                      colorsubsampling="420")
    encoders["simplejpeg"] = encode_simplejpeg
    return encoders


def fastest_encoder(encoders, image, quality, rounds=5):
    """(name, encoder, {name: ms}) of the encoder fastest on `image`: the winner
    differs between machines (OpenCV's bundled libjpeg, SIMD, ARM vs x86)."""
    timings = {}
    for name, encode in encoders.items():
        encode(image, quality)
        started = time.perf_counter()
        for _ in range(rounds):
            encode(image, quality)
        timings[name] = (time.perf_counter() - started) / rounds * 1000.0
    best = min(timings, key=timings.get)
    return best, encoders[best], timings
