#!/usr/bin/env bash
# Record what UFW 0.36 answers to the command sequences of tests/ufw/sequences.txt, in
# tests/ufw/recorded.txt (as root; installs ufw if missing). UFW runs on private copies
# of its files (bench/ufw-env.sh) inside a throwaway network namespace: the host's
# firewall and /etc/ufw are never touched.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
[ "$(id -u)" -eq 0 ] || { echo "ERROR: run as root" >&2; exit 1; }
command -v ufw >/dev/null || { apt-get update -qq; apt-get install -y -qq ufw >/dev/null; }
ns=rpufwrec$$
state=$(mktemp -d)
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$state"' EXIT
ip netns add "$ns"
cp -a /etc/ufw "$state/etc-ufw"
# The profiles rampart is given (tests/ufw_parity.rs), not the host's packages'.
rm -rf "$state/etc-ufw/applications.d"
cp -a tests/ufw/applications.d "$state/etc-ufw/applications.d"
cp -a "$(readlink -f /lib/ufw)" "$state/lib-ufw"
cp -a /etc/default/ufw "$state/default-ufw"
# Each sequence starts from these: reset leaves UFW's default policies and logging level
# as they were.
cp -a "$state/default-ufw" "$state/default-ufw.orig"
cp -a "$state/etc-ufw/ufw.conf" "$state/ufw.conf.orig"
ufw_() { ip netns exec "$ns" bash bench/ufw-env.sh "$state" ufw "$@" </dev/null 2>&1 || true; }
out=tests/ufw/recorded.txt
{
    echo "# What $(ufw version | head -1) answered to tests/ufw/sequences.txt (scripts/ufw-record.sh)."
    while IFS= read -r line; do
        case "$line" in
        "#"* | "") ;;
        "=== "*)
            echo "$line"
            ufw_ --force reset >/dev/null
            cp "$state/default-ufw.orig" "$state/default-ufw"
            cp "$state/ufw.conf.orig" "$state/etc-ufw/ufw.conf"
            ufw_ --force enable >/dev/null
            ;;
        *)
            echo "\$ $line"
            # A delete with --force, as rampart is run (tests/ufw_parity.rs): UFW asks
            # before it deletes by number, and takes --force only where it would ask.
            force=()
            case "$line" in "delete "* | "route delete "*) force=(--force) ;; esac
            # shellcheck disable=SC2086 # the command is words
            ufw_ "${force[@]}" $line
            ;;
        esac
    done <tests/ufw/sequences.txt
} >"$out"
echo "wrote $out"
