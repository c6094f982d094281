"""Some of the runtime's tests again with the oldest release of each dependency that
requirements.txt allows, on the oldest Python the README names (tests/floors_env.sh makes
it): a floor that is stated must work, for a user whose environment already has it."""
import os

import pytest
from packaging.version import Version

from other_environment import ROOT, installed_versions, run_tests_under
from pins import pins_for

PYTHON = os.path.join(ROOT, ".floors", "bin", "python")
# NumPy, ONNX, ONNX Runtime, OpenCV, simplejpeg (test_model.py, test_decoding.py); Flask,
# Werkzeug, Pillow and prometheus-client (the server's routes, uploads and /metrics).
FLOOR_TESTS = ["test_decoding.py", "test_model.py"] + ["test_server.py::" + name for name in (
    "test_page_api_and_metrics", "test_metrics_in_base_units_and_one_series_per_state",
    "test_uploads_good_and_bad", "test_uploads_in_formats_opencv_cannot_read")]
needs_floors = pytest.mark.skipif(not os.path.exists(PYTHON),
                                  reason="no floors environment: bash tests/floors_env.sh")


@needs_floors
def test_floors_environment_has_the_oldest_releases_allowed():
    installed = installed_versions(PYTHON)
    floors = pins_for("3.8", "x86_64")
    assert len(floors) >= 8 and all(specifier.startswith(">=") for specifier in floors.values())
    # The oldest release of a floor's series (numpy>=1.21: 1.21.6, the first ONNX Runtime takes).
    newer = {name: (specifier, installed.get(name)) for name, specifier in floors.items()
             if installed.get(name) is None
             or Version(installed[name]).release[:2] != Version(specifier[2:]).release[:2]}
    assert not newer, "floor vs installed {}: run bash tests/floors_env.sh again".format(newer)


@needs_floors
def test_runtime_tests_pass_with_the_floors():
    print("floors:", run_tests_under(PYTHON, FLOOR_TESTS, timeout=300))
