"""TensorRT execution with pycuda: the CUDA context, page-locked buffers, one inference.

Imported only by the TensorRT engine. The context is created explicitly, never
by `pycuda.autoinit`, and is pushed around every use and popped in `finally`,
so whichever thread runs inference (a pipeline thread under uWSGI, say) has it
current; the seed tutorial's "explicit_context_dependent failed: invalid
device context" came from a context bound to the importing thread instead.
Supports TensorRT 8.2 (bindings API, execute_async_v2, set_binding_shape) and 8.5+ /
10.x (tensor API, set_tensor_address, execute_async_v3, set_input_shape) by feature
detection.
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
    """Runs one deserialized engine: buffers and stream made once, reused per call. An engine
    built with a 1..max_batch profile (a symbolic batch) gets buffers for `max_batch` frames
    and is told each call's batch before it runs."""

    def __init__(self, trt, cuda, engine, context, max_batch=1):
        self.cuda = cuda
        self.engine = engine
        self.cuda_context = context
        with context:
            self.execution = engine.create_execution_context()
            self.stream = cuda.Stream()
            self.tensor_api = uses_tensor_api(engine)
            tensors = io_tensors(trt, engine)
            [(self.input_index, (self.input_name, input_shape, _, _))] = [
                (index, tensor) for index, tensor in enumerate(tensors) if tensor[3]]
            self.frame_shape = tuple(input_shape[1:])
            self.dynamic = input_shape[0] < 0
            self.batch = input_shape[0]
            if self.dynamic:  # the output shapes follow the input's: those of the largest batch
                self._set_batch(max_batch)
                tensors = [(name, self._shape_now(index, name), dtype, is_input)
                           for index, (name, _, dtype, is_input) in enumerate(tensors)]
            self.inputs, self.outputs, in_engine_order = [], [], []
            for name, shape, dtype, is_input in tensors:
                buffer = Buffer(cuda, name, shape, dtype)
                (self.inputs if is_input else self.outputs).append(buffer)
                in_engine_order.append(buffer)
            if self.tensor_api:
                for buffer in in_engine_order:
                    self.execution.set_tensor_address(buffer.name, int(buffer.device))
            else:  # execute_async_v2 takes the addresses in binding-index order
                self.bindings = [int(buffer.device) for buffer in in_engine_order]

    def _set_batch(self, frames):
        """Tell the execution context the input's batch (8.5+: by name; 8.2: by binding index)."""
        shape = (frames,) + self.frame_shape
        if self.tensor_api:
            accepted = self.execution.set_input_shape(self.input_name, shape)
        else:
            accepted = self.execution.set_binding_shape(self.input_index, shape)
        if accepted is False:
            raise RuntimeError("TensorRT refused a batch of {} frames".format(frames))
        self.batch = frames

    def _shape_now(self, index, name):
        """A tensor's shape for the batch set now."""
        if self.tensor_api:
            return tuple(self.execution.get_tensor_shape(name))
        return tuple(self.execution.get_binding_shape(index))

    def run(self, blob):
        """Copy `blob` (1 to max_batch frames) in, execute, copy every output out; returns the
        first output, a row per frame."""
        frames = blob.shape[0]
        with self.cuda_context:
            if self.dynamic and frames != self.batch:
                self._set_batch(frames)
            source = self.inputs[0]
            count = blob.size
            np.copyto(source.host[:count], blob.ravel().astype(source.host.dtype, copy=False))
            self.cuda.memcpy_htod_async(source.device, source.host[:count], self.stream)
            if self.tensor_api:
                ok = self.execution.execute_async_v3(stream_handle=self.stream.handle)
            else:
                ok = self.execution.execute_async_v2(bindings=self.bindings, stream_handle=self.stream.handle)
            for buffer in self.outputs:
                self.cuda.memcpy_dtoh_async(buffer.host[:buffer.host.size * frames // buffer.shape[0]],
                                            buffer.device, self.stream)
            self.stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execution failed")
        first = self.outputs[0]
        return first.host[:first.host.size * frames // first.shape[0]].reshape(
            (frames,) + first.shape[1:]).copy()

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
