"""Our TensorRT engine's logic, tested without a GPU through stand-in modules
(tests/fake_tensorrt.py): engine cache, atomic writes, rebuilds, errors and
fallback, CUDA context discipline, and each TensorRT API generation.
The real thing is checked by tests/test_tensorrt_gpu.py where a GPU exists."""
import logging
import os
import threading

import numpy as np
import pytest

from engine_files import engine_cache_key
from errors import EngineError
from fake_tensorrt import FakeCuda
from get_engine import TensorRTEngine, create_engine


@pytest.fixture
def blob():
    return (np.random.RandomState(3).rand(1, 3, 416, 416) * 255).astype(np.float32)


@pytest.fixture
def small_model(tmp_path):
    import onnx_models
    return onnx_models.red_square(tmp_path / "red.onnx")


def open_engine(fake, monkeypatch, model, folder, **options):
    fake.install(monkeypatch)
    return TensorRTEngine(model, str(folder), **options)


def engine_files(folder):
    return sorted(name for name in os.listdir(str(folder)) if name.endswith(".engine"))


@pytest.mark.parametrize("version", ["8.2.1", "8.6.1", "10.3.0"])
def test_build_run_and_reuse_the_cached_engine(version, monkeypatch, tmp_path, small_model, blob):
    fake = FakeCuda(trt_version=version)
    engine = open_engine(fake, monkeypatch, small_model, tmp_path)
    expected = create_engine(small_model, "onnxruntime").infer(blob)
    np.testing.assert_allclose(engine.infer(blob), expected, atol=1e-5)
    assert engine.precision == "fp16" and "TensorRT {}".format(version) in engine.detail
    [name] = engine_files(tmp_path)
    assert name.startswith("red-fp16-")
    engine.close()
    again = open_engine(fake, monkeypatch, small_model, tmp_path)
    assert len(fake.builds) == 1  # loaded from the cache, not rebuilt
    np.testing.assert_allclose(again.infer(blob), expected, atol=1e-5)
    again.close()
    assert fake.pushes == fake.pops and fake.stack() == []
    assert fake.contexts == [] and fake.destroyed_without_context == []
    network_flags, config_flags, workspace = fake.builds[0]
    assert network_flags == (0 if version.startswith("10") else 1)  # explicit batch before TensorRT 10
    assert workspace == 256 << 20


@pytest.mark.parametrize("version", ["8.2.1", "8.6.1", "10.3.0"])
def test_a_model_with_a_symbolic_batch_builds_for_a_batch_of_one(version, monkeypatch, tmp_path, blob, caplog):
    """The zoo's tinyyolov2-8.onnx declares its batch as 'None': TensorRT refuses to build a
    dynamic input without an optimization profile, so the engine fixes it to 1."""
    import onnx_models
    model = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    fake = FakeCuda(trt_version=version)
    with caplog.at_level(logging.INFO, logger="streamdetect.engine"):
        engine = open_engine(fake, monkeypatch, model, tmp_path)
    assert fake.build_errors == []
    np.testing.assert_allclose(engine.infer(blob), create_engine(model, "onnxruntime").infer(blob), atol=1e-5)
    assert "symbolic input shape (-1, 3, 416, 416); building for (1, 3, 416, 416)" in caplog.text
    engine.close()


@pytest.mark.parametrize("version", ["8.2.1", "8.6.1", "10.3.0"])
def test_several_cameras_build_an_engine_for_a_batch_of_their_frames(version, monkeypatch, tmp_path, caplog):
    """Three cameras and a symbolic batch: an engine with a 1..3 profile (tuned for 3), cached
    under a key of its own, that runs batches of 1, 2 or 3 frames, each row as a frame alone;
    the execution context is told each batch (set_binding_shape in 8.2, set_input_shape since)."""
    import onnx_models
    model = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    frames = (np.random.RandomState(5).rand(3, 3, 416, 416) * 255).astype(np.float32)
    frames[1, 2, 100:200, 100:200] = 255  # a red square in the second frame only
    fake = FakeCuda(trt_version=version)
    engine = open_engine(fake, monkeypatch, model, tmp_path, cameras=3)
    assert engine.max_batch == 3 and "batches of up to 3" in engine.detail
    assert fake.profiles == [{"image": ((1, 3, 416, 416), (3, 3, 416, 416), (3, 3, 416, 416))}]
    reference = create_engine(model, "onnxruntime")
    alone = [reference.infer(frames[index:index + 1]) for index in range(3)]
    for count in (3, 1, 2, 3):
        together = engine.infer(frames[:count])
        assert together.shape == (count,) + alone[0].shape[1:]
        for row in range(count):
            np.testing.assert_allclose(together[row:row + 1], alone[row], atol=1e-4)
    with pytest.raises(RuntimeError, match="TensorRT refused a batch of 4 frames"):
        engine.infer(np.concatenate([frames, frames[:1]]))
    engine.close()
    single = open_engine(fake, monkeypatch, model, tmp_path)  # one camera: the engine of a batch of one
    assert single.max_batch == 1 and len(fake.builds) == 2 and len(engine_files(tmp_path)) == 2
    single.close()
    open_engine(fake, monkeypatch, model, tmp_path, batch=3, cameras=1).close()  # --batch 3: the cached one
    assert len(fake.builds) == 2
    assert fake.pushes == fake.pops and fake.contexts == [] and fake.destroyed_without_context == []


def test_a_model_with_a_fixed_batch_runs_the_cameras_frames_one_at_a_time(monkeypatch, tmp_path, small_model,
                                                                          caplog):
    with caplog.at_level(logging.INFO, logger="streamdetect.engine"):
        engine = open_engine(FakeCuda(), monkeypatch, small_model, tmp_path, cameras=3)
    assert engine.max_batch == 1 and "has a fixed batch of one" in caplog.text
    engine.close()


def test_an_int8_engine_for_a_batch_calibrates_with_batches_of_one(monkeypatch, tmp_path):
    import cv2
    import onnx_models
    model = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    images = tmp_path / "calibration"
    images.mkdir()
    cv2.imwrite(str(images / "0.png"), np.full((60, 80, 3), 90, np.uint8))
    fake = FakeCuda(fast_int8=True)
    engine = open_engine(fake, monkeypatch, model, tmp_path, precision="int8", calibration_images=str(images),
                         cameras=2)
    one = (1, 3, 416, 416)
    assert fake.calibration_profiles == [{"image": (one, one, one)}] and fake.calibration_maxima == [90.0]
    assert engine.max_batch == 2
    engine.close()


def test_onnx_runtime_batches_only_where_asked_on_the_cpu(tmp_path):
    """On the CPU a batch was measured no faster than frames one by one (docs/benchmarks.md):
    several cameras run one frame at a time unless --batch asks otherwise."""
    import onnx_models
    model = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    assert create_engine(model, "onnxruntime", cameras=3).max_batch == 1
    engine = create_engine(model, "onnxruntime", cameras=3, batch=3)
    frames = (np.random.RandomState(5).rand(3, 3, 416, 416) * 255).astype(np.float32)
    together = engine.infer(frames)
    for row in range(3):
        np.testing.assert_allclose(together[row:row + 1], engine.infer(frames[row:row + 1]), atol=1e-4)


@pytest.mark.parametrize("version", ["8.2.1", "10.3.0"])
def test_an_engine_that_numbers_its_output_first_still_runs(version, monkeypatch, tmp_path, small_model, blob):
    engine = open_engine(FakeCuda(trt_version=version, outputs_first=True), monkeypatch, small_model, tmp_path)
    expected = create_engine(small_model, "onnxruntime").infer(blob)
    np.testing.assert_allclose(engine.infer(blob), expected, atol=1e-5)
    engine.close()


def test_cache_key_changes_with_every_ingredient():
    base = ("a" * 64, "8.2.1", "NVIDIA Tegra X1", "5.3", "fp16", (1, 3, 416, 416), None)
    keys = {engine_cache_key(*base)}
    variants = [("b" * 64,), (None, "8.2.3"), (None, None, "Orin"), (None, None, None, "8.7"),
                (None, None, None, None, "fp32"), (None, None, None, None, None, (1, 3, 320, 320)),
                (None, None, None, None, None, None, 1 / 255.0)]
    for variant in variants:
        changed = list(base)
        for index, value in enumerate(variant):
            if value is not None:
                changed[index] = value
        keys.add(engine_cache_key(*changed))
    assert len(keys) == 1 + len(variants)


def test_a_different_platform_gets_its_own_engine(monkeypatch, tmp_path, small_model):
    open_engine(FakeCuda(gpu="Fake Nano"), monkeypatch, small_model, tmp_path).close()
    open_engine(FakeCuda(gpu="Fake Orin", capability=(8, 7)), monkeypatch, small_model, tmp_path).close()
    open_engine(FakeCuda(trt_version="8.6.2"), monkeypatch, small_model, tmp_path).close()
    open_engine(FakeCuda(), monkeypatch, small_model, tmp_path, precision="fp32").close()
    assert len(engine_files(tmp_path)) == 4


def test_a_changed_model_gets_its_own_engine(monkeypatch, tmp_path, small_model):
    import onnx_models
    open_engine(FakeCuda(), monkeypatch, small_model, tmp_path).close()
    other = onnx_models.red_square(tmp_path / "red.onnx", box_cells=(4.0, 4.0))  # same name, new bytes
    open_engine(FakeCuda(), monkeypatch, other, tmp_path).close()
    assert len(engine_files(tmp_path)) == 2


def test_corrupt_cache_file_is_rebuilt_with_a_log_line(monkeypatch, tmp_path, small_model, blob, caplog):
    fake = FakeCuda()
    open_engine(fake, monkeypatch, small_model, tmp_path).close()
    [name] = engine_files(tmp_path)
    with open(str(tmp_path / name), "wb") as handle:
        handle.write(b"\x00truncated")
    with caplog.at_level(logging.WARNING, logger="streamdetect.engine"):
        engine = open_engine(fake, monkeypatch, small_model, tmp_path)
    assert "cannot be loaded" in caplog.text and "rebuilding" in caplog.text
    assert len(fake.builds) == 2
    assert engine.infer(blob).shape == (1, 125, 13, 13)
    assert open(str(tmp_path / name), "rb").read().startswith(b"FAKE-TRT-ENGINE")


def test_an_interrupted_write_leaves_no_engine_file(monkeypatch, tmp_path, small_model, caplog):
    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("engine_files.os.fsync", disk_full)
    open_engine(FakeCuda(), monkeypatch, small_model, tmp_path).close()  # used all the same
    assert os.listdir(str(tmp_path)) == ["red.onnx"]
    assert "cannot save the engine to {}".format(tmp_path / "red-fp16-") in caplog.text
    assert ".engine (No space left on device); it will be built again at the next start" in caplog.text


def test_build_failure_is_a_clear_error_when_tensorrt_was_asked_for(monkeypatch, tmp_path, small_model):
    fake = FakeCuda()
    fake.fail_build = True
    fake.install(monkeypatch)
    with pytest.raises(EngineError, match="could not build an engine.*--precision fp32"):
        create_engine(small_model, "tensorrt", cache_folder=str(tmp_path))
    assert engine_files(tmp_path) == []
    assert fake.pushes == fake.pops
    assert fake.contexts == [] and fake.destroyed_without_context == []  # the builder went before the context


def test_auto_falls_back_when_tensorrt_cannot_build(monkeypatch, tmp_path, small_model, caplog):
    fake = FakeCuda()
    fake.fail_build = True
    fake.install(monkeypatch)
    with caplog.at_level(logging.INFO, logger="streamdetect.engine"):
        engine = create_engine(small_model, "auto", cache_folder=str(tmp_path))
    assert engine.name == "onnxruntime"
    assert "tensorrt cannot run this model" in caplog.text and "trying the next" in caplog.text


def test_auto_prefers_tensorrt_where_it_runs(monkeypatch, tmp_path, small_model, caplog):
    FakeCuda().install(monkeypatch)
    with caplog.at_level(logging.INFO, logger="streamdetect.engine"):
        engine = create_engine(small_model, "auto", cache_folder=str(tmp_path))
    assert engine.name == "tensorrt"
    assert "tensorrt: TensorRT 8.6.1 with Fake Nano (sm 5.3)" in caplog.text


def test_parser_errors_are_listed(monkeypatch, tmp_path, small_model, caplog):
    fake = FakeCuda()
    fake.parser_errors = ["node 3 (Foo): unsupported operator", "node 7: bad shape"]
    with caplog.at_level(logging.ERROR, logger="streamdetect.engine"):
        with pytest.raises(EngineError) as error:
            open_engine(fake, monkeypatch, small_model, tmp_path)
    assert "2 error(s)" in str(error.value) and "unsupported operator" in str(error.value)
    assert caplog.text.count("TensorRT ONNX parser:") == 2


def test_inference_from_another_thread_pushes_and_pops_the_context(monkeypatch, tmp_path, small_model, blob):
    fake = FakeCuda()
    engine = open_engine(fake, monkeypatch, small_model, tmp_path)
    results = []
    worker = threading.Thread(target=lambda: results.append(engine.infer(blob)))
    worker.start()
    worker.join(30)
    assert results and results[0].shape == (1, 125, 13, 13)
    fake.fail_execute = True
    with pytest.raises(RuntimeError, match="execution failed"):
        engine.infer(blob)
    assert fake.pushes == fake.pops and fake.stack() == []
    engine.close()
    assert fake.memory == {}  # device buffers freed
    assert fake.contexts == [] and fake.leaked_contexts == 0


def test_an_engine_made_in_one_thread_is_closed_in_another(monkeypatch, tmp_path, small_model, blob):
    """The app loads the model in a start-up thread that ends, and closes it at exit in the
    main thread: the CUDA context must be destroyed there too, not left behind."""
    fake = FakeCuda()
    fake.install(monkeypatch)
    engines = []
    loader = threading.Thread(target=lambda: engines.append(TensorRTEngine(small_model, str(tmp_path))))
    loader.start()
    loader.join(30)
    [engine] = engines
    assert engine.infer(blob).shape == (1, 125, 13, 13)
    engine.close()
    assert fake.memory == {} and fake.contexts == [] and fake.leaked_contexts == 0
    assert fake.pushes == fake.pops and fake.stack() == []
    assert fake.destroyed_without_context == []


def test_precision_choices(monkeypatch, tmp_path, small_model):
    assert open_engine(FakeCuda(fast_fp16=False), monkeypatch, small_model, tmp_path).precision == "fp32"
    with pytest.raises(EngineError, match="no fast FP16"):
        open_engine(FakeCuda(fast_fp16=False), monkeypatch, small_model, tmp_path, precision="fp16")
    with pytest.raises(EngineError, match="no fast INT8"):
        open_engine(FakeCuda(), monkeypatch, small_model, tmp_path, precision="int8")
    with pytest.raises(EngineError, match="--calibration-images"):
        open_engine(FakeCuda(fast_int8=True), monkeypatch, small_model, tmp_path, precision="int8")
    fake = FakeCuda()
    open_engine(fake, monkeypatch, small_model, tmp_path, precision="fp16")
    assert fake.builds[0][1] == {0}  # BuilderFlag.FP16


def test_int8_calibrates_from_a_folder_of_images(monkeypatch, tmp_path, small_model):
    import cv2
    images = tmp_path / "calibration"
    images.mkdir()
    for index in range(3):
        cv2.imwrite(str(images / "{}.png".format(index)), np.full((60, 80, 3), index * 60, np.uint8))
    fake = FakeCuda(fast_int8=True)
    engine = open_engine(fake, monkeypatch, small_model, tmp_path, precision="int8",
                         calibration_images=str(images))
    assert engine.precision == "int8" and fake.builds[0][1] == {1}  # BuilderFlag.INT8
    assert fake.calibration_maxima == [0.0, 60.0, 120.0]
    # A model trained on 0-1 pixels is calibrated on 0-1 pixels, in an engine of its own.
    open_engine(fake, monkeypatch, small_model, tmp_path, precision="int8", calibration_images=str(images),
                input_scale=1 / 255.0)
    assert len(fake.builds) == 2 and len(engine_files(tmp_path)) == 2
    assert np.allclose(fake.calibration_maxima[3:], [0.0, 60 / 255.0, 120 / 255.0])
    open_engine(fake, monkeypatch, small_model, tmp_path, precision="int8", calibration_images=str(images))
    open_engine(fake, monkeypatch, small_model, tmp_path, precision="int8")  # the cached engine, images or not
    assert len(fake.builds) == 2
    # Other images: the cached engine and its calibration cache would ignore them.
    cv2.imwrite(str(images / "3.png"), np.full((60, 80, 3), 200, np.uint8))
    open_engine(fake, monkeypatch, small_model, tmp_path, precision="int8", calibration_images=str(images))
    assert len(fake.builds) == 3 and len(engine_files(tmp_path)) == 2
    assert fake.calibration_maxima[6:] == [0.0, 60.0, 120.0, 200.0]


def test_tensorrt_11_fp16_needs_a_converted_model(monkeypatch, tmp_path, small_model):
    monkeypatch.setitem(__import__("sys").modules, "onnxconverter_common", None)
    with pytest.raises(EngineError, match="strongly typed.*onnxconverter-common"):
        open_engine(FakeCuda(trt_version="11.0.0"), monkeypatch, small_model, tmp_path, precision="fp16")
    assert open_engine(FakeCuda(trt_version="11.0.0"), monkeypatch, small_model, tmp_path).precision == "fp32"


def test_missing_tensorrt_is_a_clear_error(monkeypatch, tmp_path, small_model):
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(EngineError, match="TensorRT's Python bindings are not installed"):
        create_engine(small_model, "tensorrt", cache_folder=str(tmp_path))


def test_an_engine_that_cannot_be_cached_is_used_all_the_same(monkeypatch, tmp_path, small_model, blob, caplog,
                                                             capsys):
    """A read-only cache (a service user's home, a read-only container) must not waste
    a build of minutes: the engine runs, the log says why it is not kept, and
    `build-engine`, whose whole job is the file, fails in one line."""
    import app
    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "a-file" / "engines"
    fake = FakeCuda()
    engine = open_engine(fake, monkeypatch, small_model, unwritable)
    expected = create_engine(small_model, "onnxruntime").infer(blob)
    np.testing.assert_allclose(engine.infer(blob), expected, atol=1e-5)
    engine.close()
    assert "cannot save the engine to {}".format(unwritable / "red-fp16-") in caplog.text
    assert ".engine (Not a directory); it will be built again" in caplog.text
    monkeypatch.setenv("STREAMDETECT_HOME", str(tmp_path / "a-file" / "home"))
    assert app.main(["build-engine", "--model", small_model]) == 2
    assert "error: the engine was built but could not be saved to {}".format(tmp_path / "a-file" / "home") in \
        capsys.readouterr().err
    assert len(fake.builds) == 2


def test_build_engine_and_compare_commands(monkeypatch, tmp_path, small_model, capsys):
    import json
    import app
    FakeCuda().install(monkeypatch)
    assert app.main(["build-engine", "--model", small_model]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(".engine") and os.path.isfile(path)
    import onnx_models
    zoo_like = onnx_models.red_square(tmp_path / "zoo_like.onnx", batch=onnx_models.ZOO_BATCH)
    assert app.main(["build-engine", "--model", str(zoo_like), "--batch", "3"]) == 0  # for a server of 3 cameras
    for_three = capsys.readouterr().out.strip()
    engine = TensorRTEngine(str(zoo_like), os.path.dirname(for_three), cameras=3)
    assert engine.engine_path == for_three and engine.max_batch == 3
    engine.close()
    assert app.main(["compare", "--model", small_model, "--backends", "tensorrt,onnxruntime,opencv",
                     "--frames", "2", "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["backend"] for row in report] == ["tensorrt", "onnxruntime", "opencv"]
    assert all(row["same_detections"] for row in report)
    assert all(row["max_abs_diff"] < 1e-3 for row in report)
