"""INT8 models for ONNX Runtime on the CPU: the model made quantizable (the zoo's form is opset 8,
IR 3 with its weights among the inputs, and begins with ImageScaler, which the quantizer
refuses), quantized statically (QDQ) with ranges calibrated on the user's pictures, and cached
under a key of everything it depends on."""
import glob
import hashlib
import logging
import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from engine_files import calibration_batches, calibration_fingerprint, file_sha256
from errors import EngineError, ModelError

log = logging.getLogger("streamdetect.engine")

# The opset the model is converted to before quantizing: ONNX Runtime's quantizer wants 10 or
# more, and 13 is the one our tests' models and the zoo's convert to cleanly.
QUANTIZED_OPSET = 13


def int8_model(model_path, cache_folder, calibration_images, input_name, input_shape, input_scale):
    """The path of `model_path` quantized to INT8, from the cache when its key (the model's
    SHA-256, ONNX Runtime's version, the calibration pictures, the input scale) matches, else
    made now (a minute or so), replacing the copies of the same model made otherwise."""
    import onnxruntime
    if not calibration_images:
        raise EngineError("--precision int8 on ONNX Runtime needs --calibration-images DIR: a folder of pictures "
                          "like the ones the camera sees (a hundred or more)")
    key = hashlib.sha256("|".join([file_sha256(model_path), onnxruntime.__version__,
                                   calibration_fingerprint(calibration_images),
                                   repr(float(input_scale))]).encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(model_path))[0]
    try:
        os.makedirs(cache_folder, exist_ok=True)
    except OSError as exc:
        raise EngineError("cannot make the INT8 model's cache {} ({}); set STREAMDETECT_HOME to a folder that can "
                          "hold it".format(cache_folder, exc.strerror))
    path = os.path.join(cache_folder, "{}-int8-{}.onnx".format(stem, key))
    if os.path.isfile(path):
        log.info("INT8 model from the cache: %s", path)
        return path
    stale = glob.glob(os.path.join(glob.escape(cache_folder), stem + "-int8-*.onnx"))
    if stale:
        log.info("the model, ONNX Runtime, the calibration pictures or --input-scale changed since %s was made: "
                 "quantizing again", ", ".join(os.path.basename(name) for name in stale))
    batches = calibration_batches(calibration_images, input_shape, input_scale)
    log.info("quantizing %s to INT8, calibrated on %d pictures of %s", model_path, len(batches), calibration_images)
    quantize(model_path, path, input_name, batches)
    for name in stale:
        os.remove(name)
    return path


def quantize(model_path, path, input_name, batches):
    """Static QDQ quantization of the model into `path` (written whole or not at all)."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    try:  # shapes inferred and batch norms folded, without which QLinearConv's scales come out wrong
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise EngineError("ONNX Runtime {} cannot quantize this model (1.13 or later can); use --precision fp32"
                          .format(onnxruntime.__version__))

    class Pictures(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            blob = next(self.remaining, None)
            return None if blob is None else {input_name: blob}

    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as folder:
        converted, prepared = os.path.join(folder, "converted.onnx"), os.path.join(folder, "prepared.onnx")
        quantized = os.path.join(folder, "int8.onnx")
        onnx.save(quantizable(model_path), converted)
        try:
            quant_pre_process(converted, prepared, skip_symbolic_shape=True)  # its shapes are fixed: no sympy
            quantize_static(prepared, quantized, Pictures(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise EngineError("ONNX Runtime cannot quantize {} to INT8 ({}); use --precision fp32".format(
                model_path, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__))
        os.replace(quantized, path)


def quantizable(model_path):
    """The model in the form ONNX Runtime's quantizer takes: ImageScaler as Mul and Add, its
    weights no inputs (IR 4 and later), opset QUANTIZED_OPSET."""
    try:
        model = onnx.load(model_path)
    except Exception as exc:
        raise ModelError("{} is not a readable ONNX model ({})".format(model_path, exc))
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    nodes = []
    for node in graph.node:
        nodes += scaler_as_mul_add(node, graph) if node.op_type == "ImageScaler" else [node]
    del graph.node[:]
    graph.node.extend(nodes)
    model.ir_version = max(model.ir_version, 4)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if opset < QUANTIZED_OPSET:
        from onnx import version_converter
        model = version_converter.convert_version(model, QUANTIZED_OPSET)
    return model


def scaler_as_mul_add(node, graph):
    """ImageScaler (y = scale * x + bias per channel) as a Mul and an Add of constants."""
    scale = next((attribute.f for attribute in node.attribute if attribute.name == "scale"), 1.0)
    bias = next((list(attribute.floats) for attribute in node.attribute if attribute.name == "bias"), [])
    scaled = node.output[0] + "_scaled"
    graph.initializer.extend([
        numpy_helper.from_array(np.array(scale, np.float32), node.output[0] + "_scale"),
        numpy_helper.from_array(np.array(bias or [0.0], np.float32).reshape(1, -1, 1, 1), node.output[0] + "_bias")])
    return [helper.make_node("Mul", [node.input[0], node.output[0] + "_scale"], [scaled]),
            helper.make_node("Add", [scaled, node.output[0] + "_bias"], [node.output[0]])]
