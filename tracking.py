"""Tracking: the same object keeps its id from frame to frame, and its life is told as events
(new, update at most once a second, end after --track-timeout seconds unseen), in the form
Frigate's users expect. Detections are matched to tracks of their class by overlap with where
each track is expected now (its last box moved on by its speed)."""
import itertools

import numpy as np

from data_processing import pairwise_iou

# Least overlap between a detection and a track's expected box for them to be one object.
MATCH_IOU = 0.2
# An object's update event is sent at most this often.
UPDATE_SECONDS = 1.0


class Track(object):
    """One object in view: its id, class, newest box, speed and best score."""

    __slots__ = ("id", "label", "class_id", "box", "score", "best_score", "velocity", "seen_at", "updated_at",
                 "frame")

    def __init__(self, track_id, detection, now, frame):
        self.id = track_id
        self.label, self.class_id = detection.label, detection.class_id
        self.box = np.asarray(detection.box, dtype=np.float64)
        self.score = self.best_score = detection.score
        self.velocity = np.zeros(4)  # box change per second
        self.seen_at = self.updated_at = now
        self.frame = frame

    def expected_box(self, now):
        return self.box + self.velocity * min(now - self.seen_at, 1.0)

    def follow(self, detection, now, frame):
        box = np.asarray(detection.box, dtype=np.float64)
        elapsed = now - self.seen_at
        if elapsed > 0:  # smoothed: a box's edges jitter by a few pixels from frame to frame
            self.velocity = 0.5 * self.velocity + 0.5 * (box - self.box) / elapsed
        self.box, self.score, self.seen_at, self.frame = box, detection.score, now, frame
        self.best_score = max(self.best_score, detection.score)

    def event(self, kind, camera, now):
        score = self.best_score if kind == "end" else self.score
        return {"type": kind, "id": self.id, "camera": camera, "label": self.label, "score": round(score, 4),
                "box": [round(float(v), 1) for v in self.box], "time": round(now, 3), "frame": self.frame}


class Tracker(object):
    """Tracks of one camera. Not thread-safe: the pipeline calls update() for its frames in
    capture order, from one thread at a time."""

    def __init__(self, camera="camera", timeout=1.0):
        self.camera = camera
        self.timeout = float(timeout)
        self.tracks = []
        self._ids = itertools.count(1)

    def update(self, detections, now, frame=0):
        """Give each of `detections` (of the frame numbered `frame`, captured at `now`, seconds)
        its track's id; returns the events of this frame: new, update, end."""
        events, matched = [], set()
        for detection, track in self._pairs(detections, now):
            if track is None:
                track = Track(next(self._ids), detection, now, frame)
                self.tracks.append(track)
                events.append(track.event("new", self.camera, now))
            else:
                track.follow(detection, now, frame)
                if now - track.updated_at >= UPDATE_SECONDS:
                    track.updated_at = now
                    events.append(track.event("update", self.camera, now))
            detection.id = track.id
            matched.add(track.id)
        for track in [track for track in self.tracks if track.id not in matched and
                      now - track.seen_at > self.timeout]:
            self.tracks.remove(track)
            events.append(track.event("end", self.camera, now))
        return events

    def end_all(self, now):
        """The end events of every track (the camera stops)."""
        events = [track.event("end", self.camera, now) for track in self.tracks]
        self.tracks = []
        return events

    def counts(self):
        """{label: objects of it in view now}."""
        counts = {}
        for track in self.tracks:
            counts[track.label] = counts.get(track.label, 0) + 1
        return counts

    def _pairs(self, detections, now):
        """(detection, its track or None), matching within each class the pairs of most overlap
        first, each track and detection once."""
        pairs = []
        for class_id in {detection.class_id for detection in detections}:
            found = [detection for detection in detections if detection.class_id == class_id]
            tracks = [track for track in self.tracks if track.class_id == class_id]
            taken = {}
            if tracks:
                # Overlap with where the track is expected, or where it was, whichever is more: a
                # box that jumps from cell to cell (a coarse grid) makes a speed that overshoots.
                boxes = np.array([track.expected_box(now) for track in tracks] + [track.box for track in tracks]
                                 + [detection.box for detection in found], dtype=np.float64)
                ious = pairwise_iou(boxes)[2 * len(tracks):]
                overlaps = np.maximum(ious[:, :len(tracks)], ious[:, len(tracks):2 * len(tracks)])
                used = set()
                for flat in np.argsort(-overlaps, axis=None):
                    row, col = divmod(int(flat), len(tracks))
                    if overlaps[row, col] < MATCH_IOU:
                        break
                    if row not in taken and col not in used:
                        taken[row] = tracks[col]
                        used.add(col)
            pairs += [(detection, taken.get(row)) for row, detection in enumerate(found)]
        return pairs
