#!/usr/bin/env bash
# The demo: throwaway network namespaces, a small policy, real connections.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --quiet --workspace
exec ./target/release/rampart-demo ./target/release/rampart
