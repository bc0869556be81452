#!/usr/bin/env bash
# Make sure a Docker engine answers. When `docker info` fails on a local
# engine, install Debian's docker.io (if dockerd is missing), start dockerd in
# the background with its log in a known file, and wait until it answers.
# Idempotent: a running engine is left alone.
#
#   SLIM_DOCKERD_LOG       dockerd's log        (default /var/log/slim-dockerd.log)
#   SLIM_ENGINE_TIMEOUT    seconds to wait      (default 60)
set -euo pipefail

log=${SLIM_DOCKERD_LOG:-/var/log/slim-dockerd.log}
timeout=${SLIM_ENGINE_TIMEOUT:-60}

say() { printf 'engine: %s\n' "$*" >&2; }
die() { printf 'engine: error: %s\n' "$*" >&2; exit 1; }

engine_answers() { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }

if engine_answers; then
    say "running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    exit 0
fi

case "${DOCKER_HOST:-unix://}" in
    unix://*) ;;
    *) die "the engine at DOCKER_HOST=$DOCKER_HOST does not answer; start it there, or unset DOCKER_HOST to use a local one" ;;
esac

[ "$(id -u)" = 0 ] || die "no engine answers and starting one needs root; run this as root, or start dockerd yourself"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and there is no apt-get to install docker.io; install a Docker engine by hand"
    say "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq docker.io >/dev/null || die "apt-get install docker.io failed"
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
    bash "$(dirname "$0")/cgroups.sh"
    say "starting dockerd (log: $log)"
    mkdir -p "$(dirname "$log")"
    # setsid: dockerd outlives this script and the make/CI step that ran it.
    setsid dockerd >>"$log" 2>&1 </dev/null &
fi

deadline=$((SECONDS + timeout))
until engine_answers; do
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        say "dockerd exited; the end of its log:"
        tail -n 20 "$log" >&2 || true
        die "dockerd did not stay up"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 20 "$log" >&2 || true
        die "dockerd did not answer within ${timeout}s (raise SLIM_ENGINE_TIMEOUT?)"
    fi
    sleep 1
done
say "ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
