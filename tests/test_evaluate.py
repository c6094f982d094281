"""`evaluate` against pycocotools, the reference, on the same detections: unit by unit on random
pictures, and end to end on VOC, YOLO and COCO datasets made here (misses, false positives,
shifted boxes, several classes, a difficult object)."""
import json
import math
import os
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
import pytest

import onnx_models
from evaluation import average_precision, summarise
from streaming import run_app

pycocotools = pytest.importorskip("pycocotools", reason="pycocotools is a test dependency (requirements-dev.txt)")
LABELS = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
          "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def reference(truths, detections, names):
    """pycocotools' (map50, map, {label: (ap50, ap)}): `truths` {image: [(label, box, ignore)]},
    `detections` {image: [(label, box, score)]}, boxes [x1, y1, x2, y2]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    category = {name: index + 1 for index, name in enumerate(names)}
    ground = COCO()
    annotations = [{"id": number, "image_id": image, "category_id": category[label], "iscrowd": int(ignore),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": (box[2] - box[0]) * (box[3] - box[1])}
                   for number, (image, label, box, ignore) in enumerate(
                       ((image, *truth) for image, found in truths.items() for truth in found), 1)]
    ground.dataset = {"images": [{"id": image} for image in truths], "annotations": annotations,
                      "categories": [{"id": number, "name": name} for name, number in category.items()]}
    ground.createIndex()
    results = ground.loadRes([{"image_id": image, "category_id": category[label], "score": score,
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
                              for image, found in detections.items() for label, box, score in found])
    evaluation = COCOeval(ground, results, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # thresholds x recalls x classes, all areas, 100
    per_class = {name: (float(precision[0, :, k].mean()), float(precision[:, :, k].mean()))
                 for k, name in enumerate(names) if (precision[:, :, k] > -1).all()}
    counted = precision[precision > -1]
    return float(precision[0][precision[0] > -1].mean()), float(counted.mean()), per_class


def ours(truths, detections, names):
    pictures = {name: [] for name in names}
    for image, found in truths.items():
        for name in names:
            own = [truth for truth in found if truth[0] == name]
            mine = [detection for detection in detections.get(image, []) if detection[0] == name]
            pictures[name].append((np.array([d[2] for d in mine]), np.array([d[1] for d in mine]).reshape(-1, 4),
                                   np.array([t[1] for t in own], dtype=float).reshape(-1, 4),
                                   np.array([t[2] for t in own], dtype=bool)))
    return summarise({name: average_precision(pictures[name]) for name in names})


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_is_pycocotools(seed):
    random = np.random.RandomState(seed)
    names = ["car", "person", "dog"]
    truths, detections = {}, {}
    for image in range(1, 9):
        truths[image], detections[image] = [], []
        for _ in range(random.randint(0, 6)):
            x, y, w, h = random.uniform(0, 300, 2).tolist() + random.uniform(10, 120, 2).tolist()
            label = names[random.randint(len(names))]
            truths[image].append((label, [x, y, x + w, y + h], random.rand() < 0.1))  # a few ignored
            for _ in range(random.randint(0, 3)):  # found, more or less where it is, and found again
                dx, dy = random.normal(0, 0.15 * w), random.normal(0, 0.15 * h)
                detections[image].append((label, [x + dx, y + dy, x + w + dx, y + h + dy], float(random.rand())))
        for _ in range(random.randint(0, 4)):  # false positives
            x, y = random.uniform(0, 300, 2)
            detections[image].append((names[random.randint(len(names))], [x, y, x + 50, y + 40],
                                      float(random.rand())))
    map50, mean, per_class = reference(truths, detections, names)
    got = ours(truths, detections, names)
    assert got["map50"] == pytest.approx(map50, abs=0.005) and got["map"] == pytest.approx(mean, abs=0.005)
    assert set(got["per_class"]) == set(per_class)
    for name, (ap50, ap) in per_class.items():
        assert got["per_class"][name]["ap50"] == pytest.approx(ap50, abs=0.005)
        assert got["per_class"][name]["ap"] == pytest.approx(ap, abs=0.005)


def test_more_than_100_detections_of_a_class_in_a_picture_count_the_best_100():
    truths = {1: [("car", [10.0 * i, 0.0, 10.0 * i + 8, 8.0], False) for i in range(120)]}
    detections = {1: [("car", [10.0 * i, 0.0, 10.0 * i + 8, 8.0], 1.0 - i / 1000.0) for i in range(120)]}
    map50, mean, _ = reference(truths, detections, ["car"])
    assert ours(truths, detections, ["car"])["map50"] == pytest.approx(map50, abs=1e-4) and map50 < 0.9


def fixed_detections_model(path):
    """A model that finds the same boxes in any picture: of three classes, various scores."""
    grid = np.zeros((125, 13, 13), np.float32)
    grid[4::25] = -20.0
    boxes = [(0, 2, 2, 0, 3.0), (1, 2, 9, 2, 1.0), (0, 7, 4, 7, 2.0), (2, 10, 10, 0, 0.5), (3, 6, 6, 14, 4.0),
             (4, 11, 3, 2, -0.5)]
    for anchor, row, col, class_id, objectness in boxes:
        base = anchor * 25
        grid[base:base + 5, row, col] = [0.0, 0.0, 0.0, 0.0, objectness]
        grid[base + 5 + class_id, row, col] = 6.0
    return onnx_models.constant_grid(path, grid)


def labelled_pictures(folder, detections, seed=0):
    """Pictures whose objects are the model's boxes, some shifted, some left out (false positives),
    one difficult, and objects it misses; {name: [(label, box, difficult)]}, boxes in whole pixels."""
    random, pictures = np.random.RandomState(seed), {}
    for number in range(5):
        name = "shot{}.jpg".format(number)
        cv2.imwrite(os.path.join(folder, name), np.full((416, 416, 3), 90, np.uint8))
        objects = []
        for label, box in detections:
            if random.rand() < 0.7:
                shift = random.randint(-12, 13, 2).tolist() * 2
                objects.append((label, [int(round(v + s)) for v, s in zip(box, shift)], False))
        objects.append(("dog", [300, 300, 360, 380], False))  # missed
        if number == 2:
            objects[0] = (objects[0][0], objects[0][1], True)  # difficult
        pictures[name] = objects
    return pictures


def write_voc(folder, pictures):
    os.makedirs(os.path.join(folder, "Annotations"))
    os.makedirs(os.path.join(folder, "JPEGImages"))
    for name, objects in pictures.items():
        os.rename(os.path.join(folder, name), os.path.join(folder, "JPEGImages", name))
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "filename").text = name
        for label, box, difficult in objects:
            item = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(item, "name").text = label
            ElementTree.SubElement(item, "difficult").text = "1" if difficult else "0"
            corners = ElementTree.SubElement(item, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ElementTree.SubElement(corners, key).text = str(value)
        ElementTree.ElementTree(root).write(os.path.join(folder, "Annotations", name.replace(".jpg", ".xml")))


def write_yolo(folder, pictures):
    for name, objects in pictures.items():
        with open(os.path.join(folder, name.replace(".jpg", ".txt")), "w") as handle:
            for label, (x1, y1, x2, y2), _ in objects:
                handle.write("{} {} {} {} {}\n".format(LABELS.index(label), (x1 + x2) / 832.0, (y1 + y2) / 832.0,
                                                       (x2 - x1) / 416.0, (y2 - y1) / 416.0))


def write_coco(folder, pictures):
    names, annotations = sorted(pictures), []
    for image_id, name in enumerate(names, 1):
        for label, (x1, y1, x2, y2), difficult in pictures[name]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": LABELS.index(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "iscrowd": int(difficult), "area": (x2 - x1) * (y2 - y1)})
    coco = {"images": [{"id": image_id, "file_name": name, "width": 416, "height": 416}
                       for image_id, name in enumerate(names, 1)],
            "annotations": annotations,
            "categories": [{"id": index + 1, "name": label} for index, label in enumerate(LABELS)]}
    path = os.path.join(folder, "labels.json")
    with open(path, "w") as handle:
        json.dump(coco, handle)
    return path


@pytest.mark.parametrize("form", ["voc", "yolo", "coco"])
def test_evaluate_on_a_dataset_agrees_with_pycocotools_on_detects_detections(form, tmp_path):
    model = fixed_detections_model(tmp_path / "fixed.onnx")
    probe = tmp_path / "probe.jpg"
    cv2.imwrite(str(probe), np.full((416, 416, 3), 90, np.uint8))
    found = json.loads(run_app("detect", str(probe), "--model", model, "--conf", "0.001").stdout)["detections"]
    assert len({d["label"] for d in found}) >= 3
    folder = tmp_path / form
    folder.mkdir()
    pictures = labelled_pictures(str(folder), [(d["label"], d["box"]) for d in found])
    dataset = {"voc": lambda: write_voc(str(folder), pictures) or str(folder),
               "yolo": lambda: write_yolo(str(folder), pictures) or str(folder),
               "coco": lambda: write_coco(str(folder), pictures)}[form]()
    result = run_app("evaluate", dataset, "--model", model, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 5 and report["backend"] and report["precision"] == "fp32"
    truths = {name: [(label, box, difficult and form != "yolo") for label, box, difficult in objects]  # YOLO has
              for name, objects in pictures.items()}                                                  # no difficult
    detections = {name: [(d["label"], d["box"], d["score"]) for d in found] for name in pictures}
    names = sorted({label for objects in pictures.values() for label, _, _ in objects}
                   | {d["label"] for d in found})
    map50, mean, per_class = reference(truths, detections, names)
    assert report["map50"] == pytest.approx(map50, abs=0.005) and report["map"] == pytest.approx(mean, abs=0.005)
    assert 0.1 < report["map"] < report["map50"] < 1.0  # neither all found nor none
    assert report["per_class"]["dog"] == {"ap50": 0.0, "ap": 0.0, "objects": 5}
    for name, (ap50, ap) in per_class.items():
        assert report["per_class"][name]["ap50"] == pytest.approx(ap50, abs=0.005), name
    table = run_app("evaluate", dataset, "--model", model).stdout
    assert "mAP" in table and "dog" in table and not math.isnan(report["map"])


def test_labels_the_model_lacks_and_unreadable_pictures_are_named(tmp_path, red_square_model):
    (tmp_path / "a.jpg").write_bytes(b"not a picture")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    cv2.imwrite(str(tmp_path / "b.jpg"), np.full((100, 100, 3), 90, np.uint8))
    (tmp_path / "b.txt").write_text("14 0.5 0.5 0.2 0.2\n")
    result = run_app("evaluate", str(tmp_path), "--model", red_square_model, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["images"] == 1
    assert "a.jpg: not an image OpenCV can read; left out" in result.stderr
    coco = tmp_path / "labels.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "b.jpg"}], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}], "categories": [
        {"id": 1, "name": "airplane"}]}))
    result = run_app("evaluate", str(coco), "--model", red_square_model)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(
        "error: {} has labels the model does not have: airplane (did you mean aeroplane?); its labels are "
        "aeroplane, bicycle".format(coco))
