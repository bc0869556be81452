#!/usr/bin/env bash
# A Docker engine that is remote to this machine, reached every way a user
# reaches one, for slim's remote-engine tests:
#
#   bash scripts/remote-engine.sh up ID     start it; prints its facts as NAME=VALUE lines
#   bash scripts/remote-engine.sh down ID   stop everything `up ID` started and remove its files
#
# ID (2..250) keeps concurrent instances apart (names, addresses, ports). The
# engine is a second dockerd in its own network namespace slim-rID, joined to
# this machine by a veth pair: this side 10.199.ID.1, the engine's side
# 10.199.ID.2, so its published ports are open on 10.199.ID.2 and NOT on this
# machine's 127.0.0.1. It has its own data root, exec root, containerd and
# sockets, and is reached as:
#
#   TCP_HOST      tcp://10.199.ID.2:2375   plain TCP (socat in the namespace to its socket)
#   TLS_HOST      tcp://10.199.ID.2:2376   dockerd's own --tlsverify listener; certificates
#                                         in TLS_CERT_PATH (ca.pem, cert.pem, key.pem)
#   TUNNEL_HOST   tcp://127.0.0.1:PORT     a local tunnel (socat) to TCP_HOST: a remote
#                                         engine that looks local
#   SSH_HOST      ssh://root@10.199.ID.2   sshd in the namespace; `docker system dial-stdio`
#                                         there reaches this engine
#   SSH_LOCAL_HOST ssh://root@localhost:PORT  sshd on this machine's loopback, for the
#                                         machine's own engine (the default socket)
#
# SSH_HOME is a home directory with .ssh/id_ed25519, known_hosts and config
# for both sshds: run a client with HOME=$SSH_HOME. Images are copied in
# from this machine's engine (`docker save | docker load`): IMAGES (default
# busybox:latest). Installs iproute2, socat, openssh-server/-client and
# openssl when they are missing. Needs root.
set -euo pipefail

action=${1:-}
id=${2:-}
images=${SLIM_REMOTE_IMAGES:-busybox:latest}
timeout=${SLIM_ENGINE_TIMEOUT:-60}

say() { printf 'remote-engine %s: %s\n' "$id" "$*" >&2; }
die() { printf 'remote-engine %s: error: %s\n' "$id" "$*" >&2; exit 1; }

case "$action" in up|down) ;; *) die "usage: scripts/remote-engine.sh up|down ID" ;; esac
[[ "$id" =~ ^[0-9]+$ ]] && [ "$id" -ge 2 ] && [ "$id" -le 250 ] || die "ID must be a number from 2 to 250"
[ "$(id -u)" = 0 ] || die "a network namespace, a second dockerd and sshd need root"

ns=slim-r$id
host_if=slimh$id
ns_if=slimn$id
host_ip=10.199.$id.1
engine_ip=10.199.$id.2
state=/run/slim-remote-$id          # sockets, pid files, exec root, certificates, keys
data=/var/lib/slim-remote-$id       # the engine's data root (overlay2 wants a real fs)
tunnel_port=$((23000 + id))
ssh_local_port=$((22000 + id))

# nsenter, not `ip netns exec`: the latter also remounts /sys, which hides the
# cgroup mounts from dockerd ("Devices cgroup isn't mounted").
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }

alive() {  # alive PID: running, and not a zombie nobody has reaped yet
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

stop_pidfile() {  # stop the process whose pid is in FILE, and wait for it
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if [ -n "$pid" ] && alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

mounts_under() {  # mount points at or under DIR, deepest first
    awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/mounts | sort -r
}

down() {
    # dockerd first: it stops its containers and unmounts its layers.
    stop_pidfile "$state/dockerd.pid"
    for name in socat-tcp socat-tunnel sshd-ns sshd-local; do stop_pidfile "$state/$name.pid"; done
    if ip netns list | grep -qw "$ns"; then ip netns del "$ns"; fi
    ip link show "$host_if" >/dev/null 2>&1 && ip link del "$host_if"
    # Mounts dockerd may have left (it was killed, or crashed).
    if [ -d "$data" ]; then
        mounts_under "$data" | while read -r mnt; do umount -l "$mnt" || true; done
        rm -rf --one-file-system "$data"
    fi
    if [ -d "$state" ]; then
        mounts_under "$state" | while read -r mnt; do umount -l "$mnt" || true; done
        rm -rf --one-file-system "$state"
    fi
}

if [ "$action" = down ]; then
    down
    say "down"
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

install_missing iproute2 socat openssh-server openssh-client openssl iptables
command -v dockerd >/dev/null 2>&1 || die "no dockerd here; run scripts/engine.sh first (it installs docker.io)"
bash "$(dirname "$0")/cgroups.sh"
[ -d "$state" ] && die "$state exists: instance $id is up or was not taken down; run: scripts/remote-engine.sh down $id"

# A failure half-way leaves nothing behind.
trap 'status=$?; if [ $status -ne 0 ]; then say "setting up failed; taking it down"; down; fi' EXIT

mkdir -p "$state/tls" "$state/ssh" "$state/home/.ssh" "$data"
chmod 0700 "$state/home" "$state/home/.ssh"

say "network namespace $ns, $host_ip <-> $engine_ip"
ip netns add "$ns"
ip link add "$host_if" type veth peer name "$ns_if"
ip link set "$ns_if" netns "$ns"
ip addr add "$host_ip/24" dev "$host_if"
ip link set "$host_if" up
in_ns ip addr add "$engine_ip/24" dev "$ns_if"
in_ns ip link set "$ns_if" up
in_ns ip link set lo up
in_ns ip route add default via "$host_ip"

# TLS: a CA, the engine's server certificate (for its address) and a client
# certificate, in the layout DOCKER_CERT_PATH expects.
tls=$state/tls
openssl_quiet() { openssl "$@" >/dev/null 2>&1 || { openssl "$@"; die "openssl $1 failed"; }; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=slim test CA $id" \
    -keyout "$tls/ca-key.pem" -out "$tls/ca.pem"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=$engine_ip" -keyout "$tls/server-key.pem" -out "$tls/server.csr"
printf 'subjectAltName = IP:%s\nextendedKeyUsage = serverAuth\n' "$engine_ip" >"$tls/server.ext"
openssl_quiet x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$tls/server.ext" -out "$tls/server-cert.pem"
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=slim test client" -keyout "$tls/key.pem" -out "$tls/client.csr"
printf 'extendedKeyUsage = clientAuth\n' >"$tls/client.ext"
openssl_quiet x509 -req -in "$tls/client.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial \
    -days 2 -extfile "$tls/client.ext" -out "$tls/cert.pem"
mkdir -p "$tls/client"
cp "$tls/ca.pem" "$tls/cert.pem" "$tls/key.pem" "$tls/client/"

say "starting dockerd in $ns (log: $state/dockerd.log)"
(cd / && exec nsenter --net="/run/netns/$ns" setsid dockerd \
    --data-root "$data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid" \
    --cgroup-parent "/slim-remote-$id" \
    -H "unix://$state/docker.sock" \
    -H "tcp://$engine_ip:2376" --tlsverify \
    --tlscacert "$tls/ca.pem" --tlscert "$tls/server-cert.pem" --tlskey "$tls/server-key.pem") \
    >"$state/dockerd.log" 2>&1 </dev/null &
dockerd_pid=$!
deadline=$((SECONDS + timeout))
until docker -H "unix://$state/docker.sock" version >/dev/null 2>&1; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then tail -n 20 "$state/dockerd.log" >&2; die "dockerd exited"; fi
    if [ "$SECONDS" -ge "$deadline" ]; then tail -n 20 "$state/dockerd.log" >&2; die "dockerd did not answer within ${timeout}s"; fi
    sleep 0.3
done

# Plain TCP, without dockerd's warnings about an unencrypted listener.
(cd / && exec nsenter --net="/run/netns/$ns" socat "TCP-LISTEN:2375,bind=$engine_ip,fork,reuseaddr" "UNIX-CONNECT:$state/docker.sock") \
    >"$state/socat-tcp.log" 2>&1 </dev/null &
echo $! >"$state/socat-tcp.pid"
# The tunnel: a remote engine behind a local port.
(cd / && exec socat "TCP-LISTEN:$tunnel_port,bind=127.0.0.1,fork,reuseaddr" "TCP:$engine_ip:2375") \
    >"$state/socat-tunnel.log" 2>&1 </dev/null &
echo $! >"$state/socat-tunnel.pid"

# ssh: one host key and one client key for both sshds; the client trusts
# only those, through SSH_HOME (never this machine's ~/.ssh).
ssh-keygen -q -t ed25519 -N '' -C "slim remote-engine $id host" -f "$state/ssh/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C "slim remote-engine $id client" -f "$state/home/.ssh/id_ed25519"
cp "$state/home/.ssh/id_ed25519.pub" "$state/ssh/authorized_keys"
hostkey=$(cut -d' ' -f1,2 "$state/ssh/host_ed25519.pub")
{
    echo "$engine_ip $hostkey"
    echo "[localhost]:$ssh_local_port $hostkey"
    echo "[127.0.0.1]:$ssh_local_port $hostkey"
} >"$state/home/.ssh/known_hosts"
printf 'Host *\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n' \
    "$state/home/.ssh/id_ed25519" "$state/home/.ssh/known_hosts" >"$state/home/.ssh/config"
mkdir -p /run/sshd  # sshd's privilege separation directory
sshd_config() {  # sshd_config LISTEN PIDFILE DOCKER_HOST
    printf '%s\n' \
        "ListenAddress $1" "HostKey $state/ssh/host_ed25519" "PidFile $2" \
        "AuthorizedKeysFile $state/ssh/authorized_keys" "PermitRootLogin prohibit-password" \
        "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UsePAM no" \
        "StrictModes no" "SetEnv DOCKER_HOST=$3" "Subsystem sftp internal-sftp"
}
sshd_config "$engine_ip:22" "$state/sshd-ns.pid" "unix://$state/docker.sock" >"$state/ssh/sshd-ns.conf"
sshd_config "127.0.0.1:$ssh_local_port" "$state/sshd-local.pid" "unix:///var/run/docker.sock" >"$state/ssh/sshd-local.conf"
in_ns "$(command -v sshd)" -f "$state/ssh/sshd-ns.conf" -E "$state/sshd-ns.log"
"$(command -v sshd)" -f "$state/ssh/sshd-local.conf" -E "$state/sshd-local.log"

ssh_answers() {  # ssh_answers HOST [PORT]: the engine answers through it
    HOME=$state/home ssh -F "$state/home/.ssh/config" -o BatchMode=yes -o ConnectTimeout=5 \
        -p "${2:-22}" "root@$1" docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}
until ssh_answers "$engine_ip" && ssh_answers localhost "$ssh_local_port" \
        && docker -H "tcp://127.0.0.1:$tunnel_port" version >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 5 "$state"/sshd-*.log "$state"/socat-*.log >&2 || true
        die "ssh or the TCP listeners did not answer within ${timeout}s"
    fi
    sleep 0.3
done

for image in $images; do
    say "copying $image from this machine's engine"
    docker save "$image" | docker -H "unix://$state/docker.sock" load -q >/dev/null || die "loading $image failed"
done

trap - EXIT
say "up"
cat <<EOF
ENGINE_IP=$engine_ip
HOST_IP=$host_ip
NETNS=$ns
SOCKET=unix://$state/docker.sock
TCP_HOST=tcp://$engine_ip:2375
TLS_HOST=tcp://$engine_ip:2376
TLS_CERT_PATH=$tls/client
TUNNEL_HOST=tcp://127.0.0.1:$tunnel_port
SSH_HOST=ssh://root@$engine_ip
SSH_LOCAL_HOST=ssh://root@localhost:$ssh_local_port
SSH_HOME=$state/home
EOF
