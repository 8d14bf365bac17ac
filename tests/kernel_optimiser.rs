//! A few hundred generated rules on a real kernel: real connections sampled against the
//! reference evaluator of the model (see tests/optimiser.rs for the exhaustive check).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rampart::model::{
    Action, Decision, Direction, Endpoint, Family, Packet, Policy, PortRange, Ports, Proto, Rule,
    RuleLog,
};
use rampart::store::{LockMode, Store};
use rampart_sandbox::{Conn, Lcg, Sandbox, Udp};

/// First port the server listens on; it listens on PORTS of them.
const BASE: u16 = 7000;
const PORTS: u16 = 12;
/// Generated rules.
const RULES: usize = 300;
/// Long enough for an answer inside one machine; a drop is called after this.
const WAIT: Duration = Duration::from_millis(400);

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn generate(sb: &Sandbox) -> Policy {
    let mut g = Lcg(0x5eed);
    let mut rules = Vec::new();
    for _ in 0..RULES {
        let family = if g.next(2) == 0 {
            Family::V4
        } else {
            Family::V6
        };
        let v6 = family == Family::V6;
        let a = sb.clients[0].addr(v6);
        let b = sb.clients[1].addr(v6);
        let live: Vec<IpNet> = vec![
            IpNet::from(a),
            IpNet::from(b),
            if v6 {
                net("2001:db8::/64")
            } else {
                net("198.18.0.0/24")
            },
            if v6 {
                net("2001:db8::8/125")
            } else {
                net("198.18.0.8/29")
            },
        ];
        // Most rules are block-list filler that never matches the clients.
        let src = match g.next(10) {
            0..=3 => Some(live[g.next(live.len() as u64) as usize]),
            4 => None,
            _ => Some(if v6 {
                IpNet::new(
                    IpAddr::V6(
                        format!("2001:db8:{:x}::", 0x100 + g.next(4000))
                            .parse()
                            .unwrap(),
                    ),
                    48,
                )
                .unwrap()
            } else {
                IpNet::new(IpAddr::V4([198, 19, g.next(256) as u8, 0].into()), 24).unwrap()
            }),
        };
        let first = BASE + g.next(u64::from(PORTS)) as u16;
        let dports = match g.next(4) {
            0 => None,
            1 => Some(Ports(vec![PortRange {
                first,
                last: (first + 3).min(BASE + PORTS - 1),
            }])),
            _ => Some(Ports(vec![PortRange::single(first)])),
        };
        let proto = match (g.next(3), &dports) {
            (0, _) => Proto::Tcp,
            (1, _) => Proto::Udp,
            (_, Some(p)) if p.is_multi() => Proto::Tcp,
            _ => Proto::Any,
        };
        let action = match g.next(3) {
            0 => Action::Allow,
            1 => Action::Deny,
            _ => Action::Reject,
        };
        if src.is_none() && dports.is_none() {
            continue; // would decide everything after it
        }
        rules.push(Rule {
            action,
            direction: Direction::In,
            iface: None,
            out_iface: None,
            log: RuleLog::None,
            family,
            proto,
            from: Endpoint {
                addr: src,
                ports: None,
                app: None,
            },
            to: Endpoint {
                addr: None,
                ports: dports,
                app: None,
            },
            except: None,
            limit: None,
            comment: None,
        });
        // A rule from anywhere usually comes with its other family's copy, as
        // `allow 22/tcp` makes them (one map element can then serve both).
        if src.is_none() && g.next(3) > 0 {
            let copy = Rule {
                family: if v6 { Family::V4 } else { Family::V6 },
                ..rules.last().expect("just pushed").clone()
            };
            rules.push(copy);
        }
    }
    rules.sort_by_key(|r| r.family);
    Policy {
        enabled: true,
        rules,
        ..Policy::default()
    }
}

#[test]
fn generated_rules_on_the_kernel_agree_with_the_model() {
    let Some(mut sb) = rampart_sandbox::for_test(2, Path::new(env!("CARGO_BIN_EXE_rampart")))
    else {
        return;
    };
    for port in BASE..BASE + PORTS {
        sb.serve_tcp(port).unwrap();
        sb.serve_udp(port).unwrap();
    }
    // Refused UDP must answer every time: no ICMP rate limit in the server namespace.
    for key in ["net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"] {
        assert!(sb
            .exec(&sb.srv.ns, &["sysctl", "-qw", key])
            .status
            .success());
    }
    let policy = generate(&sb);
    let store = Store::open(sb.config_dir(), LockMode::Exclusive).unwrap();
    store.save(&policy).unwrap();
    drop(store);
    sb.rampart_ok(&["reload"]);
    let listing = sb.ruleset();
    assert!(listing.contains("vmap"), "the optimiser made maps");
    // The generated rules interleave both map shapes: one mixed run, whose port
    // lookup serves both families.
    assert!(
        listing.contains("meta mark 0x00000000 jump user_input_mixed_0"),
        "{listing}"
    );
    let plan = rampart::compile::compile(&policy);
    assert!(
        !plan.map_elements("rules_user_input_m0_pb").is_empty(),
        "some elements serve both families"
    );
    sample(&sb, &policy);

    // Packets that come with another tool's mark take the run compiled the ordinary
    // way, decide the same, and keep their mark. A table of the test's own marks every
    // packet before rampart sees it, and counts after rampart what still has the mark.
    for cmd in [
        "add table inet marks",
        "add chain inet marks pre { type filter hook prerouting priority -150 ; }",
        "add rule inet marks pre meta mark set 0x5a",
        "add chain inet marks after { type filter hook input priority 10 ; }",
        "add rule inet marks after meta mark 0x5a counter",
        "add rule inet marks after meta mark != 0x5a counter",
    ] {
        let words: Vec<&str> = std::iter::once("nft").chain(cmd.split(' ')).collect();
        let out = sb.exec(&sb.srv.ns, &words);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sample(&sb, &policy);
    let out = sb.exec(
        &sb.srv.ns,
        &["nft", "list", "chain", "inet", "marks", "after"],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let packets = |pat: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(pat))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter for {pat} in {text}"))
    };
    assert!(packets("meta mark 0x0000005a counter") > 0, "{text}");
    assert_eq!(packets("meta mark != 0x0000005a counter"), 0, "{text}");
}

/// Real connections from both clients, both families, TCP and UDP, against the model.
fn sample(sb: &Sandbox, policy: &Policy) {
    let mut g = Lcg(7);
    let mut seen = [0usize; 4];
    let mut wrong = Vec::new();
    for _ in 0..64 {
        let c = g.next(2) as usize;
        let v6 = g.next(2) == 1;
        let tcp = g.next(2) == 0;
        let port = BASE + g.next(u64::from(PORTS)) as u16;
        let pkt = Packet {
            family: if v6 { Family::V6 } else { Family::V4 },
            direction: Direction::In,
            iface: "eth0".into(),
            out_iface: String::new(),
            proto: if tcp { Proto::Tcp } else { Proto::Udp },
            src: sb.clients[c].addr(v6),
            dst: sb.srv.addr(v6),
            sport: 0,
            dport: port,
        };
        // No rule: the default policy (deny incoming).
        let want = match policy.decide(&pkt) {
            Decision::NoMatch => Decision::Drop,
            d => d,
        };
        seen[want as usize] += 1;
        let got = if tcp {
            match sb.tcp_timeout(c, v6, port, WAIT) {
                Conn::Open(_) => Decision::Accept,
                Conn::Refused => Decision::Reject,
                Conn::TimedOut => Decision::Drop,
                Conn::Failed(_) => Decision::NoMatch,
            }
        } else {
            match sb.udp_timeout(c, v6, port, 0, WAIT) {
                Udp::Reply => Decision::Accept,
                Udp::Refused => Decision::Reject,
                Udp::TimedOut => Decision::Drop,
            }
        };
        if got != want {
            wrong.push(format!(
                "client {c} v6={v6} tcp={tcp} port {port}: kernel {got:?}, model {want:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The sample exercised accepts, drops and rejects.
    assert!(
        seen[Decision::Accept as usize] > 0
            && seen[Decision::Drop as usize] > 0
            && seen[Decision::Reject as usize] > 0,
        "{seen:?}"
    );
}

/// Adding or deleting a rule that only changes a map's elements changes just those
/// elements (the map keeps its kernel handle), and the table is then identical to a
/// full rebuild of the same policy.
#[test]
fn element_changes_are_incremental_and_equal_a_rebuild() {
    let Some(mut sb) = rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
    else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    for i in 1..=5 {
        sb.rampart_ok(&[
            "allow",
            "from",
            &format!("198.19.{i}.0/24"),
            "to",
            "any",
            "port",
            "22",
            "proto",
            "tcp",
        ]);
    }
    let map = "rules_user_input_0_4i";
    let handle = || {
        let out = sb.exec(
            &sb.srv.ns,
            &["nft", "-a", "-t", "list", "map", "inet", "rampart", map],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split("# handle ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .map(String::from)
    };
    // The table as nft's JSON, normalized (no handles, elements sorted, the current
    // stamp only).
    let table = || sb.table_json(&sb.srv.ns);
    let h0 = handle().expect("map exists");
    assert!(!sb.tcp(0, false, 22).is_open(), "client not allowed yet");

    // Insert the client's network into the run: one element added, same map.
    let out = sb.rampart_ok(&[
        "insert",
        "2",
        "allow",
        "from",
        "198.18.0.0/24",
        "to",
        "any",
        "port",
        "22",
        "proto",
        "tcp",
    ]);
    assert_eq!(out, "Rule inserted\n");
    assert_eq!(
        handle().as_deref(),
        Some(h0.as_str()),
        "the map was updated in place"
    );
    assert!(sb.tcp(0, false, 22).is_open(), "the new element works");
    let incremental = table();
    sb.rampart_ok(&["reload"]);
    assert_ne!(
        handle().as_deref(),
        Some(h0.as_str()),
        "reload rebuilt the table"
    );
    assert_eq!(
        table(),
        incremental,
        "incremental result equals a full rebuild"
    );

    // Delete a rule of the run: one element removed in place.
    let h1 = handle().unwrap();
    sb.rampart_ok(&[
        "--force",
        "delete",
        "allow",
        "from",
        "198.18.0.0/24",
        "to",
        "any",
        "port",
        "22",
        "proto",
        "tcp",
    ]);
    assert_eq!(handle().as_deref(), Some(h1.as_str()), "updated in place");
    assert!(!sb.tcp(0, false, 22).is_open(), "element removed");
    let incremental = table();
    sb.rampart_ok(&["reload"]);
    assert_eq!(
        table(),
        incremental,
        "incremental result equals a full rebuild"
    );
}
