"""The runtime modules must import on Python 3.6 (JetPack 4.6.x on Jetson Nano)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_MODULES = ["app.py", "camera.py", "yolo_tool.py", "data_processing.py", "get_engine.py", "common.py"]


@pytest.mark.skipif(shutil.which("vermin") is None, reason="vermin is not installed (pip install vermin)")
def test_runtime_modules_need_no_more_than_python_3_6():
    present = [m for m in RUNTIME_MODULES if os.path.exists(os.path.join(ROOT, m))]
    assert "app.py" in present
    result = subprocess.run(["vermin", "-q", "--no-tips", "-t=3.6-", "--violations", "--eval-annotations"]
                            + present, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout
