"""The tracker on its own: ids that stay with an object, and one new and one end per appearance."""
from tracking import Tracker
from yolo_tool import Detection


def person(x, score=0.8, width=60):
    return Detection("person", 14, score, [x, 100.0, x + width, 260.0])


def car(x):
    return Detection("car", 6, 0.9, [x, 300.0, x + 120, 380.0])


def test_an_object_keeps_its_id_while_it_moves_and_ends_after_the_timeout():
    tracker = Tracker("door", timeout=1.0)
    events, ids = [], []
    for frame in range(60):  # 2 s at 30 FPS, walking 8 px a frame: boxes overlap from frame to frame
        seen = [person(10 + 8 * frame, score=0.5 + frame / 200.0)]
        events += tracker.update(seen, frame / 30.0, frame)
        ids.append(seen[0].id)
    assert set(ids) == {1} and tracker.counts() == {"person": 1}
    for frame in range(60, 120):  # gone for 2 s
        events += tracker.update([], frame / 30.0, frame)
    kinds = [event["type"] for event in events]
    assert kinds.count("new") == 1 and kinds.count("end") == 1 and kinds[0] == "new" and kinds[-1] == "end"
    assert 1 <= kinds.count("update") <= 2  # at most once a second
    end = events[-1]
    assert end["id"] == 1 and end["camera"] == "door" and end["label"] == "person"
    assert end["score"] == round(0.5 + 59 / 200.0, 4) and end["box"] == [482.0, 100.0, 542.0, 260.0]
    assert 1.0 < end["time"] - 59 / 30.0 <= 1.0 + 1 / 30.0 + 1e-9  # told once the timeout has passed
    assert tracker.counts() == {}


def test_a_fast_object_is_followed_by_its_speed_and_two_objects_keep_their_own_ids():
    tracker = Tracker(timeout=1.0)
    for frame in range(30):  # 40 px a frame with 60 px boxes: 20 px of overlap, followed by its speed
        left, right = person(40 * frame, width=60), person(1500 - 40 * frame, width=60)
        tracker.update([left, right, car(900)], frame / 30.0, frame)
        assert (left.id, right.id) == (1, 2) and tracker.counts() == {"person": 2, "car": 1}


def test_one_that_comes_back_after_the_timeout_is_a_new_object():
    tracker = Tracker(timeout=0.5)
    first = [person(100)]
    tracker.update(first, 0.0)
    assert tracker.update([], 0.4) == []  # not yet ended
    events = tracker.update([], 0.6)
    assert [event["type"] for event in events] == ["end"]
    again = [person(100)]
    assert [event["type"] for event in tracker.update(again, 0.7)] == ["new"] and again[0].id == 2
    assert [event["id"] for event in tracker.end_all(1.0)] == [2]
