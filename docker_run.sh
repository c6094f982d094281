#!/usr/bin/env bash
# Run streamdetect in Docker: on a Jetson with the NVIDIA runtime (GPU, TensorRT), elsewhere on
# the CPU. The model and built engines live in the volume "streamdetect-cache", so a restart
# neither downloads nor rebuilds.
#
#   ./docker_run.sh [--build] [--detach] [--port 8080] [--device /dev/video0] [-- SERVE OPTIONS...]
#   ./docker_run.sh -- --source rtsp://camera/stream --conf 0.4
#   ./docker_run.sh --device /dev/v4l/by-id/usb-...-video-index0   (that camera is the source)
# --detach runs it in the background, restarted after a crash or a reboot (docker logs -f streamdetect).
set -euo pipefail
cd "$(dirname "$0")"

port=8080
device=/dev/video0
device_given=0
build=0
detach=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --detach) detach=1 ;;
        --port) port="$2"; shift ;;
        --device) device="$2"; device_given=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "docker_run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -f /etc/nv_tegra_release ]; then
    image=streamdetect:jetson dockerfile=Dockerfile runtime=(--runtime nvidia)
else
    image=streamdetect:x86 dockerfile=Dockerfile.x86 runtime=()
fi
if [ "$build" = 1 ] || ! docker image inspect "$image" >/dev/null 2>&1; then
    docker build -f "$dockerfile" -t "$image" .
fi

devices=()
if [ -e "$device" ]; then
    devices=(--device "$device")
else
    echo "docker_run.sh: no $device; the server will fall back to its test:// source" >&2
fi
# CSI cameras on a Jetson talk to the host's Argus daemon through this socket.
if [ -S /tmp/argus_socket ]; then
    devices+=(-v /tmp/argus_socket:/tmp/argus_socket)
fi

environment=()
for name in $(compgen -e | grep '^STREAMDETECT_' || true); do
    environment+=(-e "$name")
done
# A camera given by another name (/dev/v4l/by-id/...) keeps it in the container, where auto
# looks at /dev/videoN only: make it the source (a --source after -- still wins).
if [ "$device_given" = 1 ] && [ -e "$device" ] && [ -z "${STREAMDETECT_SOURCE:-}" ]; then
    environment+=(-e "STREAMDETECT_SOURCE=$device")
fi

# Docker's default json-file log grows without end: rotate it, or months of streaming fill
# a device's SD card. (Other log drivers take other options, or rotate by themselves.)
logging=()
if [ "$(docker info --format '{{.LoggingDriver}}' 2>/dev/null)" = json-file ]; then
    logging=(--log-opt max-size=10m --log-opt max-file=3)
fi

if [ "$detach" = 1 ]; then
    mode=(--detach --restart unless-stopped)
    if docker container inspect streamdetect >/dev/null 2>&1; then
        echo "docker_run.sh: replacing the running container streamdetect" >&2
        docker rm -f streamdetect >/dev/null
    fi
elif [ -t 0 ]; then
    mode=(--rm -it)
else
    mode=(--rm)
fi

exec docker run "${mode[@]}" --init --name streamdetect "${runtime[@]}" "${devices[@]}" "${environment[@]}" \
    "${logging[@]}" \
    -p "$port:8080" -v streamdetect-cache:/data "$image" \
    python3 app.py serve --production "$@"
