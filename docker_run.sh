#!/usr/bin/env bash
# Run streamdetect in Docker: on a Jetson with the NVIDIA runtime (GPU, TensorRT), elsewhere on
# the CPU. The model and built engines live in the volume "streamdetect-cache", so a restart
# neither downloads nor rebuilds.
#
#   ./docker_run.sh [--build] [--detach] [--port 8080] [--device /dev/video0]... [-- SERVE OPTIONS...]
#   ./docker_run.sh -- --source rtsp://camera/stream --conf 0.4
#   ./docker_run.sh --device /dev/v4l/by-id/usb-...-video-index0   (that camera is the source)
#   ./docker_run.sh -- --source door=/dev/video0 --source yard=csi://0   (every /dev/ source is passed)
# --detach runs it in the background, restarted after a crash or a reboot (docker logs -f streamdetect).
set -euo pipefail
cd "$(dirname "$0")"

port=8080
given=()
build=0
detach=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --detach) detach=1 ;;
        --port) port="$2"; shift ;;
        --device) given+=("$2"); shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# Every camera device given, and every /dev/ one the sources name (--source NAME=/dev/videoN
# after --, or in $STREAMDETECT_SOURCE); with none, /dev/video0 for --source auto.
wanted=("${given[@]}")
for word in "$@" ${STREAMDETECT_SOURCE:-}; do
    case "$word" in
        /dev/*|*=/dev/*) wanted+=("/dev/${word#*/dev/}") ;;
    esac
done
devices=()
if [ ${#wanted[@]} -eq 0 ]; then
    if [ -e /dev/video0 ]; then
        devices=(--device /dev/video0)
    else
        echo "docker_run.sh: no /dev/video0; the server will fall back to its test:// source" >&2
    fi
fi
for device in "${wanted[@]}"; do
    if [ -e "$device" ]; then
        devices+=(--device "$device")
    else
        echo "docker_run.sh: no $device; its camera will show RECONNECTING until it is there" >&2
    fi
done
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
if [ ${#given[@]} -eq 1 ] && [ -e "${given[0]}" ] && [ -z "${STREAMDETECT_SOURCE:-}" ]; then
    environment+=(-e "STREAMDETECT_SOURCE=${given[0]}")
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
