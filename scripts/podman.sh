#!/usr/bin/env bash
# Make sure a Podman answers on its Docker-compatible socket, with the base
# images slim's Podman tests build on, and print the DOCKER_HOST to use.
#
#   bash scripts/podman.sh            rootful: podman as root
#   bash scripts/podman.sh rootless   rootless: podman as an unprivileged user
#
# Installs Debian's podman (and for rootless, uidmap and slirp4netns) when
# missing, starts `podman system service` in the background with its log in a
# known file, and waits until the socket answers. There is no registry to pull
# from, so the base images are copied from the Docker engine (`docker save |
# podman load`; scripts/base-images.sh makes them there). Idempotent: a
# running service and present images are kept; a second run takes a second.
#
#   SLIM_PODMAN_IMAGES    images to copy in    (default busybox:latest)
#   SLIM_PODMAN_USER      the rootless user    (default slim-podman, created when missing)
#   SLIM_ENGINE_TIMEOUT   seconds to wait      (default 60)
set -euo pipefail

mode=${1:-rootful}
images=${SLIM_PODMAN_IMAGES:-busybox:latest}
timeout=${SLIM_ENGINE_TIMEOUT:-60}
user=${SLIM_PODMAN_USER:-slim-podman}

say() { printf 'podman (%s): %s\n' "$mode" "$*" >&2; }
die() { printf 'podman (%s): error: %s\n' "$mode" "$*" >&2; exit 1; }

case "$mode" in
    rootful) rundir=/run/slim-podman ;;
    rootless) rundir=/run/slim-podman-rootless ;;
    *) die "usage: scripts/podman.sh [rootful|rootless]" ;;
esac
sock=$rundir/podman.sock
log=/var/log/slim-podman-$mode.log
url=unix://$sock

[ "$(id -u)" = 0 ] || die "setting up the Podman lane installs packages and starts a service; run as root"

# Without recommends (apt.sh): podman builds with its own buildah code, and
# neither mode needs dbus or fuse-overlayfs (vfs or native overlay do).
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

answers() { curl -fsS --max-time 5 --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }

engine_user_env() {  # the command prefix that runs as this service's user
    if [ "$mode" = rootless ]; then
        echo runuser -u "$user" -- env HOME="$(getent passwd "$user" | cut -d: -f6)" XDG_RUNTIME_DIR="$rundir"
    else
        echo env CONTAINERS_CONF="$rundir/containers.conf"
    fi
}

as_engine_user() { (cd / && $(engine_user_env) "$@"); }

# Rootful Podman 4.3 gives every container nofile=1048576 and nproc=4194304,
# which the OCI runtime cannot set where this process may not raise its hard
# limits (no CAP_SYS_RESOURCE, as in many CI sandboxes): every start fails
# with "error setting rlimit type 7: operation not permitted". Containers get
# this shell's hard nofile limit instead, as dockerd's do, and an nproc limit
# no higher than the 32768 that podman sets on itself at start-up. (Rootless
# podman already caps both at the user's hard limits.)
write_rootful_conf() {
    local nofile nproc
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
    printf '# written by slim scripts/podman.sh\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
        "$nofile" "$nofile" "$nproc" "$nproc"
}

prepare_rootless() {
    install_missing podman uidmap slirp4netns
    if ! id "$user" >/dev/null 2>&1; then
        say "creating user $user"
        useradd --create-home --shell /usr/sbin/nologin "$user"
    fi
    # Rootless podman maps the container's users onto the user's subordinate
    # ids; useradd gives a new user 65536 of them on Debian.
    grep -q "^$user:" /etc/subuid || usermod --add-subuids 200000-265535 "$user"
    grep -q "^$user:" /etc/subgid || usermod --add-subgids 200000-265535 "$user"
    # slirp4netns (published ports of rootless containers) opens /dev/net/tun
    # as the user; udev makes it 0666 on a booted Debian, a bare devtmpfs
    # (containers, VMs without udev) leaves it 0600.
    if [ -c /dev/net/tun ] && ! runuser -u "$user" -- test -r /dev/net/tun -a -w /dev/net/tun; then
        say "making /dev/net/tun usable by users (mode 0666, as udev does)"
        chmod 0666 /dev/net/tun
    fi
    install -d -m 0700 -o "$user" -g "$user" "$rundir"
}

if ! answers; then
    bash "$(dirname "$0")/cgroups.sh"
    if [ "$mode" = rootless ]; then
        prepare_rootless
    else
        install_missing podman
        install -d -m 0755 "$rundir"
        write_rootful_conf >"$rundir/containers.conf"
    fi
    mkdir -p "$(dirname "$log")"
    rm -f "$sock"
    say "starting podman system service on $url (log: $log)"
    # setsid: the service outlives this script and the make/CI step that ran it.
    (cd / && exec setsid $(engine_user_env) podman system service --time=0 "$url") >>"$log" 2>&1 </dev/null &
    deadline=$((SECONDS + timeout))
    until answers; do
        [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" >&2 || true; die "podman did not answer on $sock within ${timeout}s"; }
        sleep 0.5
    done
fi
say "ready on $url ($(as_engine_user podman --version))"

for image in $images; do
    as_engine_user podman image exists "$image" && continue
    docker image inspect "$image" >/dev/null 2>&1 \
        || die "$image is not on the Docker engine to copy from; run scripts/base-images.sh first"
    say "copying $image from the Docker engine"
    docker save "$image" | as_engine_user podman load -q >/dev/null || die "podman load of $image failed"
    as_engine_user podman image exists "$image" || die "$image is not in podman's store after loading it"
done

echo "$url"
