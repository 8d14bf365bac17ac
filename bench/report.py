#!/usr/bin/env python3
"""Turn the raw results of bench/run.sh into markdown tables.

  report.py OUT_DIR        the full report (tables, ratios, targets)
  report.py --median FILE  one line for a hyperfine JSON file (progress output)
  report.py --chart OUT_DIR  the connection-rate chart, as SVG

Raw files in OUT_DIR (all written by run.sh):
  hf-<what>-<tool>-<level>.json  hyperfine results (times of every run)
  wrk-<config>-<level>-<round>.txt  wrk output
  rss-<what>-<tool>-<level>.txt  /usr/bin/time -v output
  env.txt                        machine and versions
"""

import glob
import json
import os
import re
import statistics
import sys


def times(path):
    """Every run's wall time in a hyperfine JSON (all its benchmarks together)."""
    with open(path) as f:
        data = json.load(f)
    return [t for r in data["results"] for t in r["times"]]


def fmt_s(x):
    if x is None:
        return "n/a"
    if x < 1:
        return f"{x * 1000:.0f} ms" if x >= 0.01 else f"{x * 1000:.1f} ms"
    return f"{x:.2f} s"


def summary(path):
    t = times(path)
    return f"median {fmt_s(statistics.median(t))} (min {fmt_s(min(t))}, max {fmt_s(max(t))}, {len(t)} runs)"


class Results:
    def __init__(self, out):
        self.out = out

    def hf(self, name):
        p = os.path.join(self.out, f"hf-{name}.json")
        return times(p) if os.path.exists(p) else None

    def med(self, name):
        t = self.hf(name)
        return statistics.median(t) if t else None

    def spread(self, name):
        t = self.hf(name)
        return f"{fmt_s(min(t))}–{fmt_s(max(t))}" if t else ""

    def wrk(self, cfg, level):
        rates, errors = [], []
        for p in sorted(glob.glob(os.path.join(self.out, f"wrk-{cfg}-{level}-*.txt"))):
            text = open(p).read()
            m = re.search(r"Requests/sec:\s+([\d.]+)", text)
            if m:
                rates.append(float(m.group(1)))
            for line in text.splitlines():
                if "Socket errors" in line or "Non-2xx" in line:
                    errors.append(line.strip())
        return rates, errors

    def conn(self, cfg, level):
        rates, _ = self.wrk(cfg, level)
        return statistics.median(rates) if rates else None

    def round_rate(self, cfg, level, rnd):
        p = os.path.join(self.out, f"wrk-{cfg}-{level}-{rnd}.txt")
        if not os.path.exists(p):
            return None
        m = re.search(r"Requests/sec:\s+([\d.]+)", open(p).read())
        return float(m.group(1)) if m else None

    def paired(self, cfg, level, base="none"):
        """Median over rounds of cfg's rate / the base's rate (no firewall) of the same
        round.

        The configurations are measured in turns, so a round's pair saw the same
        conditions on the machine; this is steadier than a ratio of medians."""
        ratios = []
        for rnd in range(1, 100):
            a, b = self.round_rate(cfg, level, rnd), self.round_rate(base, level, rnd)
            if a is None or b is None:
                break
            ratios.append(a / b)
        return statistics.median(ratios) if ratios else None

    def rss_kb(self, name):
        p = os.path.join(self.out, f"rss-{name}.txt")
        if not os.path.exists(p):
            return None
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(p).read())
        return int(m.group(1)) if m else None


# The configurations measured for connection rates, in table order.
CONN_CONFIGS = ("none", "rampart", "ufw", "nft", "ct")


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_r(x, digits=2):
    return "n/a" if x is None else f"{x:.{digits}f}"


def verdict_max(value, target):
    """Target: value <= target."""
    if value is None:
        return "not measured"
    if value <= target:
        return "met"
    return f"**missed**: {value / target:.1f}× over the target"


def verdict_min(value, target):
    """Target: value >= target."""
    if value is None:
        return "not measured"
    if value >= target:
        return "met"
    return f"**missed** by {(target - value) * 100:.0f} points"


def level_name(level):
    return {0: "0", 100: "100", 1000: "1k", 10000: "10k"}.get(level, str(level))


def report(out):
    r = Results(out)
    lines = []
    w = lines.append

    env = {}
    if os.path.exists(os.path.join(out, "env.txt")):
        for line in open(os.path.join(out, "env.txt")):
            k, _, v = line.rstrip("\n").partition(": ")
            env[k] = v
    w("### Machine\n")
    for k in ["date", "nproc", "memory", "cpu", "kernel", "nft", "iptables", "ufw",
              "nginx", "wrk", "hyperfine", "rampart"]:
        if k in env:
            w(f"- {k}: {env[k]}")
    w("")

    w("### 1. Apply time (whole policy, median wall time)\n")
    w("| rules | `rampart reload` | `ufw reload` | `nft -f` hand-written sets | rampart / nft | rampart / ufw |")
    w("|---|---|---|---|---|---|")
    for lv in (100, 1000, 10000):
        a, u, n = (r.med(f"apply-{t}-{lv}") for t in ("rampart", "ufw", "nft"))
        w(f"| {level_name(lv)} | {fmt_s(a)} | {fmt_s(u)} | {fmt_s(n)} | "
          f"{fmt_r(ratio(a, n), 1)}× | {fmt_r(ratio(a, u), 2)}× |")
    s = r.med("apply-rampart-10000s")
    if s is not None:
        w(f"| 10k, shuffled order | {fmt_s(s)} | | | | |")
    w("")
    w("Runs and spread (min–max): " + "; ".join(
        f"{t} {level_name(lv)}: {len(r.hf(f'apply-{t}-{lv}') or [])} runs, {r.spread(f'apply-{t}-{lv}')}"
        for lv in (100, 1000, 10000) for t in ("rampart", "ufw", "nft") if r.hf(f"apply-{t}-{lv}")))
    w("")

    w("### 2. Add one rule to a loaded policy (median of 5 distinct rules)\n")
    w("The element change goes over nfnetlink; `RAMPART_NFT_ELEMENTS=1` sends it (and the "
      "stamp's reading) through `nft -j -f -` instead, as before.\n")
    w("| rules | `rampart allow from 198.19.250.N to any port 7 proto tcp` | same through nft "
      "(`RAMPART_NFT_ELEMENTS=1`) | same with `ufw` | rampart / ufw |")
    w("|---|---|---|---|---|")
    for lv in (1000, 10000):
        a, u = r.med(f"add-rampart-{lv}"), r.med(f"add-ufw-{lv}")
        n = r.med(f"add-rampart-nft-{lv}")
        through_nft = f"{fmt_s(n)} ({r.spread(f'add-rampart-nft-{lv}')})" if n else ""
        w(f"| {level_name(lv)} | {fmt_s(a)} ({r.spread(f'add-rampart-{lv}')}) | {through_nft} | "
          f"{fmt_s(u)} ({r.spread(f'add-ufw-{lv}')}) | {fmt_r(ratio(a, u))}× |")
    w("")

    w("### 3. New TCP connections per second (wrk `Connection: close`, median of rounds)\n")
    rounds = env.get("wrk_rounds", "?")
    secs = env.get("wrk_seconds", "?")
    w(f"`wrk -t1 -c8 -d{secs}s -H 'Connection: close'` from a client namespace to nginx "
      f"(1 worker, a 3-byte file) in the server namespace, {rounds} rounds per "
      "configuration, configurations taken in turns. The client namespace uses every port "
      "(1024-65535) and reuses TIME_WAIT ports (`tcp_tw_reuse=1`): without that, its ports run "
      "out after a minute of runs and the rate collapses to ~500/s with or without a firewall.\n")
    w("Rates are medians of the rounds (requests/s = new connections/s); the ratios are the "
      "median of per-round ratios to the no-firewall run of the same round.\n")
    w("\"conntrack alone\" is connection tracking and one accept rule, nothing else "
      "(bench/conntrack-floor.nft): the floor of any stateful firewall.\n")
    w("| rules | no firewall | rampart | ufw | nft hand-written | conntrack alone | rampart / none | ufw / none | nft / none | conntrack alone / none |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for lv in (0, 1000, 10000):
        c = {cfg: r.conn(cfg, lv) for cfg in CONN_CONFIGS}
        w(f"| {level_name(lv)} | " + " | ".join(
            "n/a" if c[k] is None else f"{c[k]:,.0f}" for k in CONN_CONFIGS)
          + " | " + " | ".join(fmt_r(r.paired(k, lv)) for k in CONN_CONFIGS[1:]) + " |")
    if r.conn("rampart", "10000s") is not None:
        c = {cfg: r.conn(cfg, "10000s") for cfg in CONN_CONFIGS}
        w("| 10k, shuffled order | " + " | ".join(
            "" if c[k] is None else f"{c[k]:,.0f}" for k in CONN_CONFIGS)
          + " | " + " | ".join("" if c[k] is None else fmt_r(r.paired(k, "10000s"))
                               for k in CONN_CONFIGS[1:]) + " |")
    w("")
    errs = []
    for p in sorted(glob.glob(os.path.join(out, "wrk-*.txt"))):
        for line in open(p):
            if "Socket errors" in line or "Non-2xx" in line:
                errs.append(f"{os.path.basename(p)}: {line.strip()}")
    w("Every round (requests/s):\n")
    w("| rules | round | no firewall | rampart | ufw | nft hand-written | conntrack alone |")
    w("|---|---|---|---|---|---|---|")
    for lv in (0, 1000, 10000, "10000s"):
        for rnd in range(1, 100):
            rates = [r.round_rate(cfg, lv, rnd) for cfg in CONN_CONFIGS]
            if all(x is None for x in rates):
                break
            name = "10k, shuffled" if lv == "10000s" else level_name(lv)
            w(f"| {name} | {rnd} | " + " | ".join("" if x is None else f"{x:,.0f}" for x in rates) + " |")
    w("")
    w("wrk errors: " + ("; ".join(errs) if errs else "none (every request answered 200)."))
    w("")

    w("### 4. `status` at 10k rules\n")
    w("| | median time | peak RSS |")
    w("|---|---|---|")
    for t in ("rampart", "ufw"):
        kb = r.rss_kb(f"status-{t}-10000")
        w(f"| `{t} status` | {fmt_s(r.med(f'status-{t}-10000'))} ({r.spread(f'status-{t}-10000')}) | "
          f"{'n/a' if kb is None else f'{kb / 1024:.0f} MiB'} |")
    w("")
    w("Peak RSS of a full apply at 10k rules: " + ", ".join(
        f"{name} {kb / 1024:.0f} MiB" for name, kb in (
            ("`rampart reload`", r.rss_kb("apply-rampart-10000")),
            ("`ufw reload`", r.rss_kb("apply-ufw-10000")),
            ("`nft -f`", r.rss_kb("apply-nft-10000"))) if kb is not None) + ".")
    w("")

    w("### Where rampart's time goes at 10k rules\n")
    w("One `rampart reload` and one `rampart status` with every `nft` call timed "
      "(bench/nft-shim.sh); what is left is rampart's own work (reading the policy, "
      "compiling, JSON in and out).\n")
    for cmd in ("reload", "status"):
        p = os.path.join(out, f"phases-{cmd}-10000.tsv")
        if not os.path.exists(p):
            continue
        rows = [line.rstrip("\n").split("\t", 1) for line in open(p) if line.strip()]
        total = next((float(t) for t, what in rows if what == "total"), None)
        calls = [(float(t), what) for t, what in rows if what != "total"]
        w(f"| `rampart {cmd}` step | seconds |")
        w("|---|---|")
        for t, what in calls:
            w(f"| `{what}` | {t:.2f} |")
        if total is not None:
            w(f"| rampart itself (total − nft calls) | {total - sum(t for t, _ in calls):.2f} |")
            w(f"| **total** | **{total:.2f}** |")
        w("")
    laps = [(cmd, os.path.join(out, f"laps-{name}-10000.txt")) for cmd, name in (
        ("reload", "reload"), ("status verbose", "status-verbose"),
        ("allow from 198.19.250.99 to any port 7 proto tcp", "add"))]
    laps = [(cmd, p) for cmd, p in laps if os.path.exists(p)]
    if laps:
        w("Three commands' own phases (`RAMPART_TIMING=1`): each line is the time from the "
          "start of the step that prints it, so within a step the times grow.\n")
        for cmd, p in laps:
            phases = [x.strip()[len("timing: "):] for x in open(p) if x.startswith("timing: ")]
            w(f"`rampart {cmd}`:\n")
            w("```")
            w("\n".join(phases))
            w("```\n")
    objs = []
    for tool, lv, name in (("rampart", "10000", "rampart"), ("rampart", "10000s", "rampart, shuffled order"),
                           ("nft", "10000", "hand-written")):
        p = os.path.join(out, f"objects-{tool}-{lv}.txt")
        if os.path.exists(p):
            objs.append(f"{name}: {open(p).read().strip()}")
    if objs:
        w("Tables in the kernel at 10k rules — " + "; ".join(objs) + ".")
        w("")

    diag = [(k, name) for k, name in (
        ("src", "4,000 `allow from 198.19.X.Y to any port P proto tcp` only"),
        ("port", "3,000 `allow P/tcp` only"),
        ("deny", "2,800 `deny from 198.19.X.Y/29` only"),
        ("limit", "200 `limit P/tcp` only")) if r.round_rate("rampart", f"10000{k}", 1)]
    if diag:
        w("### Diagnosis: each kind of rule of the 10k mix alone (rampart)\n")
        w("| rules loaded (plus the final allow 80/tcp) | rampart's table | `rampart reload` | conn/s no firewall | conn/s rampart | rampart / none |")
        w("|---|---|---|---|---|---|")
        for k, name in diag:
            lv = f"10000{k}"
            p = os.path.join(out, f"objects-rampart-{lv}.txt")
            objs = open(p).read().strip() if os.path.exists(p) else ""
            cn, cr = r.conn("none", lv), r.conn("rampart", lv)
            w(f"| {name} | {objs} | {fmt_s(r.med(f'apply-rampart-{lv}'))} | {cn:,.0f} | {cr:,.0f} | "
              f"{fmt_r(r.paired('rampart', lv))} |")
        w("")

    w("### Targets at 10k rules\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    v = r.paired("rampart", 10000)
    w(f"| rampart conn rate ≥ 0.90 × no firewall | {fmt_r(v)} | {verdict_min(v, 0.90)} |")
    v = r.paired("ufw", 10000)
    w(f"| (UFW conn rate vs no firewall, for reference) | {fmt_r(v)} | |")
    v = r.paired("ct", 10000)
    if v is not None:
        w(f"| (conntrack alone vs no firewall: the floor of a stateful firewall) | {fmt_r(v)} | |")
    a, n, u = r.med("apply-rampart-10000"), r.med("apply-nft-10000"), r.med("apply-ufw-10000")
    v = ratio(a, n)
    w(f"| rampart full apply ≤ 1.5 × raw `nft -f` | {fmt_r(v, 1)}× | {verdict_max(v, 1.5)} |")
    v = ratio(a, u)
    w(f"| rampart full apply ≤ 1/20 of `ufw reload` | {fmt_r(v, 2)}× | {verdict_max(v, 0.05)} |")
    v = ratio(r.med("add-rampart-10000"), r.med("add-ufw-10000"))
    w(f"| add one rule ≤ 1/20 of UFW | {fmt_r(v, 2)}× | {verdict_max(v, 0.05)} |")
    v = ratio(r.med("status-rampart-10000"), r.med("status-ufw-10000"))
    w(f"| `status` ≤ 1/10 of UFW | {fmt_r(v, 2)}× | {verdict_max(v, 0.10)} |")
    v = ratio(r.med("status-verbose-rampart-10000"), r.med("status-verbose-ufw-10000"))
    if v is not None:
        w(f"| `status verbose` (with every rule's counters) ≤ 1/10 of UFW's | {fmt_r(v, 2)}× | {verdict_max(v, 0.10)} |")
    v = ratio(r.med("status-verbose-first-rampart-10000"), r.med("status-verbose-ufw-10000"))
    if v is not None:
        w(f"| `status verbose`, the first after a change (compiles the plan) ≤ 1/10 of UFW's | {fmt_r(v, 2)}× | {verdict_max(v, 0.10)} |")
    w("")

    w("### Targets of \"ahead of UFW in every row\"\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    v = r.paired("rampart", "10000s")
    u = r.paired("ufw", "10000s")
    w(f"| shuffled 10k: conn rate ≥ 0.6 × no firewall | {fmt_r(v)} (UFW {fmt_r(u)}) | {verdict_min(v, 0.6)} |")
    v = ratio(v, u)
    w(f"| shuffled 10k: over 2 × UFW's conn rate | {fmt_r(v, 1)}× | "
      f"{'not measured' if v is None else 'met' if v > 2.0 else '**missed**'} |")
    v = ratio(r.med("apply-rampart-10000s"), r.med("apply-rampart-10000"))
    w(f"| shuffled 10k: apply ≤ 2 × the grouped apply | {fmt_r(v, 1)}× | {verdict_max(v, 2.0)} |")
    v = r.paired("rampart", 10000, base="ct")
    w(f"| grouped 10k: conn rate ≥ 0.97 × conntrack alone | {fmt_r(v)} | {verdict_min(v, 0.97)} |")
    v = r.paired("rampart", "10000s", base="ct")
    if v is not None:
        w(f"| (shuffled 10k: conn rate vs conntrack alone) | {fmt_r(v)} | |")
    v = ratio(r.med("apply-rampart-10000"), r.med("apply-nft-10000"))
    w(f"| full apply at 10k ≤ 1.0 × `nft -f` of the hand-written sets | {fmt_r(v, 2)}× | {verdict_max(v, 1.0)} |")
    v = ratio(r.med("add-rampart-1000"), r.med("add-ufw-1000"))
    w(f"| add one rule at 1k ≤ 1/20 of UFW | {fmt_r(v, 3)}× | {verdict_max(v, 0.05)} |")
    v = ratio(r.med("add-rampart-10000"), r.med("add-ufw-10000"))
    w(f"| add one rule at 10k ≤ 1/40 of UFW | {fmt_r(v, 3)}× | {verdict_max(v, 0.025)} |")
    w("")
    return "\n".join(lines)


# Series of the chart: configuration, label, colour.
CHART_SERIES = (
    ("none", "no firewall", "#444444"),
    ("ct", "conntrack alone", "#7f7f7f"),
    ("nft", "hand-written nft sets", "#2ca02c"),
    ("ufw", "UFW", "#d62728"),
    ("rampart", "rampart", "#1f77b4"),
)


def chart(out):
    """An SVG of new connections/s against rule count: a line per configuration for the
    grouped rule sets (0, 1k, 10k rules), and hollow markers for the shuffled 10k."""
    r = Results(out)
    levels = (0, 1000, 10000)
    width, height = 720, 420
    left, right, top, bottom = 70, 200, 40, 60
    pw, ph = width - left - right, height - top - bottom
    values = [r.conn(c, lv) for c, _, _ in CHART_SERIES for lv in levels + ("10000s",)]
    ymax = max([v for v in values if v] or [1]) * 1.1
    step = 10 ** (len(str(int(ymax))) - 1)
    ymax = (int(ymax / step) + 1) * step
    xs = {0: left + pw * 0.05, 1000: left + pw * 0.45, 10000: left + pw * 0.85}
    y = lambda v: top + ph * (1 - v / ymax)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="22" font-size="14">New TCP connections per second against the '
         f'number of rules (median of rounds)</text>']
    for i in range(0, 6):
        v = ymax * i / 5
        s.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    for lv, x in xs.items():
        s.append(f'<text x="{x:.1f}" y="{top + ph + 20}" text-anchor="middle">{level_name(lv)}</text>')
    s.append(f'<text x="{left + pw / 2}" y="{height - 15}" text-anchor="middle">rules (0, 1k, 10k: not to scale)</text>')
    s.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#000"/>')
    s.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#000"/>')
    legend_y = top + 10
    for cfg, label, colour in CHART_SERIES:
        pts = [(xs[lv], y(v)) for lv in levels if (v := r.conn(cfg, lv))]
        if len(pts) > 1:
            s.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            s.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{colour}"/>')
        v = r.conn(cfg, "10000s")
        if v:
            s.append(f'<circle cx="{xs[10000] + 14:.1f}" cy="{y(v):.1f}" r="5" fill="white" '
                     f'stroke="{colour}" stroke-width="2"/>')
        if pts or v:
            s.append(f'<line x1="{left + pw + 15}" x2="{left + pw + 35}" y1="{legend_y}" '
                     f'y2="{legend_y}" stroke="{colour}" stroke-width="2"/>')
            s.append(f'<text x="{left + pw + 40}" y="{legend_y + 4}">{label}</text>')
            legend_y += 20
    legend_y += 10
    s.append(f'<circle cx="{left + pw + 25}" cy="{legend_y}" r="4" fill="#444"/>')
    s.append(f'<text x="{left + pw + 40}" y="{legend_y + 4}">grouped order</text>')
    legend_y += 20
    s.append(f'<circle cx="{left + pw + 25}" cy="{legend_y}" r="5" fill="white" stroke="#444" stroke-width="2"/>')
    s.append(f'<text x="{left + pw + 40}" y="{legend_y + 4}">shuffled order (10k)</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"


def count_objects(text):
    """Chains, sets, rules and user_input rules of an `nft -j list table` dump."""
    objs = json.loads(text)["nftables"]
    count = lambda k: sum(1 for o in objs if k in o)
    user = sum(1 for o in objs if "rule" in o and o["rule"].get("chain") == "user_input")
    text = f"{count('chain')} chains, {count('set') + count('map')} named sets, {count('rule')} rules"
    return text + (f" ({user} in user_input)" if user else "")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--count-objects":
        print(count_objects(sys.stdin.read()))
    elif len(sys.argv) == 3 and sys.argv[1] == "--median":
        print(summary(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--chart":
        sys.stdout.write(chart(sys.argv[2]))
    elif len(sys.argv) == 2:
        print(report(sys.argv[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
