#!/usr/bin/env bash
# rampart benchmark suite: rampart vs UFW 0.36 vs a hand-written nftables ruleset.
#
#   bash bench/run.sh (as root)         (from the repository root; about 18 minutes on 2 cores)
#
# Measures, side by side on this machine:
#   1. apply time at 100 / 1k / 10k rules: `rampart reload`, `ufw reload`, `nft -f` of a
#      hand-written ruleset built on sets;
#   2. time to add one rule at 1k and 10k rules (`rampart allow ...` vs `ufw allow ...`);
#   3. new TCP connections per second (wrk, `Connection: close`) against nginx at
#      0 / 1k / 10k rules: no firewall, rampart, UFW, hand-written nft;
#   4. `status` time and peak RSS at 10k rules;
# and, at 10k rules, where `rampart reload` spends its time (each nft call timed), the
# same rules in a shuffled order (rampart and UFW), and each kind of rule alone
# (rampart). It prints markdown tables, also written to target/bench/results.md.
#
# Isolation: everything happens in network namespaces created here (a server and a
# client namespace per firewall, joined by a veth pair created from inside them), with
# addresses from 198.18.0.0/15 only. UFW runs on private bind-mounted copies of its files
# (bench/ufw-env.sh) inside its server namespace. The host's firewall, routes, interfaces
# and /etc/ufw are never touched; the script checks the host ruleset is unchanged at the
# end. All namespaces, nginx processes and temporary files are removed on exit.
#
# Environment:
#   RAMPART_BIN   rampart binary (default target/release/rampart, built if missing)
#   BENCH_OUT     where raw results go (default target/bench)
#   WRK_SECONDS   length of one wrk run (default 5)
#   WRK_ROUNDS    wrk runs per configuration, median taken (default 5)
#   BENCH_LEVELS  rule counts to measure (default "100 1000 10000")
#   BENCH_DIAG    1 (default): also measure each kind of rule of the 10k mix alone
#                 against rampart's connection rate (~2 minutes); 0 to skip
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
BENCH_DIR=$PWD/bench
OUT=${BENCH_OUT:-target/bench}
mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")
WRK_SECONDS=${WRK_SECONDS:-5}
WRK_ROUNDS=${WRK_ROUNDS:-5}
read -r -a LEVELS <<<"${BENCH_LEVELS:-100 1000 10000}" # rule counts (smoke tests: fewer)

# Everything measured runs at a raised priority, the same for every configuration, so
# that unrelated work on the machine disturbs the figures less.
NICE=(nice -n -10)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, nftables and iptables need it)"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    log "note: load average is $load; other work on the machine makes the figures noisier"
fi

if ip netns list 2>/dev/null | grep -qE '^rb[0-9]+-s-none'; then
    log "note: another bench/run.sh seems to be running; the two disturb each other's figures"
fi

# ------------------------------------------------------------------ dependencies
need=()
for pair in nft:nftables iptables:iptables ufw:ufw nginx:nginx-light wrk:wrk \
    hyperfine:hyperfine ip:iproute2 python3:python3; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

RAMPART=${RAMPART_BIN:-target/release/rampart}
if [ ! -x "$RAMPART" ] && [ -z "${RAMPART_BIN:-}" ]; then
    log "building rampart (cargo build --release)"
    cargo build --release
fi
[ -x "$RAMPART" ] || die "no rampart binary at $RAMPART"
RAMPART_SRC=$(readlink -f "$RAMPART")
RAMPART_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    RAMPART_COMMIT="$RAMPART_COMMIT (uncommitted changes)"
fi

# ------------------------------------------------------------------ host state guard
# Fingerprint of the host's own firewall, compared at the end: the suite must leave it
# exactly as it was.
host_fingerprint() {
    { nft list ruleset; iptables -S; ip6tables -S; } 2>&1 | sha256sum | cut -d' ' -f1
}
HOST_FP_BEFORE=$(host_fingerprint)

# ------------------------------------------------------------------ workspace, cleanup
WORK=$(mktemp -d /tmp/rampart-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers (user nobody) read the document root below it
ID=rb$$           # prefix of every namespace made here
NAMESPACES=()
# Measure a snapshot of the binary: a rebuild during the run must not mix two versions.
RAMPART=$WORK/rampart
cp "$RAMPART_SRC" "$RAMPART"

cleanup() {
    local rc=$?
    set +e
    for pidfile in "$WORK"/nginx-*/nginx.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    sleep 0.5
    for ns in "${NAMESPACES[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
    if [ "$(host_fingerprint)" != "$HOST_FP_BEFORE" ]; then
        log "WARNING: the host's nft/iptables ruleset differs from before the run"
        rc=1
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -f "$OUT"/hf-*.json "$OUT"/hf-*.txt "$OUT"/wrk-*.txt "$OUT"/rss-*.txt \
    "$OUT"/phases-*.tsv "$OUT"/objects-*.txt "$OUT"/env.txt "$OUT"/results.md

# ------------------------------------------------------------------ namespaces + nginx
# One server/client pair per configuration, so each firewall has a namespace of its own
# (no leftovers from another firewall) and the configurations can be measured in turns.
# ct: connection tracking and one accept rule (bench/conntrack-floor.nft), the floor
# of any stateful firewall, measured for connection rates only.
CONFIGS=(none rampart ufw nft ct)
srv() { echo "$ID-s-$1"; }
cli() { echo "$ID-c-$1"; }

make_pair() {
    local s c
    s=$(srv "$1") c=$(cli "$1")
    ip netns add "$s"
    NAMESPACES+=("$s")
    ip netns add "$c"
    NAMESPACES+=("$c")
    # Created from inside the server namespace, peer moved straight into the client's:
    # no interface ever exists in the host's namespace.
    ip -n "$s" link add veth0 type veth peer name veth0 netns "$c"
    for ns in "$s" "$c"; do ip -n "$ns" link set lo up; done
    ip -n "$s" addr add 198.18.0.1/24 dev veth0
    ip -n "$c" addr add 198.18.0.2/24 dev veth0
    ip -n "$s" link set veth0 up
    ip -n "$c" link set veth0 up
    # The load generator must not be the limit: at ~20k connections/s from one address,
    # the client's ephemeral ports all sit in TIME_WAIT after about a minute of runs and
    # the rate collapses to ~500/s, firewall or not. Every port, and reuse of TIME_WAIT
    # ports (timestamps keep it safe), in the client namespace only.
    ip netns exec "$c" sysctl -qw net.ipv4.ip_local_port_range="1024 65535" \
        net.ipv4.tcp_tw_reuse=1
}

start_nginx() {
    local d=$WORK/nginx-$1
    mkdir -p "$d/www" "$d/tmp"
    echo ok >"$d/www/index.html"
    chmod -R a+rX "$d"
    # Its own prefix, pid file, logs and temp paths: nothing under /var or /etc is used.
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen 198.18.0.1:80 backlog=4096;
        root $d/www;
    }
}
EOF
    ip netns exec "$(srv "$1")" "${NICE[@]}" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
}

# ------------------------------------------------------------------ firewalls
RCONF=$WORK/rampart-conf # rampart's config dir (policy.toml)
UFWSTATE=$WORK/ufw-state # private copies of /etc/ufw, /lib/ufw, /etc/default/ufw
GEN=$WORK/gen            # generated rule sets, one dir per level

in_rampart() { ip netns exec "$(srv rampart)" "$@"; }
in_ufw() { ip netns exec "$(srv ufw)" bash "$BENCH_DIR/ufw-env.sh" "$UFWSTATE" "$@"; }
in_nft() { ip netns exec "$(srv nft)" "$@"; }
in_ct() { ip netns exec "$(srv ct)" "$@"; }

setup_ufw() {
    mkdir -p "$UFWSTATE"
    cp -a /etc/ufw "$UFWSTATE/etc-ufw"
    cp -a "$(readlink -f /lib/ufw)" "$UFWSTATE/lib-ufw"
    cp -a /etc/default/ufw "$UFWSTATE/default-ufw"
    in_ufw ufw --force enable >/dev/null
    # Let ufw itself write user.rules/user6.rules for a few sample rules: these files are
    # the templates the generator splices its rules into, and its output for the same
    # sample must equal ufw's byte for byte.
    python3 "$BENCH_DIR/gen.py" sample-commands | while read -r rule; do
        # shellcheck disable=SC2086 # the rule is words
        in_ufw ufw $rule </dev/null >/dev/null
    done
    mkdir -p "$WORK/ufw-template"
    cp "$UFWSTATE/etc-ufw/user.rules" "$UFWSTATE/etc-ufw/user6.rules" "$WORK/ufw-template/"
    python3 "$BENCH_DIR/gen.py" build --sample --out "$WORK/sample" \
        --ufw-template "$WORK/ufw-template"
    for f in user.rules user6.rules; do
        diff -u "$WORK/ufw-template/$f" "$WORK/sample/$f" >&2 ||
            die "generated $f differs from what ufw writes"
    done
}

check_rampart_format() {
    # Same check for rampart: its own policy.toml for the sample commands (firewall
    # still disabled, so nothing is loaded) must equal the generator's.
    local d=$WORK/rampart-sample
    mkdir -p "$d"
    python3 "$BENCH_DIR/gen.py" sample-commands | while read -r rule; do
        # shellcheck disable=SC2086
        in_rampart "$RAMPART" --config-dir "$d" $rule </dev/null >/dev/null
    done
    python3 "$BENCH_DIR/gen.py" build --sample --disabled --out "$WORK/sample-disabled"
    diff -u "$d/policy.toml" "$WORK/sample-disabled/policy.toml" >&2 ||
        die "generated policy.toml differs from what rampart writes"
}

generate() { # LEVEL [ORDER]
    python3 "$BENCH_DIR/gen.py" build --n "$1" --order "${2:-grouped}" \
        --out "$GEN/$1${2:+-$2}" --ufw-template "$WORK/ufw-template"
}

# Load the generated level into each firewall (untimed).
load_rampart() { cp "$GEN/$1/policy.toml" "$RCONF/"; in_rampart "$RAMPART" --config-dir "$RCONF" reload >/dev/null; }
load_ufw() { cp "$GEN/$1/user.rules" "$GEN/$1/user6.rules" "$UFWSTATE/etc-ufw/"; in_ufw ufw reload >/dev/null; }
load_nft() { in_nft nft -f "$GEN/$1/ruleset.nft"; }

# ------------------------------------------------------------------ measurements
# hyperfine runs inside the namespace (and for ufw inside its private mount namespace),
# so only the command itself is timed, not the namespace entry.
hf() { # NAME RUNS WRAPPER... -- COMMAND [hyperfine args]
    local name=$1 runs=$2
    shift 2
    local wrap=()
    while [ "$1" != -- ]; do wrap+=("$1"); shift; done
    shift
    "${wrap[@]}" "${NICE[@]}" hyperfine -N --style basic --runs "$runs" \
        --export-json "$OUT/hf-$name.json" "$@" >"$OUT/hf-$name.txt" 2>&1 ||
        { cat "$OUT/hf-$name.txt" >&2; die "hyperfine $name failed"; }
    log "  $name: $(python3 "$BENCH_DIR/report.py" --median "$OUT/hf-$name.json")"
}

peak_rss() { # NAME WRAPPER... -- COMMAND...
    local name=$1 wrap=()
    shift
    while [ "$1" != -- ]; do wrap+=("$1"); shift; done
    shift
    "${wrap[@]}" /usr/bin/time -v -o "$OUT/rss-$name.txt" "$@" >/dev/null
}

# One rampart command with every nft call it makes timed (bench/nft-shim.sh); the rest
# of the wall time is rampart's own work.
phases() { # COMMAND LEVEL
    local file=$OUT/phases-$1-$2.tsv shim=$WORK/shim start end
    mkdir -p "$shim"
    printf '#!/bin/sh\nexec bash %q "$@"\n' "$BENCH_DIR/nft-shim.sh" >"$shim/nft"
    chmod +x "$shim/nft"
    : >"$file"
    start=$EPOCHREALTIME
    in_rampart env PATH="$shim:$PATH" NFT_REAL="$(command -v nft)" NFT_SHIM_LOG="$file" \
        "$RAMPART" --config-dir "$RCONF" "$1" >/dev/null
    end=$EPOCHREALTIME
    printf '%s\ttotal\n' "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')" >>"$file"
}

# One rampart command with RAMPART_TIMING=1: its own phases, as it prints them.
laps() { # NAME ARGS...
    local name=$1
    shift
    in_rampart env RAMPART_TIMING=1 "$RAMPART" --config-dir "$RCONF" "$@" \
        2>"$OUT/laps-$name.txt" >/dev/null
}

# What a table holds in the kernel (chains, sets, rules).
objects() { # rampart|nft LEVEL
    local table=rampart
    [ "$1" = nft ] && table=bench
    "in_$1" nft -j list table inet "$table" |
        python3 "$BENCH_DIR/report.py" --count-objects >"$OUT/objects-$1-$2.txt"
}

# A port nothing listens on: with a firewall the SYN is dropped (timeout), without one
# the server answers with a reset. Confirms each firewall is really loaded.
probe() { # CONFIG EXPECT(filtered|open)
    local rc=0
    ip netns exec "$(cli "$1")" timeout 1 bash -c 'exec 3<>/dev/tcp/198.18.0.1/81' \
        2>/dev/null || rc=$?
    local got=open
    [ "$rc" -eq 124 ] && got=filtered
    [ "$got" = "$2" ] || die "$1: port 81 is $got, expected $2"
}

wrk_round() { # CONFIG LEVEL ROUND
    ip netns exec "$(cli "$1")" "${NICE[@]}" wrk -t1 -c8 -d"${WRK_SECONDS}s" -H 'Connection: close' \
        http://198.18.0.1/index.html >"$OUT/wrk-$1-$2-$3.txt" 2>&1
}

conn_rates() { # LEVEL ROUNDS CONFIG...
    local level=$1 rounds=$2
    shift 2
    for cfg in "$@"; do
        if [ "$cfg" = none ]; then probe none open; else probe "$cfg" filtered; fi
    done
    # Rounds alternate between configurations so that drift on the machine hits all of
    # them alike.
    for round in $(seq 1 "$rounds"); do
        for cfg in "$@"; do
            wrk_round "$cfg" "$level" "$round"
            log "  wrk $cfg @$level #$round: $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$cfg-$level-$round.txt") req/s"
        done
    done
}

# ------------------------------------------------------------------ environment record
{
    echo "date: $(date -u +%Y-%m-%d)"
    echo "nproc: $(nproc)"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
    echo "kernel: $(uname -r)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "nft: $(nft -v)"
    echo "iptables: $(iptables -V)"
    echo "ufw: $(ufw version | head -1)"
    echo "nginx: $(nginx -v 2>&1)"
    echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
    echo "hyperfine: $(hyperfine --version)"
    echo "rampart: $("$RAMPART" --version), repository at $RAMPART_COMMIT, binary sha256 $(sha256sum "$RAMPART" | cut -c1-12)"
    echo "wrk_seconds: $WRK_SECONDS"
    echo "wrk_rounds: $WRK_ROUNDS"
    echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/env.txt"

# ------------------------------------------------------------------ run
log "namespaces and nginx"
for cfg in "${CONFIGS[@]}"; do
    make_pair "$cfg"
    start_nginx "$cfg"
done
mkdir -p "$RCONF"

in_ct nft -f "$BENCH_DIR/conntrack-floor.nft"
log "ufw (private) enabled; checking generated file formats against ufw and rampart"
setup_ufw
check_rampart_format

log "generating rule sets"
for level in 0 "${LEVELS[@]}"; do generate "$level"; done
if [[ " ${LEVELS[*]} " == *" 10000 "* ]]; then generate 10000 shuffled; fi

for level in 0 "${LEVELS[@]}"; do
    log "level $level: loading"
    load_rampart "$level"
    load_ufw "$level"
    load_nft "$level"

    if [ "$level" -gt 0 ]; then
        log "level $level: apply time"
        # Fewer runs where one run takes seconds, so the suite stays near 18 minutes.
        if [ "$level" -ge 10000 ]; then runs=5; else runs=10; fi
        hf "apply-rampart-$level" "$runs" in_rampart -- \
            "$RAMPART --config-dir $RCONF reload" --warmup 1
        hf "apply-ufw-$level" 5 in_ufw -- "ufw reload" --warmup 1
        hf "apply-nft-$level" "$runs" in_nft -- "nft -f $GEN/$level/ruleset.nft" --warmup 1
    fi

    if [ "$level" -ge 1000 ]; then
        log "level $level: add one rule"
        # A distinct rule per run (198.19.250.1..5, outside every generated rule), each
        # appended to the full policy; afterwards the level is loaded again.
        hf "add-rampart-$level" 1 in_rampart -- -L i 1,2,3,4,5 \
            "$RAMPART --config-dir $RCONF allow from 198.19.250.{i} to any port 7 proto tcp"
        # The same, with the element change through nft (as before netlink writes).
        hf "add-rampart-nft-$level" 1 in_rampart -- -L i 11,12,13,14,15 \
            "env RAMPART_NFT_ELEMENTS=1 $RAMPART --config-dir $RCONF allow from 198.19.250.{i} to any port 7 proto tcp"
        hf "add-ufw-$level" 1 in_ufw -- -L i 1,2,3,4,5 \
            "ufw allow from 198.19.250.{i} to any port 7 proto tcp"
        load_rampart "$level"
        load_ufw "$level"
    fi

    if [ "$level" -eq 10000 ]; then
        log "level $level: status"
        hf "status-rampart-$level" 10 in_rampart -- "$RAMPART --config-dir $RCONF status" --warmup 1
        hf "status-ufw-$level" 10 in_ufw -- "ufw status" --warmup 1
        # status verbose: every rule's counters. Repeated, it reads the counter tags
        # the first reading kept; the first reading of a policy compiles its plan
        # (the kept tags removed before each run).
        hf "status-verbose-rampart-$level" 10 in_rampart -- \
            "$RAMPART --config-dir $RCONF status verbose" --warmup 1
        hf "status-verbose-first-rampart-$level" 10 in_rampart -- \
            "$RAMPART --config-dir $RCONF status verbose" --warmup 1 \
            --prepare "rm -f $RCONF/.counter-tags"
        hf "status-verbose-ufw-$level" 10 in_ufw -- "ufw status verbose" --warmup 1
        peak_rss "status-rampart-$level" in_rampart -- "$RAMPART" --config-dir "$RCONF" status
        peak_rss "status-ufw-$level" in_ufw -- ufw status
        peak_rss "apply-rampart-$level" in_rampart -- "$RAMPART" --config-dir "$RCONF" reload
        peak_rss "apply-ufw-$level" in_ufw -- ufw reload
        peak_rss "apply-nft-$level" in_nft -- nft -f "$GEN/$level/ruleset.nft"
        log "level $level: where rampart's time goes"
        phases reload "$level"
        phases status "$level"
        laps "reload-$level" reload
        laps "status-verbose-$level" status verbose
        laps "add-$level" allow from 198.19.250.99 to any port 7 proto tcp
        in_rampart "$RAMPART" --config-dir "$RCONF" --force delete \
            allow from 198.19.250.99 to any port 7 proto tcp >/dev/null
        objects rampart "$level"
        objects nft "$level"
    fi

    if [ "$level" -ne 100 ]; then
        log "level $level: connection rate"
        conn_rates "$level" "$WRK_ROUNDS" "${CONFIGS[@]}"
    fi
done

# The same 10k rules in a shuffled order: rampart folds runs of rules of one shape into
# map lookups, so the order matters to it; UFW walks every rule whatever the order.
if [[ " ${LEVELS[*]} " == *" 10000 "* ]]; then
    log "level 10000, shuffled order: rampart and ufw"
    load_rampart 10000-shuffled
    load_ufw 10000-shuffled
    hf "apply-rampart-10000s" 5 in_rampart -- "$RAMPART --config-dir $RCONF reload" --warmup 1
    objects rampart 10000s
    conn_rates 10000s "$WRK_ROUNDS" none rampart ufw ct
fi

# Diagnosis: which part of the 10k mix costs rampart apply time and connection rate.
# Each kind of rule alone (plus the final allow 80), rampart against no firewall.
if [[ " ${LEVELS[*]} " == *" 10000 "* ]] && [ "${BENCH_DIAG:-1}" = 1 ]; then
    for kind in src port deny limit; do
        log "level 10000, only the '$kind' rules: rampart"
        python3 "$BENCH_DIR/gen.py" build --n 10000 --only "$kind" --out "$GEN/10000$kind"
        load_rampart "10000$kind"
        hf "apply-rampart-10000$kind" 3 in_rampart -- "$RAMPART --config-dir $RCONF reload" --warmup 1
        objects rampart "10000$kind"
        conn_rates "10000$kind" "$WRK_ROUNDS" none rampart
    done
fi

echo "load_after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"

log "report"
python3 "$BENCH_DIR/report.py" "$OUT" | tee "$OUT/results.md"
python3 "$BENCH_DIR/report.py" --chart "$OUT" >"$OUT/connections.svg"
log "chart: $OUT/connections.svg (BENCHMARKS.md shows it as BENCHMARKS-connections.svg)"
