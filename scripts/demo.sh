#!/usr/bin/env bash
# The demo, once `make demo` has the engine, the base images and the fat
# nginx image ready: trace, build, verify, compare.
set -euo pipefail
cd "$(dirname "$0")/.."
fat=${SLIM_FAT_TAG:-nginx-build}
micro=${SLIM_MICRO_TAG:-nginx:micro}
trace=.slim/$fat.trace.json

step() { printf '\n== %s\n' "$*" >&2; }

step "slim trace $fat: nginx under the sensor, probed with GET / and GET /missing"
slim trace "$fat" -o "$trace" --http-probe / --http-probe /missing --quiet-app \
    -- /opt/nginx/sbin/nginx -g 'daemon off;'

step "slim build $fat -t $micro"
slim build "$fat" -t "$micro" --trace "$trace"

step "slim verify $fat $micro: the same answers?"
slim verify "$fat" "$micro" --trace "$trace" --all

step "slim compare $fat $micro"
slim compare "$fat" "$micro" --max-size 20MB --min-ratio 10
