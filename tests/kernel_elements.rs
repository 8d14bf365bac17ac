//! Element-only changes go to the kernel over netlink, without `nft`: with an `nft`
//! that only fails on PATH, a rule appended to the last run of map rules (a host's, a
//! port's, a network's), deleted from it or turned from allow to deny still applies,
//! connections follow it at once, and the kernel then holds exactly what nft's full
//! apply of the same policy holds. A batch the kernel refuses in part changes nothing.
//! And 240 random changes of every element shape (both families, networks of any
//! length, port ranges to 65535, source-only rules) agree with nft's full apply of the
//! same policy.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use rampart_sandbox::{Lcg, Sandbox};

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// rampart with an `nft` on PATH that fails whatever it is asked.
fn without_nft(sb: &Sandbox, path: &str, args: &[&str]) -> Output {
    sb.rampart_command(args)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run rampart")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed without nft: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The map whose elements' JSON holds `text`.
fn map_holding(sb: &Sandbox, text: &str) -> String {
    let table = sb.table_json(&sb.srv.ns);
    table["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("map"))
        .find(|m| m["elem"].to_string().contains(text))
        .and_then(|m| m["name"].as_str())
        .unwrap_or_else(|| panic!("no map holds {text}: {table}"))
        .to_string()
}

/// How a connection from the client's IPv4 address to `port` ends.
fn probe(sb: &Sandbox, port: u16) -> &'static str {
    sb.tcp_timeout(A, V4, port, Duration::from_millis(400))
        .word()
}

fn open(sb: &Sandbox, v6: bool, port: u16) -> bool {
    sb.tcp_timeout(A, v6, port, Duration::from_millis(400))
        .is_open()
}

#[test]
fn element_changes_need_no_nft_and_leave_what_a_full_apply_leaves() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [80, 8080, 8081, 8082, 8083] {
        sb.serve_tcp(port).unwrap();
    }
    let (a4, a6) = (sb.clients[A].v4.to_string(), sb.clients[A].v6.to_string());
    let stand_in = sb.config_dir().join("no-nft");
    let path = rampart_sandbox::stand_in(
        &stand_in,
        "nft",
        "#!/bin/sh\necho \"nft was called: $*\" >&2\nexit 1\n",
    )
    .unwrap();

    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&[
        "allow", "from", &a4, "to", "any", "port", "80", "proto", "tcp",
    ]);
    assert!(open(&sb, V4, 80));
    assert!(!open(&sb, V4, 8080), "8080 is closed before its rule");

    // Host rules (a hash map keyed by address, protocol and port), one per family.
    let v4_rule = [
        "allow", "from", &a4, "to", "any", "port", "8080", "proto", "tcp",
    ];
    ok(without_nft(&sb, &path, &v4_rule), "a host rule");
    assert!(open(&sb, V4, 8080), "the IPv4 host rule opened 8080");
    assert!(
        !open(&sb, V6, 8080),
        "but not for the client's IPv6 address"
    );
    ok(
        without_nft(
            &sb,
            &path,
            &[
                "allow", "from", &a6, "to", "any", "port", "8080", "proto", "tcp",
            ],
        ),
        "an IPv6 host rule",
    );
    assert!(open(&sb, V6, 8080), "the IPv6 host rule opened 8080");

    // A port from anywhere: one element both families share.
    ok(
        without_nft(&sb, &path, &["allow", "8081/tcp"]),
        "a port rule",
    );
    assert!(open(&sb, V4, 8081) && open(&sb, V6, 8081));

    // Deleting a rule takes its element out.
    ok(
        without_nft(&sb, &path, &[&["delete"][..], &v4_rule[..]].concat()),
        "a delete",
    );
    assert!(!open(&sb, V4, 8080), "the deleted rule's port is closed");
    assert!(open(&sb, V6, 8080), "the other family's rule stays");

    // The allow becomes a deny (UFW's "Rule updated"): the element's verdict
    // changes (the old element goes and the new one comes, in one transaction).
    let updated = ok(
        without_nft(
            &sb,
            &path,
            &[
                "deny", "from", &a4, "to", "any", "port", "80", "proto", "tcp",
            ],
        ),
        "an allow made a deny",
    );
    assert_eq!(updated.trim(), "Rule updated");
    assert!(!open(&sb, V4, 80), "the deny decides now");

    // status reads the table over netlink too.
    let status = ok(without_nft(&sb, &path, &["status"]), "status");
    assert!(status.starts_with("Status: active"), "{status}");
    assert!(status.contains("8081/tcp"), "{status}");

    // Interval elements: a network's rule in the host-and-port run (a range of a
    // concatenation: one element from its first key to its last).
    let net_rule = [
        "allow",
        "from",
        "198.18.0.0/15",
        "to",
        "any",
        "port",
        "8082",
        "proto",
        "tcp",
    ];
    assert!(!open(&sb, V4, 8082));
    ok(without_nft(&sb, &path, &net_rule), "a network's rule");
    assert!(open(&sb, V4, 8082), "the network's rule opened 8082");
    assert!(!open(&sb, V6, 8082), "for IPv4 only");

    // A run of source rules after it (made with nft: a new run is a new map), then
    // a network appended to it and deleted again over netlink: an interval of one
    // field is an element at its first address and an end element past its last.
    sb.rampart_ok(&["deny", "from", "198.19.0.1"]);
    let octets: Vec<&str> = a4.split('.').collect();
    let client_net = format!("{}.{}.{}.0/24", octets[0], octets[1], octets[2]);
    let reject_net = ["reject", "from", client_net.as_str()];
    assert_eq!(probe(&sb, 8083), "timed out", "the default drops");
    ok(without_nft(&sb, &path, &reject_net), "a network's reject");
    assert_eq!(
        probe(&sb, 8083),
        "refused",
        "the client's network is refused"
    );
    assert!(open(&sb, V4, 8082), "an earlier rule still decides first");
    ok(
        without_nft(&sb, &path, &[&["delete"][..], &reject_net[..]].concat()),
        "the reject's delete",
    );
    assert_eq!(probe(&sb, 8083), "timed out", "the default decides again");
    ok(without_nft(&sb, &path, &reject_net), "the reject again");
    assert_eq!(probe(&sb, 8083), "refused");

    // What the element changes left is what nft's full apply of the policy makes.
    let after_netlink = sb.table_json(&sb.srv.ns);
    sb.rampart_ok(&["reload"]);
    assert_eq!(sb.table_json(&sb.srv.ns), after_netlink);
    assert!(!open(&sb, V4, 80) && open(&sb, V6, 8080) && open(&sb, V4, 8081));
    assert!(open(&sb, V4, 8082) && probe(&sb, 8083) == "refused");

    // One transaction: the IPv6 rule's element taken out behind rampart's back, so
    // that turning the rule into a deny (its element deleted, then one with the new
    // verdict added) fails at the delete: the add after it does not happen either.
    let key = format!("\"{a6}\",\"tcp\",8080]");
    let map = map_holding(&sb, &key);
    let del = sb.exec(
        &sb.srv.ns,
        &[
            "nft",
            "delete",
            "element",
            "inet",
            "rampart",
            &map,
            &format!("{{ {a6} . tcp . 8080 }}"),
        ],
    );
    assert!(del.status.success(), "{del:?}");
    let table = sb.table_json(&sb.srv.ns);
    let deny6 = [
        "deny", "from", &a6, "to", "any", "port", "8080", "proto", "tcp",
    ];
    let refused = without_nft(&sb, &path, &deny6);
    assert!(!refused.status.success(), "the kernel refused the delete");
    assert_eq!(
        sb.table_json(&sb.srv.ns),
        table,
        "nothing of it was applied"
    );
    assert!(!open(&sb, V6, 8080), "no element: the default decides");
    sb.rampart_ok(&["reload"]);
    assert!(open(&sb, V6, 8080), "a reload puts the element back");
}

/// A random rule of the shapes that become map elements: hosts and networks of either
/// family and of any length, single ports and ranges (up to 65535), source-only rules;
/// allow, deny or reject.
fn random_rule(g: &mut Lcg) -> Vec<String> {
    let action = ["allow", "deny", "reject"][g.next(3) as usize];
    let v6 = g.next(3) == 0;
    let host = |g: &mut Lcg| {
        if v6 {
            format!("2001:db8::{:x}", 1 + g.next(400))
        } else {
            format!("198.19.{}.{}", g.next(64), 1 + g.next(250))
        }
    };
    let net = |g: &mut Lcg| {
        if v6 {
            let len = [32, 48, 56, 64, 100, 127][g.next(6) as usize];
            let addr = std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(g.next(1 << 16)) << 64),
            );
            ipnet::Ipv6Net::new(addr, len).unwrap().trunc().to_string()
        } else {
            let len = [8, 15, 16, 20, 24, 29, 30, 31][g.next(8) as usize];
            let addr = std::net::Ipv4Addr::new(198, 19, g.next(256) as u8, g.next(256) as u8);
            ipnet::Ipv4Net::new(addr, len).unwrap().trunc().to_string()
        }
    };
    let ports = |g: &mut Lcg| {
        let first = 1 + g.next(65535);
        match g.next(3) {
            0 => format!("{first}:{}", first + g.next(65536 - first)),
            1 => format!("{}:65535", 60000 + g.next(5535)),
            _ => first.to_string(),
        }
    };
    let proto = ["tcp", "udp"][g.next(2) as usize];
    let text = match g.next(4) {
        0 => format!(
            "{action} from {} to any port {} proto {proto}",
            host(g),
            1 + g.next(65535)
        ),
        1 => format!(
            "{action} from {} to any port {} proto {proto}",
            net(g),
            ports(g)
        ),
        2 => format!("{action} {}/{proto}", ports(g)),
        _ if g.next(2) == 0 => format!("{action} from {}", net(g)),
        _ => format!("{action} from {}", host(g)),
    };
    text.split_whitespace().map(String::from).collect()
}

/// 240 random appends and deletes (many of them element-only changes, written over
/// netlink) leave, every ten changes, the table nft's full apply of the same policy
/// makes in another namespace.
#[test]
fn random_element_changes_leave_what_a_full_apply_leaves() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    let reference = sb.spare_ns().unwrap();
    let ref_dir = sb.config_dir().with_extension("ref");
    sb.rampart_ok(&["--force", "enable"]);
    let mut g = Lcg(0x0e1e);
    let mut added: Vec<Vec<String>> = Vec::new();
    let mut over_netlink = 0;
    for k in 0..240 {
        let delete = !added.is_empty() && g.next(4) == 0;
        let args: Vec<String> = if delete {
            let rule = added.swap_remove(g.next(added.len() as u64) as usize);
            [vec!["--force".to_string(), "delete".to_string()], rule].concat()
        } else {
            let rule = random_rule(&mut g);
            added.push(rule.clone());
            rule
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sb
            .rampart_command(&args)
            .env("RAMPART_TIMING", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        if err.contains("element transaction (netlink)") {
            over_netlink += 1;
        }
        if k % 10 != 9 {
            continue;
        }
        assert_eq!(
            sb.table_json(&sb.srv.ns),
            sb.full_apply_table(&reference, &ref_dir),
            "after change {k} ({args:?})"
        );
    }
    let _ = std::fs::remove_dir_all(&ref_dir);
    // 103 of the 240 (the rest change the table's shape: a new run, a split one).
    assert!(over_netlink >= 80, "{over_netlink} of 240 over netlink");
}

/// The policy of the large change: `allow 22/tcp`, `hosts` host rules, then one for
/// the client's IPv4 address to 8080.
fn hosts_policy(hosts: usize, client: &str) -> rampart::model::Policy {
    use rampart::model::{Action, Policy, Position};
    let mut p = Policy {
        enabled: true,
        ..Policy::default()
    };
    let mut add = |text: String| {
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        let rules = rampart::grammar::parse_rule(Action::Allow, &words)
            .unwrap()
            .rules;
        p.add_all(rules, Position::Append).unwrap();
    };
    add("22/tcp".into());
    for i in 0..hosts {
        add(format!(
            "proto tcp from 198.19.{}.{} to any port {}",
            i / 250,
            1 + i % 250,
            1000 + i
        ));
    }
    add(format!("proto tcp from {client} to any port 8080"));
    p
}

/// 3,000 rules appended in one `apply` (about 200 kB of elements, past what one
/// netlink message can hold) are one element transaction over netlink, and taken out
/// again in one: the client's rule after them works throughout, and the table is what
/// nft's full apply makes.
#[test]
fn a_large_element_change_is_one_batch() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(8080).unwrap();
    let a4 = sb.clients[A].v4.to_string();
    let files = sb.config_dir().with_extension("files");
    let file = |name: &str, hosts: usize| {
        let dir = files.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let store = rampart::store::Store::open(&dir, rampart::store::LockMode::Exclusive).unwrap();
        store.save(&hosts_policy(hosts, &a4)).unwrap();
        dir.join("policy.toml").to_str().unwrap().to_string()
    };
    let (small, large) = (file("small", 10), file("large", 3010));
    sb.rampart_ok(&["--force", "apply", &small]);
    assert!(open(&sb, V4, 8080));
    for (to, hosts) in [(&large, 3010), (&small, 10)] {
        let out = sb
            .rampart_command(&["--force", "apply", to])
            .env("RAMPART_TIMING", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{hosts}: {err}");
        assert!(
            err.contains("element transaction (netlink)"),
            "{hosts} hosts over netlink: {err}"
        );
        assert!(
            open(&sb, V4, 8080),
            "the client's rule, after {hosts} hosts"
        );
        let numbered = sb.rampart_ok(&["status", "numbered"]);
        assert!(
            numbered.contains(&format!(
                "198.19.{}.{}",
                (hosts - 1) / 250,
                1 + (hosts - 1) % 250
            )),
            "the last host rule is there"
        );
    }
    // The same policy, applied in full by nft in another namespace.
    sb.rampart_ok(&["--force", "apply", &large]);
    let reference = sb.spare_ns().unwrap();
    let want = sb.full_apply_table(&reference, &files.join("reference"));
    assert_eq!(sb.table_json(&sb.srv.ns), want);
    let _ = std::fs::remove_dir_all(&files);
}
