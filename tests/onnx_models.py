"""ONNX models built with onnx.helper for tests and benchmarks (nothing is downloaded).

- `tiny_yolov2`: the real Tiny YOLOv2 VOC architecture with random weights, for
  shapes, engine agreement and timing; as the zoo's tinyyolov2-8.onnx, its batch
  dimension is symbolic ('None'), it is opset 8 in IR 3 (weights among the inputs), and
  begins with ImageScaler (onnx's checker prints a warning for that experimental operator).
- `constant_grid`: a model whose output is a given grid whatever the image, so a
  decode can be worked out by hand.
- `mismatched_weights`: loads, but its first inference fails.
- `red_square`: pools the image to the 13x13 grid and turns "this cell is red"
  into the objectness of anchor 0 / class 0, so detections follow the picture.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
INPUT_SIZE = 416
GRID = 13
CELL = INPUT_SIZE // GRID


# The IR version of the ONNX release that brought an opset: 8 came with ONNX 1.3, whose
# IR 3 lists every initializer among the graph's inputs too; 13 with ONNX 1.8, IR 7.
IR_OF_OPSET = {8: 3, 13: 7}


def _save(graph, path, opset=OPSET, checked=True):
    ir_version = IR_OF_OPSET[opset]
    if ir_version < 4:
        graph.input.extend(helper.make_tensor_value_info(init.name, init.data_type, init.dims)
                           for init in graph.initializer)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="streamdetect-tests")
    model.ir_version = ir_version
    if checked:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# The zoo's tinyyolov2-8.onnx names its batch dimension 'None' (a symbolic one) on its input
# and its output, rather than giving it the size 1.
ZOO_BATCH = "None"
# It is opset 8 (converted from Core ML with ONNX 1.3: IR 3, its weights listed among the
# inputs), and its first node is ImageScaler (pixels times 1/255), an experimental operator
# ONNX has since dropped, which ONNX Runtime, OpenCV and TensorRT's ONNX parser still read.
ZOO_OPSET = 8


def _image_input(name="image", batch=1):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 3, INPUT_SIZE, INPUT_SIZE])


def _grid_output(channels, name="grid", batch=1):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, channels, GRID, GRID])


def tiny_yolov2(path, seed=0, num_classes=20, num_anchors=5, batch=ZOO_BATCH):
    """Tiny YOLOv2 (VOC): 9 convolutions with batch norm and leaky ReLU, 6 max-pools."""
    rng = np.random.RandomState(seed)
    nodes, inits = [], []
    nodes.append(helper.make_node("ImageScaler", ["image"], ["scaled"], scale=1.0 / 255.0, bias=[0.0, 0.0, 0.0]))
    previous, channels_in = "scaled", 3
    widths = [16, 32, 64, 128, 256, 512, 1024, 1024]
    for index, channels in enumerate(widths):
        name = "conv{}".format(index)
        fan_in = channels_in * 9
        inits.append(numpy_helper.from_array(
            (rng.randn(channels, channels_in, 3, 3) * np.sqrt(2.0 / fan_in)).astype(np.float32), name + "_w"))
        for suffix, value in (("scale", 1.0 + 0.1 * rng.randn(channels)), ("bias", 0.1 * rng.randn(channels)),
                              ("mean", 0.1 * rng.randn(channels)), ("var", 1.0 + 0.1 * rng.rand(channels))):
            inits.append(numpy_helper.from_array(value.astype(np.float32), "{}_{}".format(name, suffix)))
        nodes.append(helper.make_node("Conv", [previous, name + "_w"], [name], pads=[1, 1, 1, 1],
                                      kernel_shape=[3, 3]))
        nodes.append(helper.make_node("BatchNormalization", [name] + ["{}_{}".format(name, s) for s in
                                      ("scale", "bias", "mean", "var")], [name + "_bn"], epsilon=1e-5))
        nodes.append(helper.make_node("LeakyRelu", [name + "_bn"], [name + "_act"], alpha=0.1))
        previous = name + "_act"
        if index < 5:
            nodes.append(helper.make_node("MaxPool", [previous], [name + "_pool"], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            previous = name + "_pool"
        elif index == 5:  # the sixth pool keeps 13x13: stride 1, padded on the far side
            nodes.append(helper.make_node("MaxPool", [previous], [name + "_pool"], kernel_shape=[2, 2],
                                          strides=[1, 1], pads=[0, 0, 1, 1]))
            previous = name + "_pool"
        channels_in = channels
    out_channels = num_anchors * (5 + num_classes)
    inits.append(numpy_helper.from_array(
        (rng.randn(out_channels, channels_in, 1, 1) * 0.02).astype(np.float32), "head_w"))
    inits.append(numpy_helper.from_array((0.5 * rng.randn(out_channels)).astype(np.float32), "head_b"))
    nodes.append(helper.make_node("Conv", [previous, "head_w", "head_b"], ["grid"], kernel_shape=[1, 1]))
    graph = helper.make_graph(nodes, "tiny_yolov2_random", [_image_input(batch=batch)],
                              [_grid_output(out_channels, batch=batch)], initializer=inits)
    return _save(graph, path, ZOO_OPSET)


def _pooled_conv_model(path, weights, bias, constant=None, name="pooled", batch=1):
    """image -> 32x32 average pool (13x13 cells) -> 1x1 conv [-> + constant grid]."""
    channels = weights.shape[0]
    inits = [numpy_helper.from_array(weights.astype(np.float32).reshape(channels, 3, 1, 1), "w"),
             numpy_helper.from_array(bias.astype(np.float32), "b")]
    nodes = [helper.make_node("AveragePool", ["image"], ["cells"], kernel_shape=[CELL, CELL],
                              strides=[CELL, CELL]),
             helper.make_node("Conv", ["cells", "w", "b"], ["conv" if constant is not None else "grid"],
                              kernel_shape=[1, 1])]
    if constant is not None:
        inits.append(numpy_helper.from_array(constant.astype(np.float32).reshape(1, channels, GRID, GRID),
                                             "constant"))
        nodes.append(helper.make_node("Add", ["conv", "constant"], ["grid"]))
    graph = helper.make_graph(nodes, name, [_image_input(batch=batch)], [_grid_output(channels, batch=batch)],
                              initializer=inits)
    return _save(graph, path)


def mismatched_weights(path):
    """A graph that loads but cannot run: its convolution's weights take 4 channels, the
    image has 3."""
    inits = [numpy_helper.from_array(np.ones((125, 4, CELL, CELL), np.float32), "w")]
    nodes = [helper.make_node("Conv", ["image", "w"], ["grid"], kernel_shape=[CELL, CELL], strides=[CELL, CELL])]
    graph = helper.make_graph(nodes, "mismatched", [_image_input()], [_grid_output(125)], initializer=inits)
    return _save(graph, path, checked=False)  # onnx.checker would refuse it, as not every exporter does


def constant_grid(path, grid):
    """A model that outputs `grid` (channels x 13 x 13) for every image."""
    grid = np.asarray(grid, dtype=np.float32)
    channels = grid.shape[0]
    return _pooled_conv_model(path, np.zeros((channels, 3)), np.zeros(channels), constant=grid,
                              name="constant_grid")


def red_square(path, num_classes=20, num_anchors=5, box_cells=(2.5, 3.0),
               anchor=(1.08, 1.19), batch=1):
    """Anchor 0 / class 0 fires where a cell is red (input at 0-255); `batch` as ZOO_BATCH
    makes its batch dimension symbolic, as the zoo's model has it.

    objectness logit = 20 * redness - 10, redness = (R - (G + B) / 2) / 255 of
    the pooled cell, so a fully red cell scores ~1 and a grey one ~0; boxes
    are `box_cells` wide and high, centred on their cell.
    """
    per_anchor = 5 + num_classes
    channels = num_anchors * per_anchor
    weights = np.zeros((channels, 3))
    bias = np.zeros(channels)
    weights[4] = np.array([1.0, -0.5, -0.5]) * 20.0 / 255.0  # channels are RGB
    bias[4] = -10.0
    bias[2] = np.log(box_cells[0] / anchor[0])
    bias[3] = np.log(box_cells[1] / anchor[1])
    bias[5] = 10.0
    for other in range(1, num_anchors):
        bias[other * per_anchor + 4] = -30.0
    return _pooled_conv_model(path, weights, bias, name="red_square", batch=batch)
