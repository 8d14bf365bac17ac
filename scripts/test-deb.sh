#!/usr/bin/env bash
# Build the Debian package and check it in a scratch root (dpkg --root, maintainer
# scripts run chrootless with DPKG_ROOT set): nothing is installed on this host, no
# unit is enabled and no firewall is touched. Checks the files, the version, that the
# man page renders with an EXAMPLES section, that the maintainer scripts made the
# config directory private and enabled nothing, and that purge removes it all.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
pass=0
fail() { echo "deb: FAILED: $*" >&2; echo "deb: $pass passed, 1 failed"; exit 1; }
ok() { pass=$((pass + 1)); }
deb=$(bash scripts/deb.sh | tail -1)
root=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$root" "$log"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
dpkg_() { dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null "$@"; }
# (--force-depends: the scratch root has no libc6 or nftables package to depend on.)
dpkg_ -i "$deb" >"$log" 2>&1 || { cat "$log" >&2; fail "dpkg -i"; }
ok
for f in usr/sbin/rampart lib/systemd/system/rampart.service usr/share/man/man8/rampart.8.gz \
    usr/share/bash-completion/completions/rampart usr/share/zsh/vendor-completions/_rampart \
    usr/share/fish/vendor_completions.d/rampart.fish usr/share/rampart/policy.toml \
    usr/share/doc/rampart/copyright; do
    [ -f "$root/$f" ] || fail "missing /$f"
    ok
done
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
[ "$("$root/usr/sbin/rampart" --version)" = "rampart $version" ] || fail "rampart --version"
ok
man -P cat -l "$root/usr/share/man/man8/rampart.8.gz" >"$root/man.txt" 2>/dev/null ||
    fail "man -l"
grep -q '^EXAMPLES' "$root/man.txt" || fail "no EXAMPLES section in the man page"
grep -q 'rampart limit 3128/tcp conn 1 per any' "$root/man.txt" || fail "man page lacks limit's example"
ok
[ "$(stat -c %a "$root/etc/rampart")" = 700 ] || fail "/etc/rampart is not 0700"
[ -d "$root/etc/rampart/applications.d" ] || fail "no profile directory"
[ ! -e "$root/etc/rampart/policy.toml" ] || fail "installing wrote a policy"
[ -z "$(find "$root/etc" -path '*systemd*' -name 'rampart*' 2>/dev/null)" ] || fail "a unit was enabled"
ok
# The policy shipped as reference is the one rampart uses without a file.
d=$(mktemp -d) && chmod 700 "$d"
"$root/usr/sbin/rampart" --config-dir "$d" --force reset >/dev/null
cmp -s "$d/policy.toml" "$root/usr/share/rampart/policy.toml" || fail "usr/share/rampart/policy.toml is not the default policy"
rm -rf "$d"
ok
grep -q "bash" <(head -c 200 "$root/usr/share/bash-completion/completions/rampart") ||
    grep -q "_rampart" "$root/usr/share/bash-completion/completions/rampart" || fail "bash completion"
ok
dpkg_ --purge rampart >"$log" 2>&1 || { cat "$log" >&2; fail "dpkg --purge"; }
left=$(cd "$root" && find . -path ./var -prune -o -type f -print | grep -v '^./man.txt$' || true)
[ -z "$left" ] || fail "left after purge: $left"
[ ! -e "$root/etc/rampart" ] || fail "/etc/rampart left after purge"
ok
echo "deb: $pass passed, 0 failed ($(basename "$deb"))"
