#!/usr/bin/env bash
# Make sure the tools slim's tests need are installed. `make test` runs this
# before pytest: the unit tests compile real ELF files (gcc, 32-bit with
# gcc-multilib, musl with musl-tools) and run the real loaders on them as the
# oracle (ldd, ldconfig); the robustness tests mount a tmpfs; the sensor's
# tests use unshare; the delivery tests push to a registry of their own
# (Debian's docker-registry) and read OCI layouts and archives with skopeo.
#
# Each tool is checked by using it (a 32-bit compile, not a package name), so
# a machine that has them some other way is left alone. apt-get runs only
# when something is missing: a second run takes well under a second.
set -euo pipefail

say() { printf 'test-deps: %s\n' "$*" >&2; }
die() { printf 'test-deps: error: %s\n' "$*" >&2; exit 1; }

probe_dir=$(mktemp -d /tmp/slim-test-deps.XXXXXX)
trap 'rm -rf "$probe_dir"' EXIT
printf 'int main(void) { return 0; }\n' >"$probe_dir/probe.c"

compiles() {  # compiles COMPILER [FLAGS...]: can it link a program?
    command -v "$1" >/dev/null 2>&1 && "$@" -o "$probe_dir/probe" "$probe_dir/probe.c" >/dev/null 2>&1
}

missing=()
compiles gcc || missing+=(gcc libc6-dev)
compiles gcc -m32 || missing+=(gcc-multilib)
compiles musl-gcc || missing+=(musl-tools)
for tool in ldd ldconfig; do command -v "$tool" >/dev/null 2>&1 || missing+=(libc-bin); done
for tool in mount unshare; do command -v "$tool" >/dev/null 2>&1 || missing+=(util-linux mount); done
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v node >/dev/null 2>&1 || missing+=(nodejs)  # the oracle of the Node closure's tests
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

# One package may be named by several checks.
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
[ "$(id -u)" = 0 ] || die "the tests need ${packages[*]}; run as root, or: sudo apt-get install ${packages[*]}"
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
apt_install "${packages[@]}"

compiles gcc -m32 || die "gcc -m32 still cannot link after installing gcc-multilib"
compiles musl-gcc || die "musl-gcc still cannot link after installing musl-tools"
say "ready"
