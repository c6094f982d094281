# streamdetect for NVIDIA Jetson Nano (JetPack 4.6.x: L4T r32.7, Python 3.6, TensorRT 8.2).
#
# CUDA, cuDNN and TensorRT (with its Python bindings) are mounted into the container from the
# host by `--runtime nvidia`. `docker build` sees them only when nvidia is Docker's default
# runtime ("default-runtime": "nvidia" in /etc/docker/daemon.json), which pycuda's build needs.
#
#   docker build -t streamdetect:jetson .      then   ./docker_run.sh
FROM nvcr.io/nvidia/l4t-base:r32.7.1

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    # pip's numpy 1.19.5 dies with "Illegal instruction" on the Nano without this
    OPENBLAS_CORETYPE=ARMV8 \
    PATH=/usr/local/cuda/bin:${PATH} \
    CPATH=/usr/local/cuda/include \
    LIBRARY_PATH=/usr/local/cuda/lib64 \
    STREAMDETECT_HOME=/data \
    STREAMDETECT_PORT=8080

# JetPack's OpenCV (libopencv-python 4.1.1) has GStreamer, which csi:// cameras need. It comes
# from NVIDIA's L4T apt repository, which the flashed Nano lists but l4t-base does not: its key
# and its "common" component are added first. nginx serves the stream; the rest builds uWSGI
# and pycuda.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && curl -fsSL https://repo.download.nvidia.com/jetson/jetson-ota-public.asc \
        -o /etc/apt/trusted.gpg.d/jetson-ota-public.asc \
    && echo "deb https://repo.download.nvidia.com/jetson/common r32.7 main" \
        > /etc/apt/sources.list.d/nvidia-l4t-apt-source.list \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-dev python3-pip python3-setuptools build-essential \
        libopencv-python gstreamer1.0-plugins-good nginx \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-production.txt requirements-jetson.txt ./
# JetPack's pip (9.0.1) is too old for manylinux2014 wheels: upgrade it first (21.3.1 is the
# last release for Python 3.6). pycuda 2022.1 is the last for Python 3.6 and builds with nvcc.
RUN python3 -m pip install --no-cache-dir --upgrade "pip==21.3.1" \
    && python3 -m pip install --no-cache-dir -r requirements-production.txt -r requirements-jetson.txt

COPY . .
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m CMD ["python3", "-c", \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
# Downloads the model into /data on first start, then serves through uWSGI + nginx.
CMD ["python3", "app.py", "serve", "--production"]
