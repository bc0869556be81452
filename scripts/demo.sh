#!/usr/bin/env bash
# The demo, after `make demo` has the engine, the base images and the fat
# nginx image ready: slim's main job on the fat image, as far as it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
fat=${SLIM_FAT_TAG:-nginx-build}

step() { printf '\n== %s\n' "$*" >&2; }

step "fat image"
docker image ls "$fat" --format '{{.Repository}}:{{.Tag}}  {{.Size}}'

step "slim"
slim --version

step "what comes next"
echo "slim trace / build / compare / verify are not implemented yet (issues 4, 5, 6)." >&2
