//! The help text of each command: its grammar and examples (also the man page's
//! EXAMPLES section, which is built from the `Examples:` part of each).

/// The words of a rule, for `allow`, `deny`, `reject`, `limit`, `insert`, `prepend`,
/// `delete` and `route`.
macro_rules! rule_grammar {
    () => {
        "Rule words (UFW's syntax):
  [in|out [on IFACE]] [log|log-all] (SIMPLE | FULL) [except PORTS] [comment TEXT]
  SIMPLE  PORTS[/tcp|/udp] | SERVICE[/tcp|/udp] | APP       22/tcp, ssh, OpenSSH
  FULL    [proto PROTO] [from ADDR [port PORTS | app APP]] [to ADDR [port PORTS | app APP]]
  PORTS   PORT | PORT:PORT | a comma list of those (lists and ranges need tcp or udp)
  ADDR    any | IPv4[/LEN] | IPv6[/LEN]
  PROTO   any | tcp | udp | ah | esp | gre | vrrp | ipv6 | igmp
  except PORTS  leaves those ports out of the rule's ports
No address: the rule is for IPv4 and IPv6. No protocol: TCP and UDP."
    };
}

/// rampart's own words for a limit rule.
macro_rules! limit_grammar {
    () => {
        "Limit options (limit rules only; with none, UFW's limit: per source, a 6th new
connection within 30 s is refused, the rest accepted):
  rate N/T            at most N new connections per T (Ns, Nm or Nh)
  conn N              at most N connections open at once
  per KEY             counted per source (the default), per any (one count for every
                      client, IPv4 and IPv6 together), per /M or /M,/N (IPv4 /M and
                      IPv6 /N subnets)
  over reject|drop    what is over the limit: reject (the default: a TCP reset, else
                      ICMP port-unreachable) or drop
  then accept|continue  what is under it: accept (UFW's meaning, the default) or
                      continue to the rules after
  capacity N          keys tracked per family (1 to 1048576, default 16384)"
    };
}

pub(super) const ALLOW: &str = concat!(
    rule_grammar!(),
    "\n\nExamples:\n  rampart allow 22/tcp\n  rampart allow from 198.18.0.0/24 to any port 5432 proto tcp comment 'db clients'\n  rampart allow OpenSSH"
);

pub(super) const DENY: &str = concat!(
    rule_grammar!(),
    "\n\nExamples:\n  rampart deny from 198.18.0.9\n  rampart deny out on eth0 to any port 25 proto tcp"
);

pub(super) const REJECT: &str = concat!(
    rule_grammar!(),
    "\n\nExamples:\n  rampart reject 23\n  rampart reject in on eth1 proto udp to any port 53"
);

pub(super) const LIMIT: &str = concat!(
    rule_grammar!(),
    "\n\n",
    limit_grammar!(),
    "\n\nExamples:\n  rampart limit ssh\n  rampart limit 80/tcp rate 20/30s except 30000:30005\n  rampart limit 3128/tcp conn 1 per any\n  rampart limit 443/tcp rate 100/1m per /24,/64 over drop then continue"
);

pub(super) const INSERT: &str = concat!(
    "insert N ACTION RULE: the rule becomes rule N (ACTION: allow, deny, reject or limit).\n\n",
    rule_grammar!(),
    "\n\nExamples:\n  rampart insert 1 deny from 198.18.0.9\n  rampart insert 3 limit 2222/tcp rate 5/1m"
);

pub(super) const PREPEND: &str = concat!(
    "prepend ACTION RULE: the rule goes first among the rules of its IP family.\n\n",
    rule_grammar!(),
    "\n\nExamples:\n  rampart prepend deny from 198.18.0.0/24\n  rampart prepend reject from 2001:db8::/32 to any port 22 proto tcp"
);

pub(super) const DELETE: &str = concat!(
    "delete N: rule N (of 'status numbered'); delete ACTION RULE: the rule so written\n(both IP families' copies; with a comment, only the rule with that comment).\n\n",
    rule_grammar!(),
    "\n\nExamples:\n  rampart delete 3\n  rampart delete allow 22/tcp\n  rampart delete limit 80/tcp rate 20/30s"
);

pub(super) const ROUTE: &str = concat!(
    "route ACTION [in on IFACE] [out on IFACE] RULE: a rule for traffic this host forwards\n(matched by the destination the connection was opened to, before any NAT: a port\nDocker publishes is filtered by its published number). Also: route insert N ...,\nroute prepend ..., route delete ACTION RULE (by number: delete N).\n\n",
    rule_grammar!(),
    "\n\nExamples:\n  rampart route allow in on eth0 out on eth1 to 198.18.2.0/24 port 80 proto tcp\n  rampart route deny 8080/tcp\n  rampart route insert 1 allow from 198.18.0.0/24 to any port 8080 proto tcp"
);

pub(super) const DEFAULT: &str = "Examples:\n  rampart default deny incoming\n  rampart default allow outgoing\n  rampart default deny routed";

pub(super) const ENABLE: &str = "Examples:\n  rampart enable\n  rampart --confirm 60 enable";

pub(super) const DISABLE: &str = "Examples:\n  rampart disable\n  rampart --dry-run disable";

pub(super) const RELOAD: &str = "Examples:\n  rampart reload\n  rampart --dry-run reload";

pub(super) const RESET: &str = "Examples:\n  rampart reset\n  rampart --force reset";

pub(super) const STATUS: &str =
    "Examples:\n  rampart status\n  rampart status numbered\n  rampart status verbose --json";

pub(super) const SHOW: &str =
    "Examples:\n  rampart show added\n  rampart show listening\n  rampart show raw";

pub(super) const APP: &str = "app list | app info NAME|all | app update [--add-new] NAME|all | app default allow|deny|reject|skip\n\nExamples:\n  rampart app list\n  rampart app info OpenSSH\n  rampart app update --add-new OpenSSH";

pub(super) const CONFIRM: &str =
    "Examples:\n  rampart --confirm 60 allow 2222/tcp\n  rampart confirm";

pub(super) const ROLLBACK: &str =
    "Examples:\n  rampart --confirm 120 default deny outgoing\n  rampart rollback";

pub(super) const VERSION: &str = "Examples:\n  rampart version\n  rampart --version";

pub(super) const BOOT: &str = "Run by the boot unit (rampart.service) at start and reload.\n\nExamples:\n  rampart boot\n  systemctl reload rampart";

pub(super) const UNLOAD: &str = "Run by the boot unit (rampart.service) at stop.\n\nExamples:\n  rampart unload\n  systemctl stop rampart";

pub(super) const CHECK: &str = "Examples:\n  rampart check\n  rampart check --json";

pub(super) const LIMITS: &str =
    "Examples:\n  rampart limits\n  rampart limits --json\n  rampart limits --reset 198.18.0.11";

pub(super) const TOP: &str = "Examples:\n  rampart top\n  rampart top --once";
