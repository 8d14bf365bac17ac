#!/usr/bin/env bash
# Build rampart's Debian package: target/debian/rampart_VERSION_ARCH.deb (as any user;
# needs cargo-deb: cargo install cargo-deb). The man page and completions are made from
# the command-line definition first (pkg/).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
command -v cargo-deb >/dev/null || {
    echo "ERROR: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
}
cargo build --release --quiet --bin rampart
cargo run --release --quiet -p rampart-pkg -- target/pkg
gzip -9nf target/pkg/rampart.8
cargo deb --no-build --quiet
ls target/debian/rampart_*.deb
