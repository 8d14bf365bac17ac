#!/usr/bin/env python3
"""Generate one benchmark rule set in the three forms the suite compares.

The same logical rules are written as
  * policy.toml            rampart's policy file (what `rampart allow ...` would store),
  * user.rules/user6.rules UFW's own storage (tuple comments + iptables-restore lines),
                           spliced into a real file that ufw wrote itself (the template),
  * ruleset.nft            a hand-written nftables ruleset using sets (`nft -f`),
  * commands.txt           the rules as UFW/rampart commands, for reference.

Rule mix for N rules (plus one final `allow 80/tcp`, which admits the benchmark traffic
only after every other rule has been walked):
  40%  allow from 198.19.X.Y to any port P proto tcp   unique /32 sources in 198.19.0.0/17,
                                                       P a service port below 10000
  30%  allow P/tcp                                     unique ports in 10000..57999
  28%  deny from 198.19.X.Y/29                         unique /29s in 198.19.128.0/17
   2%  limit P/tcp (at least one)                      unique ports from 61000
None of them matches the benchmark client (198.18.0.2 -> 198.18.0.1:80). 198.19.240.0/20
is left free for the add-one-rule test. The per-source allows overlap neither the deny
blocks nor the per-port allows; the denies do overlap the per-port allows and the limits
(a denied network's packet to such a port), so there the order decides, as in UFW. The
grouped order (default) is the order above; --order shuffled takes the same rules in a
fixed pseudo-random order.

Usage:
  gen.py sample-commands                  the few rules used to check the file formats
  gen.py build --n N --out DIR [--order grouped|shuffled]
                [--ufw-template DIR]      (DIR holds user.rules and user6.rules written by ufw)
  gen.py build --sample --out DIR ...     the same files for the sample rules
  gen.py build --n N --only KIND ...      one kind of rule only (diagnosis runs)
"""

import argparse
import ipaddress
import os
import random
import re
import sys

SERVICE_PORTS = [22, 443, 3306, 5432, 6379, 8080, 8443, 9000, 9090, 9200]
FINAL = ("port", 80)

# Checked against what `ufw` and `rampart` themselves write for these commands.
SAMPLE = [
    ("src", "198.19.1.2", 5432),
    ("port", 12345),
    ("deny", "198.19.128.8/29"),
    ("limit", 61000),
    FINAL,
]


def command(rule):
    kind = rule[0]
    if kind == "src":
        return f"allow from {rule[1]} to any port {rule[2]} proto tcp"
    if kind == "port":
        return f"allow {rule[1]}/tcp"
    if kind == "deny":
        return f"deny from {rule[1]}"
    if kind == "limit":
        return f"limit {rule[1]}/tcp"
    raise ValueError(kind)


def mix(n, order):
    """The N generated rules, then the final allow 80/tcp."""
    if n == 0:
        return [FINAL]
    n_lim = max(1, round(n * 0.02))
    n_src = round(n * 0.40)
    n_port = round(n * 0.30)
    n_deny = n - n_lim - n_src - n_port
    base_src = int(ipaddress.IPv4Address("198.19.0.0"))
    base_deny = int(ipaddress.IPv4Address("198.19.128.0"))
    assert n_src <= 127 * 254 and n_deny <= 112 * 32 and n_port <= 3000, "N too large"
    rules = []
    for i in range(n_src):
        ip = ipaddress.IPv4Address(base_src + (i // 254) * 256 + i % 254 + 1)
        rules.append(("src", str(ip), SERVICE_PORTS[i % len(SERVICE_PORTS)]))
    for i in range(n_port):
        rules.append(("port", 10000 + i * 16))
    for i in range(n_deny):
        net = ipaddress.IPv4Address(base_deny + i * 8)
        rules.append(("deny", f"{net}/29"))
    for i in range(n_lim):
        rules.append(("limit", 61000 + i))
    if order == "shuffled":
        random.Random(42).shuffle(rules)
    return rules + [FINAL]


# ---------------------------------------------------------------- rampart (TOML)

RAMPART_HEADER = """# rampart policy. Edit with the rampart command; hand edits are read on the next command.
enabled = {enabled}
logging = "low"

[defaults]
incoming = "deny"
outgoing = "allow"
routed = "disabled"
"""


def rampart_rule(rule, family):
    kind = rule[0]
    action = {"src": "allow", "port": "allow", "deny": "deny", "limit": "limit"}[kind]
    out = ["", "[[rule]]", f'action = "{action}"', 'direction = "in"', f'family = "{family}"']
    if kind != "deny":
        out.append('proto = "tcp"')
    if kind == "src":
        out += ["", "[rule.from]", f'addr = "{rule[1]}/32"']
    if kind == "deny":
        out += ["", "[rule.from]", f'addr = "{rule[1]}"']
    port = {"src": lambda r: r[2], "port": lambda r: r[1], "limit": lambda r: r[1]}.get(kind)
    if port:
        out += ["", "[rule.to]", f'ports = "{port(rule)}"']
    return "\n".join(out) + "\n"


def both_families(rule):
    """Rules without a source address exist for IPv4 and IPv6, as in UFW."""
    return rule[0] in ("port", "limit")


def rampart_policy(rules, enabled=True):
    text = RAMPART_HEADER.format(enabled="true" if enabled else "false")
    # IPv4 rules first, then IPv6 ones: the order rampart itself keeps.
    text += "".join(rampart_rule(r, "v4") for r in rules)
    text += "".join(rampart_rule(r, "v6") for r in rules if both_families(r))
    return text


# ---------------------------------------------------------------- UFW (user.rules)


def ufw_block(rule, v6):
    chain = "ufw6-user-input" if v6 else "ufw-user-input"
    limit = "ufw6-user-limit" if v6 else "ufw-user-limit"
    anyaddr = "::/0" if v6 else "0.0.0.0/0"
    kind = rule[0]
    if kind == "src":
        tup = f"allow tcp {rule[2]} {anyaddr} any {rule[1]} in"
        lines = [f"-A {chain} -p tcp --dport {rule[2]} -s {rule[1]} -j ACCEPT"]
    elif kind == "port":
        tup = f"allow tcp {rule[1]} {anyaddr} any {anyaddr} in"
        lines = [f"-A {chain} -p tcp --dport {rule[1]} -j ACCEPT"]
    elif kind == "deny":
        tup = f"deny any any {anyaddr} any {rule[1]} in"
        lines = [f"-A {chain} -s {rule[1]} -j DROP"]
    elif kind == "limit":
        p = rule[1]
        tup = f"limit tcp {p} {anyaddr} any {anyaddr} in"
        lines = [
            f"-A {chain} -p tcp --dport {p} -m conntrack --ctstate NEW -m recent --set",
            f"-A {chain} -p tcp --dport {p} -m conntrack --ctstate NEW -m recent --update"
            f" --seconds 30 --hitcount 6 -j {limit}",
            f"-A {chain} -p tcp --dport {p} -j {limit}-accept",
        ]
    else:
        raise ValueError(kind)
    return f"\n### tuple ### {tup}\n" + "\n".join(lines) + "\n"


def ufw_file(template, rules, v6):
    """Replace the RULES section of a user.rules written by ufw with our rules."""
    m = re.match(r"(?s)(.*?### RULES ###\n)(.*?)(\n### END RULES ###.*)", template)
    if not m:
        sys.exit("gen.py: template has no ### RULES ### section")
    chosen = [r for r in rules if both_families(r)] if v6 else rules
    return m.group(1) + "".join(ufw_block(r, v6) for r in chosen) + m.group(3)


# ---------------------------------------------------------------- hand-written nft


def elements(items, per_line=8):
    if not items:
        return ""
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "\t\telements = {\n\t\t\t" + ",\n\t\t\t".join(lines) + "\n\t\t}\n"


def nft_ruleset(rules):
    """The same policy written by hand with one set per rule shape.

    The checks come in the grouped mix's order (per-source allows, per-port allows,
    denies, limits, allow 80), so the first match decides as it does in the rule list.
    The limits use one meter instead of UFW's recent-module counting, an approximation.
    """
    src = [f"{r[1]} . {r[2]}" for r in rules if r[0] == "src"]
    ports = [str(r[1]) for r in rules if r[0] == "port" and r != FINAL]
    deny = [r[1] for r in rules if r[0] == "deny"]
    lim = [str(r[1]) for r in rules if r[0] == "limit"]
    out = [
        "# Hand-written set version of the benchmark policy (atomic replace).",
        "add table inet bench",
        "delete table inet bench",
        "table inet bench {",
        "\tset allow_src {\n\t\ttype ipv4_addr . inet_service\n" + elements(src) + "\t}",
        "\tset allow_ports {\n\t\ttype inet_service\n" + elements(ports) + "\t}",
        "\tset deny_src {\n\t\ttype ipv4_addr\n\t\tflags interval\n" + elements(deny) + "\t}",
        "\tset limit_ports {\n\t\ttype inet_service\n" + elements(lim) + "\t}",
        # UFW's limit: 6 new connections per source in 30 s are refused (a meter here).
        "\tset limit4 {\n\t\ttype ipv4_addr . inet_service\n\t\tsize 65535\n"
        "\t\tflags dynamic,timeout\n\t\ttimeout 30s\n\t}",
        "\tset limit6 {\n\t\ttype ipv6_addr . inet_service\n\t\tsize 65535\n"
        "\t\tflags dynamic,timeout\n\t\ttimeout 30s\n\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority 0; policy drop;",
        '\t\tiif "lo" accept',
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",
        "\t\tip saddr . tcp dport @allow_src accept",
        "\t\ttcp dport @allow_ports accept",
        "\t\tip saddr @deny_src drop",
        "\t\ttcp dport @limit_ports ct state new update @limit4 "
        "{ ip saddr . tcp dport limit rate over 10/minute burst 5 packets } "
        "reject with tcp reset",
        "\t\ttcp dport @limit_ports ct state new update @limit6 "
        "{ ip6 saddr . tcp dport limit rate over 10/minute burst 5 packets } "
        "reject with tcp reset",
        "\t\ttcp dport @limit_ports accept",
        "\t\ttcp dport 80 accept",
        "\t}",
        "\tchain output {",
        "\t\ttype filter hook output priority 0; policy accept;",
        "\t}",
        "}",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sample-commands")
    b = sub.add_parser("build")
    b.add_argument("--n", type=int, default=0)
    b.add_argument("--sample", action="store_true")
    b.add_argument("--order", choices=["grouped", "shuffled"], default="grouped")
    b.add_argument("--out", required=True)
    b.add_argument("--ufw-template")
    b.add_argument("--disabled", action="store_true", help="write enabled = false")
    b.add_argument("--only", choices=["src", "port", "deny", "limit"],
                   help="keep only the rules of one kind (and the final allow 80)")
    a = ap.parse_args()

    if a.cmd == "sample-commands":
        print("\n".join(command(r) for r in SAMPLE))
        return

    rules = SAMPLE if a.sample else mix(a.n, a.order)
    if a.only:
        rules = [r for r in rules if r[0] == a.only and r != FINAL] + [FINAL]
    os.makedirs(a.out, exist_ok=True)

    def write(name, text):
        with open(os.path.join(a.out, name), "w") as f:
            f.write(text)

    write("policy.toml", rampart_policy(rules, enabled=not a.disabled))
    write("ruleset.nft", nft_ruleset(rules))
    write("commands.txt", "".join(command(r) + "\n" for r in rules))
    if a.ufw_template:
        for name, v6 in (("user.rules", False), ("user6.rules", True)):
            with open(os.path.join(a.ufw_template, name)) as f:
                write(name, ufw_file(f.read(), rules, v6))


if __name__ == "__main__":
    main()
