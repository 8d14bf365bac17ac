#!/usr/bin/env bash
# All tests: lints, unit tests, and kernel tests in throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh tests
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Kernel tests fail here, not skip, if they cannot run.
RAMPART_KERNEL_TESTS=required cargo test --workspace --release
# The Debian package, in a scratch root; the Ansible module, against a namespace.
bash scripts/test-deb.sh
bash scripts/test-ansible.sh target/release/rampart
left=$(ip netns list | grep -c '^rp[0-9]' || true)
if [ "$left" -gt 0 ]; then
  echo "ERROR: $left test namespace(s) left behind" >&2
  exit 1
fi
