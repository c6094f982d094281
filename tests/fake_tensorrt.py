"""Stand-ins for the `tensorrt` and `pycuda.driver` modules, for testing our
TensorRT engine's logic (cache, build, errors, buffers, contexts) without a GPU.

They follow the real APIs' shapes: TensorRT 8.2's bindings API or 8.5+/10's
tensor API, chosen by version. A "serialized engine" is a marker, the network's
input shapes and the ONNX bytes, and "executing" it runs ONNX Runtime, so outputs
can be checked. As TensorRT does, the builder refuses a network whose input has a
dynamic dimension (-1, from a symbolic ONNX one) when no optimization profile
covers it; an engine built with one takes any batch its profile allows, once the
execution context is told it (set_binding_shape in 8.2, set_input_shape since 8.5). Like CUDA, device calls fail unless a context is current in the calling
thread; TensorRT objects note being let go without one, and a context detached
as pycuda does it notes being leaked.
"""
import json
import sys
import threading
import types

import numpy as np

MAGIC = b"FAKE-TRT-ENGINE\n"


class FakeCuda(object):
    """State shared by one pair of fake modules: what happened, what to break."""

    def __init__(self, trt_version="8.6.1", gpu="Fake Nano", capability=(5, 3), fast_fp16=True,
                 fast_int8=False, outputs_first=False):
        self.trt_version = trt_version
        self.outputs_first = outputs_first  # engines may number an output before the input
        self.gpu, self.capability = gpu, capability
        self.fast_fp16, self.fast_int8 = fast_fp16, fast_int8
        self.builds = []            # (network flags, config flags, workspace) per build
        self.build_errors = []      # what TensorRT's logger would have said of a failed build
        self.fail_build = False
        self.parser_errors = []
        self.fail_execute = False
        self.calibration_maxima = []  # the largest input value of each INT8 calibration batch
        self.profiles = []  # {input: (min, opt, max)} of each build's optimization profile
        self.calibration_profiles = []
        self.memory = {}
        self.local = threading.local()
        self.pushes = self.pops = 0
        self.contexts = []  # made and not yet detached
        self.leaked_contexts = 0
        self.destroyed_without_context = []  # TensorRT objects let go with no context current

    # --- helpers --------------------------------------------------------
    def stack(self):
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def require_context(self):
        if not self.stack():
            raise RuntimeError("explicit_context_dependent failed: invalid device context")

    def install(self, monkeypatch):
        trt, pycuda, driver = self.modules()
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "pycuda", pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
        return trt

    def modules(self):
        fake = self
        major = int(self.trt_version.split(".")[0])
        minor = int(self.trt_version.split(".")[1])
        tensor_api = (major, minor) >= (8, 5)

        # --- pycuda.driver ---------------------------------------------------
        driver = types.ModuleType("pycuda.driver")

        class Context(object):
            def push(self):
                fake.pushes += 1
                fake.stack().append(self)

            def pop(self):
                fake.pops += 1
                assert fake.stack() and fake.stack()[-1] is self, "pop of a context that is not current"
                fake.stack().pop()

            def detach(self):
                """As pycuda's: destroyed when current, or pushed and destroyed by the
                thread that made it; from another thread, only marked dead (the CUDA
                context stays, with its device memory, until the process ends)."""
                assert self in fake.contexts, "detach of a dead context"
                fake.contexts.remove(self)
                current = fake.stack() and fake.stack()[-1] is self
                if current:  # the pop is implicit in the detach
                    fake.pops += 1
                    fake.stack().pop()
                elif self.thread != threading.get_ident():
                    fake.leaked_contexts += 1

        class Device(object):
            def __init__(self, index):
                self.index = index

            @staticmethod
            def count():
                return 1

            def name(self):
                return fake.gpu

            def compute_capability(self):
                return fake.capability

            def make_context(self):
                context = Context()
                context.thread = threading.get_ident()
                fake.contexts.append(context)
                context.push()
                return context

        class Allocation(object):
            counter = [0x1000]

            def __init__(self, nbytes):
                fake.require_context()
                self.pointer = Allocation.counter[0]
                Allocation.counter[0] += 0x1000 + nbytes
                fake.memory[self.pointer] = np.zeros(nbytes, dtype=np.uint8)

            def __int__(self):
                return self.pointer

            def free(self):
                fake.require_context()
                del fake.memory[self.pointer]

        class Stream(object):
            handle = 0

            def __init__(self):
                fake.require_context()

            def synchronize(self):
                fake.require_context()

        def memcpy_htod(device, host, stream=None):  # as CUDA's: host's bytes to the start of device's
            fake.require_context()
            data = np.ascontiguousarray(host).view(np.uint8).ravel()
            fake.memory[int(device)][:data.size] = data

        def memcpy_dtoh(host, device, stream=None):
            fake.require_context()
            host.view(np.uint8)[:] = fake.memory[int(device)][:host.nbytes]

        driver.init = lambda: None
        driver.Device = Device
        driver.mem_alloc = Allocation
        driver.pagelocked_empty = lambda count, dtype: np.empty(count, dtype=dtype)
        driver.memcpy_htod = memcpy_htod
        driver.memcpy_htod_async = memcpy_htod
        driver.memcpy_dtoh_async = memcpy_dtoh
        driver.Stream = Stream
        pycuda = types.ModuleType("pycuda")
        pycuda.driver = driver

        # --- tensorrt --------------------------------------------------------
        trt = types.ModuleType("tensorrt")
        trt.__version__ = self.trt_version

        class NeedsContextToDie(object):
            """TensorRT's builder, runtime, engine and execution context free GPU resources
            when they go, which fails ("invalid device context") without the context."""

            def __del__(self):
                if not fake.stack():
                    fake.destroyed_without_context.append(type(self).__name__)

        class Logger(object):
            WARNING = 2

            def __init__(self, level):
                self.level = level

        class NetworkDefinitionCreationFlag(object):
            EXPLICIT_BATCH = 0

        class BuilderFlag(object):
            INT8 = 1
            FP16 = 0

        if major >= 11:  # strongly typed networks only
            del BuilderFlag.FP16
            NetworkDefinitionCreationFlag.STRONGLY_TYPED = 1
            del NetworkDefinitionCreationFlag.EXPLICIT_BATCH

        class MemoryPoolType(object):
            WORKSPACE = 0

        class TensorIOMode(object):
            INPUT, OUTPUT = 0, 1

        class Tensor(object):
            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class Network(object):
            def __init__(self, flags):
                self.flags = flags
                self.onnx = None
                self.inputs = []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, index):
                return self.inputs[index]

        class Config(object):
            def __init__(self):
                self.flags = set()
                self.workspace = None
                self.int8_calibrator = None
                self.profiles = []
                self.calibration_profile = None

            def set_flag(self, flag):
                self.flags.add(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

        class OptimizationProfile(object):
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, min, opt, max):
                assert all(len(dims) == 4 for dims in (min, opt, max))
                assert all(a <= b <= c for a, b, c in zip(min, opt, max)), (min, opt, max)
                self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        if (major, minor) >= (8, 4):
            Config.set_memory_pool_limit = lambda self, pool, size: setattr(self, "workspace", size)

        class Builder(NeedsContextToDie):
            def __init__(self, logger):
                fake.require_context()
                self.platform_has_fast_fp16 = fake.fast_fp16
                self.platform_has_fast_int8 = fake.fast_int8

            def create_network(self, flags):
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return OptimizationProfile()

            def build_serialized_network(self, network, config):
                fake.require_context()
                workspace = config.workspace
                if workspace is None:
                    workspace = getattr(config, "max_workspace_size", None)
                fake.builds.append((network.flags, set(config.flags), workspace))
                if fake.fail_build:
                    return None
                profile = config.profiles[0].shapes if config.profiles else {}
                fake.profiles.append(profile)
                if config.calibration_profile is not None:
                    fake.calibration_profiles.append(config.calibration_profile.shapes)
                if any(dim < 0 and tensor.name not in profile for tensor in network.inputs for dim in tensor.shape):
                    fake.build_errors.append("Network has dynamic or shape inputs, but no optimization "
                                             "profile has been defined.")
                    return None
                calibrator = config.int8_calibrator
                if calibrator is not None and calibrator.read_calibration_cache() is None:  # else no batches
                    while True:
                        pointers = calibrator.get_batch(["image"])
                        if pointers is None:
                            break
                        fake.calibration_maxima.append(float(fake.memory[pointers[0]].view(np.float32).max()))
                    calibrator.write_calibration_cache(b"FAKE-CALIBRATION")
                shapes = dict((tensor.name, {"shape": [int(dim) for dim in tensor.shape],
                                             "most": list(profile[tensor.name][2]) if tensor.name in profile else None})
                              for tensor in network.inputs)
                return MAGIC + json.dumps(shapes).encode() + b"\n" + network.onnx

        class ParserError(object):
            def __init__(self, text):
                self.text = text

            def __str__(self):
                return self.text

        class OnnxParser(object):
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0

            def parse(self, data):
                if fake.parser_errors:
                    self.num_errors = len(fake.parser_errors)
                    return False
                import onnx
                graph = onnx.load_from_string(bytes(data)).graph
                constants = set(init.name for init in graph.initializer)
                self.network.inputs = [Tensor(value.name, [dim.dim_value if dim.HasField("dim_value") else -1
                                                           for dim in value.type.tensor_type.shape.dim])
                                       for value in graph.input if value.name not in constants]
                self.network.onnx = data
                return True

            def get_error(self, index):
                return ParserError(fake.parser_errors[index])

        class Engine(NeedsContextToDie):
            def __init__(self, serialized):
                import onnxruntime
                shapes, onnx_bytes = serialized.split(b"\n", 1)
                shapes = json.loads(shapes.decode())
                self.session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
                self.io = [(i.name, tuple(shapes[i.name]["shape"]), True) for i in self.session.get_inputs()]
                self.most = shapes[self.io[0][0]]["most"]  # the profile's largest input, or None
                one = [1 if dim < 0 else dim for dim in self.io[0][1]]
                outputs = self.session.run(None, {self.io[0][0]: np.zeros(one, np.float32)})
                self.io += [(o.name, (-1,) + out.shape[1:] if self.most else out.shape, False)
                            for o, out in zip(self.session.get_outputs(), outputs)]
                if fake.outputs_first:
                    self.io = self.io[1:] + self.io[:1]

            def create_execution_context(self):
                fake.require_context()
                return ExecutionContext(self)

        if tensor_api:
            Engine.num_io_tensors = property(lambda self: len(self.io))
            Engine.get_tensor_name = lambda self, i: self.io[i][0]
            Engine.get_tensor_shape = lambda self, name: dict((n, s) for n, s, _ in self.io)[name]
            Engine.get_tensor_dtype = lambda self, name: "float32"
            Engine.get_tensor_mode = lambda self, name: (
                TensorIOMode.INPUT if dict((n, i) for n, _, i in self.io)[name] else TensorIOMode.OUTPUT)
        else:
            Engine.num_bindings = property(lambda self: len(self.io))
            Engine.get_binding_name = lambda self, i: self.io[i][0]
            Engine.get_binding_shape = lambda self, i: self.io[i][1]
            Engine.get_binding_dtype = lambda self, i: "float32"
            Engine.binding_is_input = lambda self, i: self.io[i][2]

        class ExecutionContext(NeedsContextToDie):
            def __init__(self, engine):
                self.engine = engine
                self.addresses = {}
                self.batch = None if engine.most else engine.io[0][1][0]  # a dynamic one is set before use

            def _set_batch(self, shape):
                if not self.engine.most or tuple(shape[1:]) != tuple(self.engine.most[1:]) \
                        or not 1 <= shape[0] <= self.engine.most[0]:
                    return False
                self.batch = shape[0]
                return True

            def _shape(self, name):
                [shape] = [shape for io_name, shape, _ in self.engine.io if io_name == name]
                return (self.batch,) + tuple(shape[1:]) if shape[0] < 0 else tuple(shape)

            def _execute(self, addresses):
                fake.require_context()
                if fake.fail_execute:
                    return False
                assert self.batch is not None, "a dynamic input's shape was never set"
                [(name, _, _)] = [io for io in self.engine.io if io[2]]
                shape = self._shape(name)
                data = fake.memory[addresses[name]].view(np.float32)[:int(np.prod(shape))].reshape(shape)
                outputs = self.engine.session.run(None, {name: data})
                for (out_name, _, _), value in zip([io for io in self.engine.io if not io[2]], outputs):
                    data = value.astype(np.float32).view(np.uint8).ravel()
                    fake.memory[addresses[out_name]][:data.size] = data
                return True

            def set_tensor_address(self, name, pointer):
                self.addresses[name] = pointer

            def execute_async_v3(self, stream_handle):
                return self._execute(self.addresses)

            def execute_async_v2(self, bindings, stream_handle):
                return self._execute(dict((n, p) for (n, _, _), p in zip(self.engine.io, bindings)))

        if tensor_api:
            ExecutionContext.set_input_shape = lambda self, name, shape: self._set_batch(shape)
            ExecutionContext.get_tensor_shape = lambda self, name: self._shape(name)
        else:
            ExecutionContext.set_binding_shape = lambda self, index, shape: self._set_batch(shape)
            ExecutionContext.get_binding_shape = lambda self, index: self._shape(self.engine.io[index][0])
        if not tensor_api:
            del ExecutionContext.set_tensor_address, ExecutionContext.execute_async_v3
        if major >= 10:
            del ExecutionContext.execute_async_v2

        class Runtime(NeedsContextToDie):
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                fake.require_context()
                data = bytes(data)
                if not data.startswith(MAGIC):
                    return None
                engine = Engine(data[len(MAGIC):])
                engine.runtime = self  # as the real binding's keep_alive: the runtime outlives it
                return engine

        class IInt8EntropyCalibrator2(object):
            def __init__(self):
                pass

        trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
        trt.NetworkDefinitionCreationFlag, trt.BuilderFlag = NetworkDefinitionCreationFlag, BuilderFlag
        trt.MemoryPoolType, trt.TensorIOMode = MemoryPoolType, TensorIOMode
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        trt.nptype = lambda dtype: np.float32
        return trt, pycuda, driver
