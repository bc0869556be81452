#!/usr/bin/env bash
# Make sure the cgroup file systems are mounted, which dockerd and podman need
# ("Devices cgroup isn't mounted"). A booted Debian has them (systemd mounts
# them); a bare root without an init (a container, a chroot, a pivoted root
# like ../shared/tools/fresh-check's) may have an empty /sys/fs/cgroup. Then
# this mounts what Debian's cgroupfs-mount would: a tmpfs with one cgroup v1
# hierarchy per group of controllers the kernel binds together, or the
# unified cgroup2 hierarchy on a kernel that has no v1 controllers bound.
# Idempotent: anything already mounted there is left alone.
set -euo pipefail

say() { printf 'cgroups: %s\n' "$*" >&2; }
die() { printf 'cgroups: error: %s\n' "$*" >&2; exit 1; }

root=/sys/fs/cgroup
if awk -v root="$root" '$5 == root || index($5, root "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    exit 0
fi
[ "$(id -u)" = 0 ] || die "no cgroup file system is mounted at $root and mounting one needs root"
[ -d "$root" ] || die "$root does not exist (is /sys mounted?)"

# /proc/cgroups: name, hierarchy id, count, enabled. Controllers of one v1
# hierarchy must be mounted together; id 0 means not bound to any v1 hierarchy.
mapfile -t groups < <(awk '!/^#/ && $4 == 1 && $2 != 0 { g[$2] = g[$2] ? g[$2] "," $1 : $1 } END { for (id in g) print g[id] }' /proc/cgroups)

if [ "${#groups[@]}" -eq 0 ]; then
    say "mounting cgroup2 at $root"
    mount -t cgroup2 cgroup2 "$root"
    exit 0
fi

say "mounting cgroup v1 hierarchies at $root (${groups[*]})"
mount -t tmpfs -o mode=0755 cgroup "$root"
for group in "${groups[@]}"; do
    mkdir -p "$root/$group"
    mount -t cgroup -o "$group" cgroup "$root/$group"
    if [[ "$group" == *,* ]]; then  # cpu,cpuacct is also reached as cpu and cpuacct
        IFS=, read -ra names <<<"$group"
        for name in "${names[@]}"; do [ -e "$root/$name" ] || ln -s "$group" "$root/$name"; done
    fi
done
if grep -qw cgroup2 /proc/filesystems; then
    mkdir -p "$root/unified"
    mount -t cgroup2 cgroup2 "$root/unified" || true
fi
