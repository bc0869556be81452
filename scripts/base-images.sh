#!/usr/bin/env bash
# Make sure the base images slim's demo and tests build on exist locally:
# debian:bookworm and busybox:latest. A pull is tried first; where no registry
# answers, they are made from Debian's archive: debian with debootstrap
# (minbase) + docker import, busybox from Debian's busybox-static with its
# applet links + docker import. Idempotent: present images are kept.
#
#   SLIM_DEBIAN_MIRROR   the Debian archive to debootstrap from
#                        (default: the first one in this host's apt sources)
set -euo pipefail

say() { printf 'base-images: %s\n' "$*" >&2; }
die() { printf 'base-images: error: %s\n' "$*" >&2; exit 1; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {
    say "pulling $1"
    if timeout 120 docker pull -q "$1" >/dev/null 2>&1; then return 0; fi
    say "no registry answered for $1; making it from Debian's archive"
    return 1
}

need_root_and_apt() {
    [ "$(id -u)" = 0 ] || die "making $1 needs root (debootstrap, dpkg); run as root or pull $1 yourself"
    command -v apt-get >/dev/null 2>&1 || die "making $1 needs apt-get; pull $1 yourself"
}

host_mirror() {
    if [ -n "${SLIM_DEBIAN_MIRROR:-}" ]; then echo "$SLIM_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
    [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
    [ -n "$uri" ] || die "no Debian mirror in this host's apt sources; set SLIM_DEBIAN_MIRROR"
    echo "$uri"
}

workdir=$(mktemp -d /tmp/slim-base.XXXXXX)
trap 'rm -rf "$workdir"' EXIT

make_debian() {
    need_root_and_apt debian:bookworm
    command -v debootstrap >/dev/null 2>&1 || {
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null || die "apt-get install debootstrap failed"
    }
    local mirror root=$workdir/debian
    mirror=$(host_mirror)
    say "debootstrap --variant=minbase bookworm (a few minutes)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
        tail -n 20 "$workdir/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # The apt lists and caches of the bootstrap do not belong in an image.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$root" -c . | docker import --change 'CMD ["bash"]' - debian:bookworm >/dev/null
}

make_busybox() {
    need_root_and_apt busybox:latest
    local root=$workdir/busybox
    (cd "$workdir" && apt-get download busybox-static >/dev/null 2>&1) || die "apt-get download busybox-static failed"
    dpkg-deb -x "$workdir"/busybox-static_*.deb "$workdir/pkg"
    mkdir -p "$root"/bin "$root"/sbin "$root"/usr/bin "$root"/usr/sbin "$root"/etc "$root"/root "$root"/var/spool/mail "$root"/home
    install -d -m 1777 "$root"/tmp
    cp "$workdir"/pkg/bin/busybox "$root"/bin/busybox
    local applet
    for applet in $("$root"/bin/busybox --list-full); do
        [ -e "$root/$applet" ] || ln "$root"/bin/busybox "$root/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$root"/etc/passwd
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root"/etc/group
    tar --numeric-owner -C "$root" -c . | docker import --change 'CMD ["sh"]' - busybox:latest >/dev/null
}

for image in debian:bookworm busybox:latest; do
    if have_image "$image"; then
        say "$image is present"
        continue
    fi
    if ! try_pull "$image"; then
        case "$image" in
            debian:*) make_debian ;;
            busybox:*) make_busybox ;;
        esac
    fi
    have_image "$image" || die "$image could not be made"
    say "$image is ready"
done
