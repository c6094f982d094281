"""Labelled pictures to evaluate a model on, in the three forms labelling tools export: a Pascal
VOC folder (Annotations/*.xml beside JPEGImages/), a folder of pictures with YOLO .txt labels
beside them, or a COCO JSON file. Each is read into the same Sample list."""
import collections
import json
import os
import xml.etree.ElementTree as ElementTree

from errors import ModelError
from parsing import slip_for
from pictures import IMAGE_EXTENSIONS, files_in

# One labelled object: its label, [x1, y1, x2, y2] in pixels, and whether it is to be ignored
# (VOC's difficult, COCO's iscrowd): neither found nor missed, whatever the detector says.
Truth = collections.namedtuple("Truth", "label box ignore")
# One picture: its path and its objects; `normalised`: their boxes are fractions of the picture's
# size (YOLO's), which only reading the picture tells in pixels.
Sample = collections.namedtuple("Sample", "path objects normalised")


def read_dataset(path, labels, images=None):
    """The samples of the dataset at `path` (a VOC folder, a folder of pictures with YOLO labels,
    or a COCO JSON file with `images` its pictures' folder); ModelError when it is none of those
    or names labels the model does not have."""
    if os.path.isfile(path) and path.lower().endswith(".json"):
        samples = read_coco(path, images or os.path.dirname(os.path.abspath(path)))
    elif os.path.isdir(os.path.join(path, "Annotations")):
        samples = read_voc(path)
    elif os.path.isdir(path):
        samples = read_yolo(path, labels)
    else:
        raise ModelError("{} is no dataset: give a Pascal VOC folder (Annotations/ and JPEGImages/), a folder of "
                         "pictures with YOLO .txt labels beside them, or a COCO .json file".format(path))
    if not samples:
        raise ModelError("{} holds no labelled pictures".format(path))
    unknown = sorted({truth.label for sample in samples for truth in sample.objects} - set(labels))
    if unknown:
        meant = {label: slip_for(label, labels) for label in unknown}
        raise ModelError("{} has labels the model does not have: {}; its labels are {}".format(path, ", ".join(
            label + (" (did you mean {}?)".format(meant[label]) if meant[label] else "") for label in unknown),
            ", ".join(labels)))
    return samples


def read_voc(folder):
    samples = []
    for annotation in sorted(name for name in os.listdir(os.path.join(folder, "Annotations")) if name.endswith(".xml")):
        path = os.path.join(folder, "Annotations", annotation)
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as exc:
            raise ModelError("{} is not readable XML ({})".format(path, exc))
        filename = root.findtext("filename") or os.path.splitext(annotation)[0] + ".jpg"
        objects = []
        for item in root.iter("object"):
            box = item.find("bndbox")
            corners = [float(box.findtext(name)) for name in ("xmin", "ymin", "xmax", "ymax")]
            difficult = item.findtext("difficult", "0").strip() == "1"
            objects.append(Truth(item.findtext("name").strip(), corners, difficult))
        samples.append(Sample(os.path.join(folder, "JPEGImages", filename), objects, False))
    return samples


def read_yolo(folder, labels):
    """Pictures with a .txt of the same name beside them: one line per object, 'class cx cy w h',
    the class an index into the model's labels, the box normalised to the picture's size."""
    samples = []
    for path in files_in(folder, IMAGE_EXTENSIONS):
        text_path = os.path.splitext(path)[0] + ".txt"
        if not os.path.isfile(text_path):
            continue
        objects = []
        with open(text_path) as handle:
            for number, line in enumerate(handle, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    index, cx, cy, w, h = int(fields[0]), *[float(value) for value in fields[1:5]]
                except ValueError:
                    raise ModelError("{}:{}: a YOLO label is 'class cx cy w h'".format(text_path, number))
                label = labels[index] if 0 <= index < len(labels) else "class {}".format(index)
                objects.append(Truth(label, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], False))
        samples.append(Sample(path, objects, True))
    return samples


def read_coco(path, images):
    with open(path) as handle:
        try:
            coco = json.load(handle)
        except ValueError as exc:
            raise ModelError("{} is not readable JSON ({})".format(path, exc))
    names = {category["id"]: category["name"] for category in coco.get("categories", [])}
    by_image = collections.defaultdict(list)
    for annotation in coco.get("annotations", []):
        x, y, w, h = annotation["bbox"]
        by_image[annotation["image_id"]].append(Truth(names.get(annotation["category_id"], str(annotation[
            "category_id"])), [x, y, x + w, y + h], bool(annotation.get("iscrowd", 0))))
    return [Sample(os.path.join(images, image["file_name"]), by_image[image["id"]], False)
            for image in coco.get("images", [])]


def in_pixels(sample, width, height):
    """The sample's objects with their boxes in pixels of a picture of width x height."""
    if not sample.normalised:
        return sample.objects
    return [truth._replace(box=[truth.box[0] * width, truth.box[1] * height, truth.box[2] * width,
                                truth.box[3] * height]) for truth in sample.objects]
