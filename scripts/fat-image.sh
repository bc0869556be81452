#!/usr/bin/env bash
# Build the fat nginx build container (Dockerfile.build) as nginx-build.
# Docker's layer cache makes a second run take a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${SLIM_FAT_TAG:-nginx-build}
printf 'fat-image: building %s from Dockerfile.build\n' "$tag" >&2
log=$(mktemp /tmp/slim-fat-build.XXXXXX)
trap 'rm -f "$log"' EXIT
if ! docker build -f Dockerfile.build -t "$tag" . >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    printf 'fat-image: error: docker build of Dockerfile.build failed\n' >&2
    exit 1
fi
printf 'fat-image: %s is ready (%s)\n' "$tag" "$(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=si)B" >&2
