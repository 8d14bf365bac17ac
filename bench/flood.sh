#!/usr/bin/env bash
# Limits under attack: rampart beside UFW 0.36 (its `recent` module), in throwaway
# network namespaces (about 4 minutes; as root, from anywhere in the repository):
#
#   bash bench/flood.sh
#
# Measures the cost of a refused SYN for a plain rule and each kind of limit, and what
# an attacker and legitimate clients get during and after a flood of spoofed sources
# (raw SYNs from 198.19.0.0/16, inside the namespaces). Markdown on stdout, also written
# to target/bench/flood.md. The host's firewall and /etc/ufw are never touched: UFW
# runs on private copies of its files (bench/ufw-env.sh).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
[ "$(id -u)" -eq 0 ] || { echo "ERROR: run as root (namespaces and nftables need it)" >&2; exit 1; }
need=()
for pair in nft:nftables iptables:iptables ufw:ufw ip:iproute2; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --workspace --quiet
mkdir -p target/bench
UFW_ENV=bench/ufw-env.sh target/release/rampart-flood target/release/rampart | tee target/bench/flood.md
