"""TensorRT execution with pycuda: the CUDA context, page-locked buffers, one inference.

Imported only by the TensorRT engine. The context is created explicitly, never
by `pycuda.autoinit`, and is pushed around every use and popped in `finally`,
so whichever thread runs inference (a pipeline thread under uWSGI, say) has it
current; the seed tutorial's "explicit_context_dependent failed: invalid
device context" came from a context bound to the importing thread instead.
Supports TensorRT 8.2 (bindings API, execute_async_v2) and 8.5+ / 10.x
(tensor API, set_tensor_address, execute_async_v3) by feature detection.
"""
import numpy as np


def cuda_driver():
    import pycuda.driver as cuda
    cuda.init()
    return cuda


def gpu_description(cuda, device_index=0):
    """(name, 'major.minor' compute capability) of a CUDA device."""
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return device.name(), "{}.{}".format(major, minor)


class CudaContext(object):
    """A CUDA context owned by the engine, current only inside `with context:`."""

    def __init__(self, cuda, device_index=0):
        self.cuda = cuda
        self.context = cuda.Device(device_index).make_context()
        self.context.pop()  # make_context leaves it current in this thread: not ours to keep

    def __enter__(self):
        self.context.push()
        return self

    def __exit__(self, *exc):
        self.context.pop()
        return False

    def release(self):
        """Destroy the context, from whichever thread: pycuda's detach leaves a context that is
        not current alive (with its GPU memory) unless called by the thread that made it,
        which in the app is a start-up thread long gone."""
        if self.context is not None:
            self.context.push()
            self.context.detach()  # pops it too
            self.context = None


class Buffer(object):
    """A page-locked host array and its device twin, allocated once."""

    def __init__(self, cuda, name, shape, dtype):
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.host = cuda.pagelocked_empty(int(np.prod(self.shape)), dtype)
        self.device = cuda.mem_alloc(self.host.nbytes)


def uses_tensor_api(engine):
    """TensorRT 8.5+ names its I/O tensors; 8.2 and older number bindings."""
    return hasattr(engine, "num_io_tensors")


def io_tensors(trt, engine):
    """[(name, shape, numpy dtype, is_input)] of an engine, in either API."""
    tensors = []
    if uses_tensor_api(engine):
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            tensors.append((name, tuple(engine.get_tensor_shape(name)), trt.nptype(engine.get_tensor_dtype(name)),
                            engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT))
    else:
        for index in range(engine.num_bindings):
            tensors.append((engine.get_binding_name(index), tuple(engine.get_binding_shape(index)),
                            trt.nptype(engine.get_binding_dtype(index)), engine.binding_is_input(index)))
    return tensors


class TrtRunner(object):
    """Runs one deserialized engine: buffers and stream made once, reused per call."""

    def __init__(self, trt, cuda, engine, context):
        self.cuda = cuda
        self.engine = engine
        self.cuda_context = context
        with context:
            self.execution = engine.create_execution_context()
            self.stream = cuda.Stream()
            self.inputs, self.outputs, in_engine_order = [], [], []
            for name, shape, dtype, is_input in io_tensors(trt, engine):
                buffer = Buffer(cuda, name, shape, dtype)
                (self.inputs if is_input else self.outputs).append(buffer)
                in_engine_order.append(buffer)
            self.tensor_api = uses_tensor_api(engine)
            if self.tensor_api:
                for buffer in in_engine_order:
                    self.execution.set_tensor_address(buffer.name, int(buffer.device))
            else:  # execute_async_v2 takes the addresses in binding-index order
                self.bindings = [int(buffer.device) for buffer in in_engine_order]

    def run(self, blob):
        """Copy `blob` in, execute, copy every output out; returns the first output."""
        with self.cuda_context:
            source = self.inputs[0]
            np.copyto(source.host, blob.ravel().astype(source.host.dtype, copy=False))
            self.cuda.memcpy_htod_async(source.device, source.host, self.stream)
            if self.tensor_api:
                ok = self.execution.execute_async_v3(stream_handle=self.stream.handle)
            else:
                ok = self.execution.execute_async_v2(bindings=self.bindings, stream_handle=self.stream.handle)
            for buffer in self.outputs:
                self.cuda.memcpy_dtoh_async(buffer.host, buffer.device, self.stream)
            self.stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        first = self.outputs[0]
        return first.host.reshape(first.shape).copy()

    def release(self):
        """Free device memory inside the context, then the context itself."""
        with self.cuda_context:
            for buffer in self.inputs + self.outputs:
                buffer.device.free()
            self.inputs, self.outputs = [], []
            self.execution = self.engine = None
        self.cuda_context.release()


def make_calibrator(trt, cuda, batches, cache_path):
    """An INT8 entropy calibrator fed with pre-processed NCHW blobs.

    Built by a function because its base class exists only once tensorrt is
    imported. The calibration cache sits beside the engine, so a rebuild for
    the same model and GPU skips calibration.
    """

    class ImageCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = list(batches)
            self.index = 0
            self.device = cuda.mem_alloc(self.batches[0].nbytes)

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self.index >= len(self.batches):
                return None
            cuda.memcpy_htod(self.device, np.ascontiguousarray(self.batches[self.index]))
            self.index += 1
            return [int(self.device)]

        def read_calibration_cache(self):
            try:
                with open(cache_path, "rb") as handle:
                    return handle.read()
            except (IOError, OSError):
                return None

        def write_calibration_cache(self, cache):
            try:
                with open(cache_path, "wb") as handle:
                    handle.write(bytes(cache))
            except (IOError, OSError):
                pass  # unsaved, the next build calibrates again; the engine's own save says why

    return ImageCalibrator()
