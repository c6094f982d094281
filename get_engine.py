"""Inference engines behind one small interface.

An engine loads one ONNX model, runs a batch of one and says what it is. Each
backend imports its library only when it is chosen, so a machine with only
OpenCV, or without a GPU, never touches the others.
"""
import logging
import time

import numpy as np

log = logging.getLogger("streamdetect.engine")

BACKENDS = ("auto", "onnxruntime", "opencv")


class ModelError(Exception):
    """The model file cannot serve as a detector; the message says how to fix it."""


class EngineError(Exception):
    """The chosen backend cannot run here; the message says which one to use instead."""


def describe_onnx(model_path):
    """Return (input_name, (N, 3, H, W)) read from the ONNX graph, or raise ModelError."""
    import onnx
    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        raise ModelError("{} is not a readable ONNX model ({}); delete it or pass --model PATH "
                         "to a valid file".format(model_path, str(exc).splitlines()[0] if str(exc) else
                                                  type(exc).__name__))
    initializers = {init.name for init in model.graph.initializer}
    inputs = [inp for inp in model.graph.input if inp.name not in initializers]
    if len(inputs) != 1:
        raise ModelError("{} has {} inputs; a Tiny YOLOv2 detector takes exactly one image input"
                         .format(model_path, len(inputs)))
    dims = inputs[0].type.tensor_type.shape.dim
    shape = []
    for position, dim in enumerate(dims):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(dim.dim_value)
        elif position == 0:
            shape.append(1)  # a symbolic batch runs as a batch of one
        else:
            raise ModelError("{} input '{}' has a dynamic dimension {}; export it with a fixed "
                             "3xHxW size".format(model_path, inputs[0].name, position))
    if len(shape) != 4 or shape[1] != 3:
        raise ModelError("{} input '{}' has shape {}; expected N x 3 x H x W (an RGB image)"
                         .format(model_path, inputs[0].name, shape))
    if not model.graph.output:
        raise ModelError("{} has no output".format(model_path))
    return inputs[0].name, (1,) + tuple(shape[1:])


class Engine(object):
    """What the detector needs from a backend."""

    name = "engine"

    def __init__(self, model_path):
        self.model_path = model_path
        self.input_name, self.input_shape = describe_onnx(model_path)
        self.detail = ""

    def infer(self, blob):
        """Run one float32 NCHW blob; return the model's first output as a NumPy array."""
        raise NotImplementedError

    def close(self):
        """Release the backend's resources."""

    def __repr__(self):
        return "{}({})".format(self.name, self.detail)


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    preferred_providers = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def __init__(self, model_path, threads=0):
        super(OnnxRuntimeEngine, self).__init__(model_path)
        try:
            import onnxruntime
        except ImportError:
            raise EngineError("onnxruntime is not installed; pip install onnxruntime, "
                              "or use --backend opencv")
        available = onnxruntime.get_available_providers()
        providers = [p for p in self.preferred_providers if p in available]
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # Spinning idle worker threads would take the CPU that capture, drawing and
        # encoding need between inferences.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(model_path, sess_options=options,
                                                        providers=providers)
        except Exception as exc:
            raise ModelError("ONNX Runtime cannot load {}: {}".format(
                model_path, str(exc).strip().splitlines()[-1]))
        self.output_name = self.session.get_outputs()[0].name
        self.detail = ",".join(p.replace("ExecutionProvider", "") for p in self.session.get_providers())

    def infer(self, blob):
        return self.session.run([self.output_name], {self.input_name: blob})[0]


class OpenCVEngine(Engine):
    name = "opencv"

    def __init__(self, model_path):
        super(OpenCVEngine, self).__init__(model_path)
        import cv2
        try:
            self.net = cv2.dnn.readNetFromONNX(model_path)
        except cv2.error as exc:
            raise ModelError("OpenCV DNN cannot load {}: {}".format(
                model_path, str(exc).strip().splitlines()[-1]))
        target = "CPU"
        if hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            target = "CUDA"
        self.detail = "{} {}".format(cv2.__version__, target)

    def infer(self, blob):
        self.net.setInput(blob)
        return np.array(self.net.forward(), copy=True)


def _onnxruntime_reason():
    try:
        import onnxruntime
    except ImportError:
        return None, "onnxruntime is not installed"
    return OnnxRuntimeEngine, "onnxruntime {} is installed (providers: {})".format(
        onnxruntime.__version__, ", ".join(onnxruntime.get_available_providers()))


def _opencv_reason():
    try:
        import cv2
    except ImportError:
        return None, "OpenCV is not installed"
    if not hasattr(cv2, "dnn"):
        return None, "this OpenCV build has no dnn module"
    return OpenCVEngine, "OpenCV {} has the dnn module".format(cv2.__version__)


AUTO_ORDER = (("onnxruntime", _onnxruntime_reason), ("opencv", _opencv_reason))


def auto_backend():
    """Return (backend name, reasons): the first backend in AUTO_ORDER that can run here."""
    reasons = []
    for name, probe in AUTO_ORDER:
        engine_class, reason = probe()
        reasons.append("{}: {}".format(name, reason))
        if engine_class is not None:
            return name, reasons
    return None, reasons


def create_engine(model_path, backend="auto"):
    """Open `model_path` on `backend` ('auto' picks the best available and logs why)."""
    if backend == "auto":
        name, reasons = auto_backend()
        if name is None:
            raise EngineError("no inference backend is available ({}); pip install onnxruntime"
                              .format("; ".join(reasons)))
        log.info("backend auto -> %s (%s)", name, "; ".join(reasons))
        backend = name
    engines = {"onnxruntime": OnnxRuntimeEngine, "opencv": OpenCVEngine}
    if backend not in engines:
        raise EngineError("unknown backend '{}'; choose one of {}".format(backend, ", ".join(BACKENDS)))
    started = time.time()
    engine = engines[backend](model_path)
    log.info("loaded %s on %r in %.1f s", model_path, engine, time.time() - started)
    return engine
