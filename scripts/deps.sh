#!/usr/bin/env bash
# Installs what rampart's demo needs on a fresh Debian machine (as root); with `tests`,
# also what the tests need: UFW (the import differential), man-db (the package's man
# page), ansible-core (the Ansible module), tmux (a terminal for rampart top) and
# cargo-deb (the package).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "ERROR: run as root (network namespaces and nftables need it)" >&2
  exit 1
fi
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
# The fault-injection and lock tests use unshare, flock and su.
for tool in unshare flock su; do
  command -v "$tool" >/dev/null 2>&1 || need+=(util-linux)
done
[ -e /etc/services ] || need+=(netbase)
# The boot unit's test runs systemd-analyze verify.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ "${1:-}" = tests ]; then
  command -v ufw >/dev/null 2>&1 || need+=(ufw)
  command -v man >/dev/null 2>&1 || need+=(man-db)
  command -v ansible >/dev/null 2>&1 || need+=(ansible-core)
  command -v tmux >/dev/null 2>&1 || need+=(tmux)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
modprobe nf_tables 2>/dev/null || true
if [ "${1:-}" = tests ] && ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked --quiet
fi
