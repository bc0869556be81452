#!/usr/bin/env bash
# The demo, once `make demo` has the engine, the base images and the fat
# nginx image ready: slim's main job, typed as README.md's tour shows it.
# Each command is printed as "$ command" before it runs (tests/journeys
# checks that they are the README's).
#   SLIM_FAT_TAG    the fat nginx image (default nginx-build)
#   SLIM_MICRO_TAG  the micro image to make (default nginx:micro)
set -euo pipefail
cd "$(dirname "$0")/.."
fat=${SLIM_FAT_TAG:-nginx-build}
micro=${SLIM_MICRO_TAG:-nginx:micro}
report=.slim/$(printf '%s' "$micro" | tr -c 'A-Za-z0-9._-' '_').report.json

step() { printf '\n== %s\n' "$*" >&2; }
run() { printf '$ %s\n' "$1" >&2; eval "$1"; }

step "trace: nginx runs under slim's sensor in the fat image; GET / is probed"
run "slim trace $fat -- /opt/nginx/sbin/nginx -g 'daemon off;'"

step "build: the micro image, from what nginx touched and what the loader needs; also an OCI layout"
run "slim build $fat -t $micro --output oci:.slim/nginx-micro.oci"

step "verify: both images run the same way; their answers must be the same"
run "slim verify $fat $micro"

step "compare: sizes, layers, files and packages; gates for CI"
run "slim compare $fat $micro --max-size 20MB --min-ratio 10"

step "explain: why a file is in the micro image"
run "slim explain $report /etc/localtime"
