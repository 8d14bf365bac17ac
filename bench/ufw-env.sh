#!/usr/bin/env bash
# ufw-env.sh STATE_DIR COMMAND [ARGS...]
#
# Runs COMMAND with a private UFW: a new mount namespace in which the private copies
# STATE_DIR/etc-ufw, STATE_DIR/lib-ufw and STATE_DIR/default-ufw are bind-mounted over
# /etc/ufw, /lib/ufw and /etc/default/ufw, and a private tmpfs covers /run (so ufw's and
# xtables' lock files are private too). The host's UFW files are never written.
#
# It must be started inside the benchmark's server network namespace
# (`ip netns exec NS bash bench/ufw-env.sh ...`) so that the iptables rules ufw loads
# land there; it refuses to run in the host's network namespace.
set -euo pipefail

if [ "${RAMPART_BENCH_UFW_INNER:-}" != 1 ]; then
    [ $# -ge 2 ] || { echo "usage: $0 STATE_DIR COMMAND [ARGS...]" >&2; exit 2; }
    if [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ]; then
        echo "ufw-env: refusing to run in the host's network namespace" >&2
        exit 99
    fi
    exec env RAMPART_BENCH_UFW_INNER=1 \
        unshare --mount --propagation private bash "$(readlink -f "$0")" "$@"
fi

state=$1
shift
# Both namespaces must be private before anything is mounted or any rule loaded.
if [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ] ||
    [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "ufw-env: not in private namespaces" >&2
    exit 99
fi
mount --bind "$state/etc-ufw" /etc/ufw
mount --bind "$state/lib-ufw" /lib/ufw
mount --bind "$state/default-ufw" /etc/default/ufw
mount -t tmpfs tmpfs /run
for pair in /etc/ufw:etc-ufw /lib/ufw:lib-ufw /etc/default/ufw:default-ufw; do
    p=${pair%%:*}
    c=$state/${pair#*:}
    if [ "$(stat -L -c %d:%i "$p")" != "$(stat -L -c %d:%i "$c")" ]; then
        echo "ufw-env: $p is not the private copy" >&2
        exit 98
    fi
done
exec "$@"
