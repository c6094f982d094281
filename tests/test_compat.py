"""The runtime modules must import on Python 3.6 (JetPack 4.6.x on Jetson Nano)."""
import os
import shutil
import subprocess

import pytest

from test_layout import ROOT, runtime_modules


@pytest.mark.skipif(shutil.which("vermin") is None, reason="vermin is not installed (pip install vermin)")
def test_runtime_modules_need_no_more_than_python_3_6():
    present = sorted(os.path.relpath(path, ROOT) for path in runtime_modules().values())
    assert "app.py" in present and os.path.join("sources", "http_camera.py") in present
    result = subprocess.run(["vermin", "-q", "--no-tips", "-t=3.6-", "--violations", "--eval-annotations"]
                            + present, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout
