//! `rampart import ufw` against the real UFW (the Debian package): UFW, on private
//! copies of its files (bench/ufw-env.sh) in the server's namespace, is given 30-odd
//! varied rules and enabled; two clients probe TCP and UDP ports over IPv4 and IPv6;
//! then UFW is disabled, rampart imports UFW's files, and the same probes must end the
//! same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rampart_sandbox::{Conn, Sandbox, Udp};

const A: usize = 0;
const B: usize = 1;
const PROBE: Duration = Duration::from_millis(300);

const TCP_PORTS: [u16; 19] = [
    22, 80, 443, 2222, 2223, 2224, 3000, 3001, 3002, 5432, 7000, 7001, 7002, 7003, 7004, 7005,
    8080, 9000, 9001,
];
const UDP_PORTS: [u16; 2] = [1194, 5000];

/// UFW's private copies of its files, removed when dropped.
struct UfwState(PathBuf);

impl Drop for UfwState {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl UfwState {
    fn new(tag: &str) -> UfwState {
        let dir = std::env::temp_dir().join(format!("rampart-import-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        sh(&format!(
            "cp -a /etc/ufw {d}/etc-ufw && cp -a \"$(readlink -f /lib/ufw)\" {d}/lib-ufw && cp -a /etc/default/ufw {d}/default-ufw"
        ));
        UfwState(dir)
    }

    /// Run `ufw ARGS` on the private copies, in the server's namespace.
    fn ufw(&self, sb: &Sandbox, args: &[&str]) -> String {
        let env = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/ufw-env.sh");
        let out = Command::new("ip")
            .args(["netns", "exec", &sb.srv.ns, "bash"])
            .arg(&env)
            .arg(&self.0)
            .arg("ufw")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ufw {}: {text}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}

fn ufw_installed() -> bool {
    Command::new("sh")
        .args(["-c", "command -v ufw"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every probe's outcome: (client, family, proto/port) -> how it ended.
fn probe(sb: &Sandbox) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for c in [A, B] {
        for v6 in [false, true] {
            let dst = sb.srv.addr(v6);
            for port in TCP_PORTS {
                let how = match sb.tcp_to(c, SocketAddr::new(dst, port), PROBE) {
                    Conn::Open(_) => "accepted",
                    other => other.word(),
                };
                out.push((format!("client {c} v6={v6} tcp/{port}"), how));
            }
            for port in UDP_PORTS {
                let how = match sb.udp_timeout(c, v6, port, 40_000 + port, PROBE) {
                    Udp::Reply => "answered",
                    _ => "no answer",
                };
                out.push((format!("client {c} v6={v6} udp/{port}"), how));
            }
        }
    }
    out
}

#[test]
fn an_imported_ufw_setup_decides_as_ufw_did() {
    let Some(mut sb) = rampart_sandbox::for_test(2, Path::new(env!("CARGO_BIN_EXE_rampart")))
    else {
        return;
    };
    if !ufw_installed() {
        assert!(
            std::env::var("RAMPART_KERNEL_TESTS").as_deref() != Ok("required"),
            "ufw is not installed (apt-get install ufw)"
        );
        eprintln!("skipped: ufw is not installed");
        return;
    }
    for port in TCP_PORTS {
        sb.serve_tcp(port).unwrap();
    }
    for port in UDP_PORTS {
        sb.serve_udp(port).unwrap();
    }
    let (a4, b4) = (sb.clients[A].v4.to_string(), sb.clients[B].v4.to_string());
    let (a6, b6) = (sb.clients[A].v6.to_string(), sb.clients[B].v6.to_string());
    let state = UfwState::new(&sb.srv.ns);
    state.ufw(&sb, &["--force", "reset"]);
    let rules: Vec<Vec<&str>> = vec![
        vec!["allow", "22/tcp"],
        vec!["allow", "80,443/tcp"],
        vec![
            "deny", "from", &a4, "to", "any", "port", "443", "proto", "tcp",
        ],
        vec![
            "insert", "1", "deny", "from", &b4, "to", "any", "port", "22", "proto", "tcp",
        ],
        vec![
            "allow",
            "from",
            &a4,
            "to",
            "any",
            "port",
            "5432",
            "proto",
            "tcp",
            "comment",
            "db clients",
        ],
        vec![
            "allow", "from", &a6, "to", "any", "port", "5432", "proto", "tcp",
        ],
        vec!["reject", "2222/tcp"],
        vec!["limit", "2223/tcp"],
        vec![
            "limit", "from", &a4, "to", "any", "port", "2224", "proto", "tcp",
        ],
        vec![
            "allow", "in", "on", "eth0", "to", "any", "port", "8080", "proto", "tcp",
        ],
        vec![
            "insert",
            "1",
            "deny",
            "from",
            &b4,
            "to",
            "any",
            "app",
            "WWW Cache",
        ],
        vec![
            "deny", "in", "on", "eth9", "to", "any", "port", "9000", "proto", "tcp",
        ],
        vec!["allow", "9000/tcp"],
        vec!["allow", "3000:3002/tcp"],
        vec!["deny", "3001/tcp"],
        vec!["allow", "log", "9001/tcp"],
        vec!["allow", "1194/udp"],
        vec![
            "reject", "from", &b4, "to", "any", "port", "1194", "proto", "udp",
        ],
        vec!["prepend", "deny", "from", &b6],
        vec![
            "allow",
            "from",
            "198.18.0.0/15",
            "to",
            "any",
            "port",
            "7000",
            "proto",
            "tcp",
        ],
        vec![
            "deny", "proto", "tcp", "from", "any", "to", "any", "port", "7001",
        ],
        vec!["deny", "7002"],
        vec![
            "allow", "in", "on", "eth0", "from", &b4, "to", "any", "port", "7003", "proto", "tcp",
        ],
        vec![
            "deny",
            "from",
            "2001:db8::/32",
            "to",
            "any",
            "port",
            "7004",
            "proto",
            "tcp",
        ],
        vec!["allow", "7004/tcp"],
        vec![
            "allow",
            "proto",
            "tcp",
            "from",
            "any",
            "port",
            "1024:65535",
            "to",
            "any",
            "port",
            "7005",
        ],
        vec![
            "allow", "proto", "udp", "from", &a4, "to", "any", "port", "5000",
        ],
        vec!["allow", "out", "25/tcp"],
        vec![
            "deny",
            "out",
            "on",
            "eth0",
            "to",
            "198.18.7.7",
            "port",
            "26",
            "proto",
            "tcp",
        ],
        vec!["reject", "out", "27/udp"],
        vec!["allow", "WWW"],
        vec![
            "route",
            "allow",
            "in",
            "on",
            "eth0",
            "out",
            "on",
            "eth1",
            "to",
            "198.18.2.0/24",
            "port",
            "80",
            "proto",
            "tcp",
        ],
        vec!["route", "deny", "from", "198.18.0.9"],
        // UFW's characters in an interface name (no such interface: it never matches).
        vec![
            "allow", "in", "on", "v,=%@1", "to", "any", "port", "7031", "proto", "tcp",
        ],
    ];
    for r in &rules {
        state.ufw(&sb, r);
    }
    state.ufw(&sb, &["logging", "medium"]);
    // What `app update --add-new` adds (DEFAULT_APPLICATION_POLICY in /etc/default/ufw).
    state.ufw(&sb, &["app", "default", "allow"]);
    // A hand-made line in before.rules, which import reports and does not translate.
    let before = state.0.join("etc-ufw/before.rules");
    let text = std::fs::read_to_string(&before).unwrap();
    let custom = "-A ufw-before-input -p tcp --dport 7777 -j ACCEPT";
    let at = text.rfind("\nCOMMIT").unwrap();
    std::fs::write(&before, format!("{}\n{custom}{}", &text[..at], &text[at..])).unwrap();
    let custom_line = text[..at].lines().count() + 1;
    // A start script of one's own, which UFW runs (executable), and import reports.
    let init = state.0.join("etc-ufw/before.init");
    let script = std::fs::read_to_string(&init).unwrap();
    std::fs::write(
        &init,
        script.replacen("set -e\n", "set -e\ntrue # one's own\n", 1),
    )
    .unwrap();
    sh(&format!("chmod 750 {}", init.display()));
    state.ufw(&sb, &["--force", "enable"]);
    let ufw_status = state.ufw(&sb, &["status", "numbered"]);
    let ufw_verbose = state.ufw(&sb, &["status", "verbose"]);
    assert!(ufw_verbose.contains("New profiles: allow"), "{ufw_verbose}");
    // Two rules in the format before directions (6 fields, or 8 with app names), as a
    // file written by an old UFW has them; UFW reads them as incoming rules, and its
    // status is unchanged.
    let old_user = state.0.join("etc-ufw/user.rules");
    let text = std::fs::read_to_string(&old_user).unwrap();
    let mut old_format = [7, 9];
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let fields = l.strip_prefix("### tuple ### ").map(|t| {
                t.split(" comment=")
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .count()
            });
            match old_format.iter_mut().find(|n| Some(**n) == fields) {
                Some(n) if l.ends_with(" in") => {
                    *n = 0;
                    l.strip_suffix(" in").unwrap().to_string()
                }
                _ => l.to_string(),
            }
        })
        .collect();
    assert_eq!(
        old_format,
        [0, 0],
        "a 7- and a 9-field incoming rule to rewrite"
    );
    std::fs::write(&old_user, lines.join("\n") + "\n").unwrap();
    assert_eq!(state.ufw(&sb, &["status", "numbered"]), ufw_status);
    let ufw_verdicts = probe(&sb);

    // UFW's tables gone from the namespace (its files still say it is enabled, as a
    // host's would): only rampart filters from here.
    let out = sb.exec(&sb.srv.ns, &["nft", "flush", "ruleset"]);
    assert!(out.status.success());
    let etc = state.0.join("etc-ufw");
    let defaults = state.0.join("default-ufw");
    let args = [
        "import",
        "ufw",
        etc.to_str().unwrap(),
        "--defaults",
        defaults.to_str().unwrap(),
    ];
    // A hand-made line in user.rules (UFW would load it until its next rule change
    // rewrites the file), added after the probes: import names it, and only it.
    let user = etc.join("user.rules");
    let text = std::fs::read_to_string(&user).unwrap();
    let hand = "-A ufw-user-input -p tcp --dport 7778 -j ACCEPT";
    let at = text.find("\n### END RULES ###").unwrap();
    let above = format!("{}\n\n", &text[..at]);
    std::fs::write(&user, format!("{above}{hand}{}", &text[at..])).unwrap();
    let hand_line = above.lines().count() + 1;
    let dry = sb.rampart_ok(&[&["--dry-run"][..], &args[..]].concat());
    assert!(dry.contains("[[rule]]"), "{dry}");
    assert!(
        sb.rampart_ok(&["status"]).starts_with("Status: inactive"),
        "dry run changed nothing"
    );
    let report = sb.rampart_ok(&args);
    let tuples = |f: &str| {
        std::fs::read_to_string(etc.join(f))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("### tuple ###"))
            .count()
    };
    let (n4, n6) = (tuples("user.rules"), tuples("user6.rules"));
    assert!(n4 + n6 >= 30, "{n4} + {n6} rules");
    assert!(
        report.contains(&format!("Imported {n4} IPv4 and {n6} IPv6 rules")),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "Not translated: {} line {custom_line}: not translated: {custom}",
            before.display()
        )),
        "{report}"
    );
    // Reported as `line`, and the only note that says `what`.
    let once = |line: String, what: &str| {
        assert!(report.contains(&line), "{report}");
        assert_eq!(report.matches(what).count(), 1, "{report}");
    };
    let by_hand = "not a rule UFW's commands wrote";
    let u = user.display();
    once(
        format!("{u} line {hand_line}: not translated: {hand} ({by_hand}"),
        by_hand,
    );
    let script = "a script UFW runs when it starts and stops";
    let init = etc.join("before.init");
    once(
        format!("{}: not translated: {script}", init.display()),
        script,
    );
    // The kernel settings UFW applies at every start (its own sysctl.conf, as the
    // package ships it): each is reported, with its line.
    let sysctl = etc.join("sysctl.conf");
    let settings: Vec<(usize, String)> = std::fs::read_to_string(&sysctl)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .collect();
    assert!(!settings.is_empty(), "UFW's sysctl.conf sets something");
    for (n, l) in &settings {
        assert!(
            report.contains(&format!(
                "{} line {n}: not translated: {l} (a kernel setting UFW applies when it starts",
                sysctl.display()
            )),
            "{report}"
        );
    }
    assert_eq!(
        report.matches("a kernel setting UFW applies").count(),
        settings.len(),
        "{report}"
    );
    let verbose = sb.rampart_ok(&["status", "verbose"]);
    assert!(verbose.contains("Logging: on (medium)"), "{verbose}");
    assert!(verbose.contains("New profiles: allow"), "{verbose}");
    let ours = probe(&sb);

    let differ: Vec<String> = ufw_verdicts
        .iter()
        .zip(&ours)
        .filter(|(u, r)| u.1 != r.1)
        .map(|(u, r)| format!("{}: UFW {}, rampart {}", u.0, u.1, r.1))
        .collect();
    let total = ufw_verdicts.len();
    println!(
        "import: {} rules ({n4} IPv4, {n6} IPv6); {} of {total} probes end as under UFW",
        n4 + n6,
        total - differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    // Both kinds of outcome were seen, so the comparison says something.
    for how in ["accepted", "refused", "timed out", "answered", "no answer"] {
        assert!(ours.iter().any(|(_, h)| *h == how), "no probe {how}");
    }
    // And the rule list reads as UFW's did.
    let status = sb.rampart_ok(&["status", "numbered"]);
    assert_eq!(status.trim_end(), ufw_status.trim_end());

    // A set-up UFW never changed (its user rules as the package ships them, limit lines
    // outside every section): nothing is reported as added by hand.
    let fresh = state.0.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    for f in ["user.rules", "user6.rules"] {
        std::fs::copy(Path::new("/usr/share/ufw/iptables").join(f), fresh.join(f)).unwrap();
    }
    let none = state.0.join("no-defaults");
    let dry = sb.rampart_ok(&[
        "--dry-run",
        "import",
        "ufw",
        fresh.to_str().unwrap(),
        "--defaults",
        none.to_str().unwrap(),
    ]);
    assert!(dry.contains("Imported 0 IPv4 and 0 IPv6 rules"), "{dry}");
    assert!(!dry.contains("not a rule UFW's commands wrote"), "{dry}");
}
