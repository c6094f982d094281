"""Inference engines behind one small interface.

An engine loads one ONNX model, runs a batch of frames (of one, unless the model's
batch dimension is symbolic and batching pays on that backend) and says what it is. Each
backend imports its library only when it is chosen, so a machine with only
OpenCV, or without a GPU, never touches the others.
"""
import logging
import os
import threading
import time
import traceback

import numpy as np

from engine_files import calibrated_on, calibration_batches, calibration_fingerprint, engine_cache_key, \
    file_sha256, note_calibration, write_atomically
from errors import EngineError, ModelError

log = logging.getLogger("streamdetect.engine")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "opencv")


def last_line(exc):
    """An exception's message in one line: its last (ONNX Runtime's and OpenCV's span several,
    the reason last), or its type's name when it has none."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def describe_onnx(model_path):
    """Return (input_name, (1, 3, H, W), whether the batch is symbolic) read from the ONNX
    graph, or raise ModelError."""
    import onnx
    if os.path.isfile(model_path) and os.path.getsize(model_path) == 0:
        raise ModelError("{} is empty (0 bytes), not an ONNX model (a copy or download that failed?); pass "
                         "--model PATH to an ONNX file".format(model_path))
    try:
        model = onnx.load(model_path, load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        raise ModelError("{} is not a readable ONNX model ({}); pass --model PATH to an ONNX file".format(
            model_path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
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
    symbolic = not (dims[0].HasField("dim_value") and dims[0].dim_value > 0)
    return inputs[0].name, (1,) + tuple(shape[1:]), symbolic


class Engine(object):
    """What the detector needs from a backend."""

    name = "engine"
    # True when inference runs on OpenCV's own worker pool, which the pipeline must then
    # leave at its full size.
    uses_opencv_threads = False
    # How many infer() calls the pipeline runs at once; more than one only where the
    # backend is thread-safe and gains throughput from it.
    frames_in_flight = 1
    # The arithmetic the model runs in (TensorRT's engines choose theirs).
    precision = "fp32"
    # The most frames (of as many cameras) one infer() call takes.
    max_batch = 1

    def __init__(self, model_path):
        self.model_path = model_path
        self.input_name, self.input_shape, self.symbolic_batch = describe_onnx(model_path)
        self.detail = ""

    def _choose_batch(self, asked, cameras, pays):
        """max_batch: `asked` (--batch; 0: `cameras` where batching `pays` on this backend, else
        1), or 1 for a model whose batch dimension is fixed."""
        wanted = int(asked or 0) or (int(cameras) if pays else 1)
        if wanted > 1 and not self.symbolic_batch:
            log.info("%s has a fixed batch of one: the cameras' frames run one at a time", self.model_path)
            wanted = 1
        self.max_batch = max(1, wanted)

    def infer(self, blob):
        """Run a float32 NCHW blob of 1 to max_batch frames; return the model's first output
        (a row per frame) as a NumPy array."""
        raise NotImplementedError

    def close(self):
        """Release the backend's resources."""

    def __repr__(self):
        return "{}({})".format(self.name, self.detail)


def usable_cores():
    """CPU cores this process may run on (a container's cpuset included)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def onnxruntime_providers(available, cache_folder=None):
    """ONNX Runtime's providers in order of preference: TensorRT (with its engines
    cached beside ours) and CUDA where this build has them, then the CPU."""
    providers = []
    if "TensorrtExecutionProvider" in available and cache_folder:
        providers.append(("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                        "trt_engine_cache_path": cache_folder,
                                                        "trt_fp16_enable": True}))
    providers += [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return providers


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, model_path, cache_folder=None, frames_in_flight=1, precision="auto",
                 calibration_images=None, input_scale=None, batch=0, cameras=1):
        """frames_in_flight: how many infer() calls will run at once, each then given its
        share of the cores; 0 = 2 when the model runs on a CPU with 2 cores or more.
        precision int8: the model quantized, calibrated on `calibration_images` (int8_model).
        batch: the most frames of `cameras` cameras one call takes (0: 1 on the CPU, where a
        batch was measured no faster, docs/benchmarks.md; `cameras` on a GPU)."""
        super(OnnxRuntimeEngine, self).__init__(model_path)
        try:
            import onnxruntime
        except ImportError:
            raise EngineError("onnxruntime is not installed; pip install onnxruntime, "
                              "or use --backend opencv")
        runs = self._model_to_run(precision, cache_folder, calibration_images, input_scale)
        available = onnxruntime.get_available_providers()
        if "TensorrtExecutionProvider" in available and cache_folder:
            try:
                os.makedirs(cache_folder, exist_ok=True)
            except OSError as exc:  # without a cache it would rebuild at every start: CUDA instead
                log.warning("cannot make %s (%s): ONNX Runtime runs on CUDA, not TensorRT", cache_folder,
                            exc.strerror or exc)
                cache_folder = None
        providers = onnxruntime_providers(available, cache_folder)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning idle worker threads would take the CPU that capture, drawing and
        # encoding need between inferences.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cpu_only = [p if isinstance(p, str) else p[0] for p in providers] == ["CPUExecutionProvider"]
        cores = usable_cores()
        self.frames_in_flight = int(frames_in_flight) or (2 if cpu_only and cores >= 2 else 1)
        self._choose_batch(batch, cameras, pays=not cpu_only)
        if self.frames_in_flight > 1:
            options.intra_op_num_threads = max(1, cores // self.frames_in_flight)
        try:
            self.session = onnxruntime.InferenceSession(runs, sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelError("ONNX Runtime cannot load {}: {}".format(model_path, last_line(exc)))
        self.output_name = self.session.get_outputs()[0].name
        self.detail = ",".join(p.replace("ExecutionProvider", "") for p in self.session.get_providers())
        if self.precision == "int8":
            self.detail += ", int8"
        if self.frames_in_flight > 1:
            threads = options.intra_op_num_threads
            self.detail += ", {} frames x {} thread{}".format(self.frames_in_flight, threads,
                                                               "s" if threads > 1 else "")
        if self.max_batch > 1:
            self.detail += ", batches of up to {}".format(self.max_batch)

    def _model_to_run(self, precision, cache_folder, calibration_images, input_scale):
        """The model file to load: the one given, or its INT8 copy; fp16 is a GPU's."""
        if precision == "fp16":
            raise EngineError("--precision fp16 is for TensorRT on a GPU; ONNX Runtime on the CPU runs fp32 "
                              "(auto) or int8")
        if precision != "int8":
            return self.model_path
        if not cache_folder:
            raise EngineError("--precision int8 needs a folder for its quantized model")
        from int8_model import int8_model
        self.precision = "int8"
        return int8_model(self.model_path, cache_folder, calibration_images, self.input_name, self.input_shape,
                          1.0 if input_scale is None else input_scale)

    def infer(self, blob):
        return self.session.run([self.output_name], {self.input_name: blob})[0]


class OpenCVEngine(Engine):
    name = "opencv"
    uses_opencv_threads = True

    def __init__(self, model_path, precision="auto"):
        if precision not in ("auto", "fp32"):
            raise EngineError("--precision {} is not OpenCV DNN's, which runs fp32: use --backend onnxruntime for "
                              "int8, tensorrt for fp16".format(precision))
        super(OpenCVEngine, self).__init__(model_path)
        import cv2
        try:
            self.net = cv2.dnn.readNetFromONNX(model_path)
        except cv2.error as exc:
            raise ModelError("OpenCV DNN cannot load {}: {}".format(model_path, last_line(exc)))
        target = "CPU"
        if hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            target = "CUDA"
        self.detail = "{} {}".format(cv2.__version__, target)

    def infer(self, blob):
        self.net.setInput(blob)
        return np.array(self.net.forward(), copy=True)


PRECISIONS = ("auto", "fp32", "fp16", "int8")


class _Ticker(object):
    """Logs that a long step is still running, every `every` seconds."""

    def __init__(self, what, every=30.0):
        self.what, self.every = what, every
        self.done = threading.Event()
        self.started = time.monotonic()

    def __enter__(self):
        thread = threading.Thread(target=self._run, name="ticker")
        thread.daemon = True
        thread.start()
        return self

    def _run(self):
        while not self.done.wait(self.every):
            log.info("%s: still running, %.0f s so far", self.what, time.monotonic() - self.started)

    def __exit__(self, *exc):
        self.done.set()
        return False


class TensorRTEngine(Engine):
    """An ONNX model built into a TensorRT engine, cached on disk, run with pycuda.

    The cache file's name carries a key of the ONNX file's SHA-256, the
    TensorRT version, the GPU and its compute capability, the precision and
    the input shape, so an engine is never loaded where it was not built for.
    """

    name = "tensorrt"

    def __init__(self, model_path, cache_folder, precision="auto", workspace_mb=256, calibration_images=None,
                 input_scale=1.0, batch=0, cameras=1):
        """batch: the most frames one run takes, the engine built for 1..batch (0: one per camera,
        which a GPU infers together faster than one by one)."""
        super(TensorRTEngine, self).__init__(model_path)
        self._choose_batch(batch, cameras, pays=True)
        trt, cuda = import_tensorrt()
        import common
        self.trt, self.cuda = trt, cuda
        self.logger = trt.Logger(trt.Logger.WARNING)
        gpu_name, capability = common.gpu_description(cuda)
        self.cuda_context = common.CudaContext(cuda)
        try:
            # TensorRT's objects free GPU resources when they go: all are made, and let go,
            # with the context current (the builder and runtime before this block ends).
            with self.cuda_context:
                self.runner = self._runner(cache_folder, precision, gpu_name, capability, workspace_mb,
                                           calibration_images, input_scale)
        except BaseException as exc:
            with self.cuda_context:  # the failed steps' frames hold TensorRT objects too
                traceback.clear_frames(exc.__traceback__)
            self.cuda_context.release()
            raise
        self.detail = "TensorRT {} {} on {} (sm {}){}".format(
            trt.__version__, self.precision, gpu_name, capability,
            ", batches of up to {}".format(self.max_batch) if self.max_batch > 1 else "")

    def _runner(self, cache_folder, precision, gpu_name, capability, workspace_mb, calibration_images, input_scale):
        """The runner of the engine loaded from the cache, or built (and cached) now."""
        import common
        trt = self.trt
        builder = trt.Builder(self.logger)
        self.precision = self._choose_precision(builder, precision)
        key = engine_cache_key(file_sha256(self.model_path), trt.__version__, gpu_name, capability, self.precision,
                               (self.max_batch,) + self.input_shape[1:], input_scale if self.precision == "int8" else None)
        stem = os.path.splitext(os.path.basename(self.model_path))[0]
        self.engine_path = os.path.join(cache_folder, "{}-{}-{}.engine".format(stem, self.precision, key))
        try:
            os.makedirs(cache_folder, exist_ok=True)
        except OSError:
            pass  # the engine is built all the same; _save says it cannot be kept
        calibration = None
        if self.precision == "int8" and calibration_images and os.path.isdir(calibration_images):
            calibration = calibration_fingerprint(calibration_images)
        stale = calibration and not calibrated_on(self.engine_path, calibration, calibration_images)
        engine = None if stale else self._load_cached()
        if engine is None:
            serialized = self._build(builder, workspace_mb, calibration_images, input_scale)
            self._save(serialized)
            if calibration:
                note_calibration(self.engine_path, calibration)
            engine = trt.Runtime(self.logger).deserialize_cuda_engine(serialized)
            if engine is None:
                raise EngineError("TensorRT could not load the engine it just built from {}".format(self.model_path))
        return common.TrtRunner(trt, self.cuda, engine, self.cuda_context, self.max_batch)

    def _choose_precision(self, builder, precision):
        trt = self.trt
        has_fp16_flag = hasattr(trt.BuilderFlag, "FP16")
        fast_fp16 = getattr(builder, "platform_has_fast_fp16", False)
        if precision == "auto":
            return "fp16" if has_fp16_flag and fast_fp16 else "fp32"
        if precision == "fp16" and has_fp16_flag and not fast_fp16:
            raise EngineError("--precision fp16: this GPU has no fast FP16; use --precision fp32")
        if precision == "fp16" and not has_fp16_flag:
            self._require_fp16_conversion()
        if precision == "int8":
            if not getattr(builder, "platform_has_fast_int8", False):
                raise EngineError("--precision int8: this GPU has no fast INT8 (a Jetson Nano has "
                                  "none); use --precision fp16 or fp32")
            if not hasattr(trt, "IInt8EntropyCalibrator2"):
                raise EngineError("--precision int8: TensorRT {} has no INT8 calibration; use an "
                                  "INT8-quantized ONNX model or --precision fp16".format(trt.__version__))
        if precision not in PRECISIONS:
            raise EngineError("unknown --precision '{}'; choose one of {}".format(precision, ", ".join(PRECISIONS)))
        return precision

    def _require_fp16_conversion(self):
        """TensorRT 11+ builds strongly typed networks: FP16 means an FP16 ONNX model."""
        try:
            from onnxconverter_common import float16  # noqa: F401
        except ImportError:
            raise EngineError("--precision fp16 with TensorRT {} needs an FP16 ONNX model (networks "
                              "are strongly typed): pip install onnxconverter-common to convert it "
                              "here, or use --precision fp32".format(self.trt.__version__))

    def _save(self, serialized):
        """Cache a built engine; one that cannot be saved is used all the same."""
        try:
            write_atomically(self.engine_path, serialized)
            log.info("engine saved to %s", self.engine_path)
        except OSError as exc:
            log.warning("cannot save the engine to %s (%s); it will be built again at the next start "
                        "($STREAMDETECT_HOME sets where engines are kept)", self.engine_path, exc.strerror or exc)

    @property
    def _calibration_cache(self):
        """TensorRT's INT8 scales for the engine, kept so that a rebuild skips calibration."""
        return self.engine_path + ".calibration"

    def _load_cached(self):
        if not os.path.isfile(self.engine_path):
            return None
        with open(self.engine_path, "rb") as handle:
            data = handle.read()
        try:
            engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(data)
        except Exception as exc:
            engine, reason = None, exc
        else:
            reason = "it does not deserialize"
        if engine is None:
            log.warning("cached engine %s cannot be loaded (%s); rebuilding it", self.engine_path, reason)
            os.remove(self.engine_path)
            return None
        log.info("loaded cached engine %s", self.engine_path)
        return engine

    def _network_source(self):
        """The ONNX bytes to build from (converted to FP16 where TensorRT needs that)."""
        if self.precision == "fp16" and not hasattr(self.trt.BuilderFlag, "FP16"):
            import onnx
            from onnxconverter_common import float16
            model = float16.convert_float_to_float16(onnx.load(self.model_path), keep_io_types=True)
            log.info("converted %s to FP16 for a strongly typed TensorRT network", self.model_path)
            return model.SerializeToString()
        with open(self.model_path, "rb") as handle:
            return handle.read()

    def _build(self, builder, workspace_mb, calibration_images, input_scale):
        trt = self.trt
        flags = 0
        major = int(trt.__version__.split(".")[0])
        if major < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if self.precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self._network_source()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            for error in errors:
                log.error("TensorRT ONNX parser: %s", error)
            raise EngineError("TensorRT's ONNX parser rejected {} ({} error(s): {})".format(
                self.model_path, len(errors), "; ".join(errors) or "no details"))
        image = network.get_input(0)
        config = builder.create_builder_config()
        if self.max_batch > 1:
            self._batch_profile(builder, config, image.name)
        elif any(dim < 0 for dim in image.shape):
            # The zoo's Tiny YOLOv2 declares a symbolic batch ('None'), and TensorRT refuses to
            # build a network with a dynamic input that has no optimization profile: fixed to
            # a batch of one, as ONNX Runtime runs it, the engine's shapes are all static.
            log.info("%s has a symbolic input shape %s; building for %s", self.model_path,
                     tuple(image.shape), self.input_shape)
            image.shape = list(self.input_shape)
        workspace = int(workspace_mb) << 20
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        else:
            config.max_workspace_size = workspace
        if self.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 would drift from ONNX Runtime
        if self.precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        elif self.precision == "int8":
            import common
            config.int8_calibrator = common.make_calibrator(
                trt, self.cuda, calibration_batches(calibration_images, self.input_shape, input_scale),
                self._calibration_cache)
            config.set_flag(trt.BuilderFlag.INT8)
        what = "building the TensorRT engine ({}, workspace {} MB)".format(self.precision, workspace_mb)
        log.info("%s from %s; this takes minutes on a Jetson Nano", what, self.model_path)
        started = time.monotonic()
        with _Ticker(what):
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError("TensorRT could not build an engine from {} (see its messages above); "
                              "try --precision fp32 or a larger --workspace-mb".format(self.model_path))
        log.info("engine built in %.0f s", time.monotonic() - started)
        return bytes(serialized)

    def _batch_profile(self, builder, config, name):
        """Let the engine run batches of 1 to max_batch frames (tuned for the largest: every
        camera's frame at once); INT8 calibration runs its batches of one."""
        one = self.input_shape
        most = (self.max_batch,) + one[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(name, one, most, most)
        config.add_optimization_profile(profile)
        if self.precision == "int8" and hasattr(config, "set_calibration_profile"):
            calibration = builder.create_optimization_profile()
            calibration.set_shape(name, one, one, one)
            config.set_calibration_profile(calibration)
        log.info("building for batches of 1 to %d frames (--batch)", self.max_batch)

    def infer(self, blob):
        return self.runner.run(blob)

    def close(self):
        runner, self.runner = getattr(self, "runner", None), None
        if runner is not None:
            runner.release()


def import_tensorrt():
    """(tensorrt, pycuda.driver) or EngineError saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError("TensorRT's Python bindings are not installed (on a Jetson they come with "
                          "JetPack; in Docker run with --runtime nvidia); use --backend onnxruntime")
    try:
        import common
        cuda = common.cuda_driver()
    except ImportError:
        raise EngineError("pycuda is not installed (pip install pycuda, with nvcc on PATH); "
                          "use --backend onnxruntime")
    except Exception as exc:
        raise EngineError("CUDA cannot start ({}); use --backend onnxruntime".format(exc))
    return trt, cuda


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


def _tensorrt_reason():
    try:
        import tensorrt
    except ImportError:
        return None, "TensorRT's Python bindings are not installed"
    try:
        import common
        cuda = common.cuda_driver()
        count = cuda.Device.count()
    except ImportError:
        return None, "TensorRT {} is installed but pycuda is not".format(tensorrt.__version__)
    except Exception as exc:
        return None, "TensorRT {} is installed but CUDA cannot start ({})".format(tensorrt.__version__, exc)
    if not count:
        return None, "TensorRT {} is installed but there is no CUDA device".format(tensorrt.__version__)
    name, capability = common.gpu_description(cuda)
    return TensorRTEngine, "TensorRT {} with {} (sm {})".format(tensorrt.__version__, name, capability)


AUTO_ORDER = (("tensorrt", _tensorrt_reason), ("onnxruntime", _onnxruntime_reason), ("opencv", _opencv_reason))
ENGINES = {"tensorrt": TensorRTEngine, "onnxruntime": OnnxRuntimeEngine, "opencv": OpenCVEngine}
# The `create_engine` options each backend takes (cache_folder: where ONNX Runtime's
# TensorRT provider and our TensorRT engine keep their built engines).
ENGINE_OPTIONS = {"tensorrt": ("cache_folder", "precision", "workspace_mb", "calibration_images", "input_scale",
                               "batch", "cameras"),
                  "onnxruntime": ("cache_folder", "frames_in_flight", "precision", "calibration_images",
                                  "input_scale", "batch", "cameras"),
                  "opencv": ("precision",)}


def auto_backends():
    """(backends that can run here in AUTO_ORDER, one reason line per backend)."""
    usable, reasons = [], []
    for name, probe in AUTO_ORDER:
        engine_class, reason = probe()
        reasons.append("{}: {}".format(name, reason))
        if engine_class is not None:
            usable.append(name)
    return usable, reasons


def _open(backend, model_path, options):
    if backend not in ENGINES:
        raise EngineError("unknown backend '{}'; choose one of {}".format(backend, ", ".join(BACKENDS)))
    if backend == "tensorrt" and not options.get("cache_folder"):
        raise EngineError("the TensorRT backend needs a folder for its engine cache")
    started = time.monotonic()
    engine = ENGINES[backend](model_path, **{k: v for k, v in options.items() if k in ENGINE_OPTIONS[backend]})
    log.info("loaded %s on %r in %.1f s", model_path, engine, time.monotonic() - started)
    return engine


def create_engine(model_path, backend="auto", **options):
    """Open `model_path` on `backend`. 'auto' tries the best available first, logs
    why, and falls back to the next when one cannot run; a named backend that
    cannot run is an error. `options` go to the TensorRT engine."""
    if backend != "auto":
        return _open(backend, model_path, options)
    usable, reasons = auto_backends()
    log.info("backend auto: %s", "; ".join(reasons))
    for name in usable:
        try:
            engine = _open(name, model_path, options)
        except EngineError as exc:
            log.warning("backend auto: %s cannot run this model (%s); trying the next", name, exc)
            continue
        log.info("backend auto -> %s", name)
        return engine
    raise EngineError("no inference backend can run {} ({}); pip install onnxruntime".format(
        model_path, "; ".join(reasons)))
