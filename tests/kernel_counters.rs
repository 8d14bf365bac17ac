//! Counters per rule on real connections: `status --json` and `status verbose` show
//! for each rule the packets its kernel rule or map element matched, which for a new
//! connection is its first packet: so they equal the connections made, IPv4 and IPv6,
//! for map elements (one both families share, and one per family) and plain rules. An
//! element-only change keeps them.

use std::path::Path;

use rampart_sandbox::Sandbox;
use serde_json::Value;

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// Rule number → (packets, both families).
fn counts(sb: &Sandbox) -> Vec<(u64, bool)> {
    let v: Value = serde_json::from_str(&sb.rampart_ok(&["status", "--json"])).unwrap();
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let c = &r["counter"];
            (
                c["packets"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no counter: {r}")),
                c["both_families"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn connect(sb: &Sandbox, v6: bool, port: u16, n: usize) {
    for _ in 0..n {
        assert!(sb.tcp(A, v6, port).is_open(), "port {port} v6={v6}");
    }
}

#[test]
fn counters_equal_the_connections_made() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [22, 80, 81, 443, 8080] {
        sb.serve_tcp(port).unwrap();
    }
    let (a4, a6) = (sb.clients[A].v4.to_string(), sb.clients[A].v6.to_string());
    sb.rampart_ok(&["--force", "enable"]);
    // 1 and 4: plain rules (an interface keeps them out of the maps); 2 and 5: a map
    // element both families share; 3 and 6: one element per family. The maps' run is
    // the last of the chain, so a rule appended to it is an element-only change.
    sb.rampart_ok(&[
        "allow", "in", "on", "eth0", "to", "any", "port", "81", "proto", "tcp",
    ]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&[
        "allow", "from", &a4, "to", "any", "port", "80", "proto", "tcp",
    ]);
    sb.rampart_ok(&[
        "allow", "from", &a6, "to", "any", "port", "80", "proto", "tcp",
    ]);
    let numbered = sb.rampart_ok(&["status", "numbered"]);
    assert!(numbered.contains("[ 5] 22/tcp (v6)"), "{numbered}");
    assert!(
        numbered.contains(&format!("[ 6] 80/tcp                     ALLOW IN    {a6}")),
        "{numbered}"
    );
    assert_eq!(
        counts(&sb),
        [
            (0, false),
            (0, true),
            (0, false),
            (0, false),
            (0, true),
            (0, false)
        ]
    );

    connect(&sb, V4, 22, 2);
    connect(&sb, V6, 22, 3);
    connect(&sb, V4, 80, 2);
    connect(&sb, V6, 80, 1);
    connect(&sb, V4, 81, 3);
    connect(&sb, V6, 81, 1);
    // The first reading of a policy's counters compiles its plan and keeps its counter
    // tags; the next reads them instead: both add up the same.
    let tags = sb.config_dir().join(".counter-tags");
    let _ = std::fs::remove_file(&tags);
    let c = counts(&sb);
    assert!(tags.exists(), "the counter tags were kept");
    assert_eq!(counts(&sb), c, "the kept tags add up as the plan's");
    // They are what is read: kept tags of no object (whole, with their hash) count
    // nothing.
    let kept = std::fs::read_to_string(&tags).unwrap();
    let first = kept.lines().next().unwrap();
    let head = first.rsplit_once(' ').unwrap().0;
    let none = format!("{head} {:032x}\n", xxhash_rust::xxh3::xxh3_128(b""));
    std::fs::write(&tags, none).unwrap();
    let v: Value = serde_json::from_str(&sb.rampart_ok(&["status", "--json"])).unwrap();
    assert_ne!(v["rules"][1]["counter"]["packets"].as_u64(), Some(5), "{v}");
    std::fs::write(&tags, &kept).unwrap();
    assert_eq!(counts(&sb), c, "the kept tags add up as the plan's");
    // Kept tags that do not match their hash are not used.
    let edited = kept.replacen("\t0\t", "\t1\t", 1);
    assert_ne!(edited, kept, "{kept}");
    std::fs::write(&tags, edited).unwrap();
    assert_eq!(counts(&sb), c, "torn or edited tags are not used");
    assert_eq!(c[0], (3, false), "81 on eth0, IPv4 plain rule: {c:?}");
    assert_eq!(c[3], (1, false), "81 on eth0, IPv6 plain rule: {c:?}");
    assert_eq!(c[1], (5, true), "22/tcp, both families' element: {c:?}");
    assert_eq!(
        c[4],
        (5, true),
        "its IPv6 copy reads the same element: {c:?}"
    );
    assert_eq!(c[2], (2, false), "80 from the client's IPv4: {c:?}");
    assert_eq!(c[5], (1, false), "80 from the client's IPv6: {c:?}");

    // A network's rule: an interval map's element.
    let net = [
        "allow",
        "from",
        "198.18.0.0/15",
        "to",
        "any",
        "port",
        "8080",
        "proto",
        "tcp",
    ];
    sb.rampart_ok(&net);
    connect(&sb, V4, 8080, 2);
    let c = counts(&sb);
    assert_eq!(
        c[3],
        (2, false),
        "8080 from 198.18.0.0/15, an interval element: {c:?}"
    );
    assert_eq!(c[1], (5, true), "appending it kept the others: {c:?}");
    sb.rampart_ok(&[&["delete"][..], &net[..]].concat());

    let verbose = sb.rampart_ok(&["status", "verbose"]);
    assert!(
        verbose.contains(
            "22/tcp                     ALLOW IN    Anywhere                   [5 packets, "
        ),
        "{verbose}"
    );
    assert!(verbose.contains("bytes, IPv4 and IPv6]"), "{verbose}");

    // An element-only change (one more port in the shared map) keeps the counters.
    sb.rampart_ok(&["allow", "443/tcp"]);
    connect(&sb, V4, 443, 1);
    let c = counts(&sb);
    assert_eq!(c[1], (5, true), "kept across an element change: {c:?}");
    assert_eq!(c[0], (3, false), "kept across an element change: {c:?}");
    assert_eq!(c[3], (1, true), "443/tcp is rule 4 now: {c:?}");
    let loaded = rampart::store::Store::open(sb.config_dir(), rampart::store::LockMode::Shared)
        .unwrap()
        .load()
        .unwrap();
    readers_agree(&sb, &loaded.policy);
    // A reload applies the table afresh: the counters start again.
    sb.rampart_ok(&["reload"]);
    assert!(counts(&sb).iter().all(|(p, _)| *p == 0));
}

/// A mixed run (interleaved source-only and port rules): each rule's counter is its
/// element of the run's verdict map plus its ordinary copy's (for packets that come
/// with another tool's mark), and equals the connections it decided, the ones it
/// refused too. The counters read over netlink equal those of nft's listing.
#[test]
fn mixed_run_counters_equal_the_connections_and_nft_listing() {
    use rampart::model::{Action, Policy};
    use rampart::store::{LockMode, Store};

    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [7001, 7002, 7003, 7004] {
        sb.serve_tcp(port).unwrap();
    }
    let (a4, a6) = (sb.clients[A].v4.to_string(), sb.clients[A].v6.to_string());
    let mut commands: Vec<(Action, String)> = Vec::new();
    for i in 0..36u16 {
        commands.push(match i % 3 {
            0 => (Action::Deny, format!("from 198.19.{i}.0/29")),
            1 => (Action::Allow, format!("{}/tcp", 10000 + i)),
            _ => (
                Action::Allow,
                format!("from 198.19.200.{i} to any port 22 proto tcp"),
            ),
        });
    }
    commands.extend([
        (
            Action::Allow,
            format!("from {a4} to any port 7001 proto tcp"),
        ), // 37
        (Action::Allow, "7002/tcp".to_string()), // 38, 39 (v6)
        (Action::Allow, format!("from {a6}")),   // 40
        (Action::Reject, "from 198.18.0.0/16".to_string()), // 41
        (Action::Allow, "7004/tcp".to_string()), // 42, 43 (v6)
    ]);
    let mut policy = Policy {
        enabled: true,
        ..Policy::default()
    };
    for (action, text) in &commands {
        let words: Vec<String> = text.split(' ').map(String::from).collect();
        policy
            .rules
            .extend(rampart::grammar::parse_rule(*action, &words).unwrap().rules);
    }
    policy.rules.sort_by_key(|r| r.family);
    let store = Store::open(sb.config_dir(), LockMode::Exclusive).unwrap();
    store.save(&policy).unwrap();
    drop(store);
    sb.rampart_ok(&["reload"]);
    assert!(sb.ruleset().contains("jump user_input_mixed_0"));

    connect(&sb, V4, 7001, 2);
    connect(&sb, V4, 7002, 1);
    connect(&sb, V6, 7002, 2);
    connect(&sb, V6, 7003, 1);
    connect(&sb, V6, 7004, 2);
    for _ in 0..2 {
        assert!(
            matches!(sb.tcp(A, V4, 7004), rampart_sandbox::Conn::Refused),
            "rule 41 refuses before 7004/tcp allows"
        );
    }
    // Rules in the policy's order (IPv4 rules first): find each by its text.
    let numbered = sb.rampart_ok(&["status", "numbered"]);
    let number = |needle: &str| -> usize {
        numbered
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.trim_start_matches('[').split(']').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rule {needle} in {numbered}"))
    };
    let c = counts(&sb);
    let at = |needle: &str| c[number(needle) - 1];
    assert_eq!(at("7001/tcp"), (2, false), "{c:?}");
    assert_eq!(at("7002/tcp (v6)"), (3, true), "{c:?}");
    assert_eq!(at(&format!("ALLOW IN    {a6}")), (3, false), "{c:?}");
    assert_eq!(at("REJECT IN   198.18.0.0/16"), (2, false), "{c:?}");
    assert_eq!(at("7004/tcp (v6)"), (0, true), "{c:?}");
    let total: u64 = c.iter().map(|(p, _)| p).sum();
    // 7002's count shows on both its copies.
    assert_eq!(
        total,
        2 + 3 + 3 + 3 + 2,
        "the filler counted nothing: {c:?}"
    );

    // A connection that comes with another tool's mark takes the rules' ordinary copy
    // (`user_input_marked_0`), and counts for its rule there too.
    for cmd in [
        "add table inet marks",
        "add chain inet marks pre { type filter hook prerouting priority -150 ; }",
        "add rule inet marks pre meta mark set 0x5a",
    ] {
        let words: Vec<&str> = std::iter::once("nft").chain(cmd.split(' ')).collect();
        assert!(sb.exec(&sb.srv.ns, &words).status.success(), "{cmd}");
    }
    connect(&sb, V4, 7001, 1);
    connect(&sb, V6, 7002, 1);
    let c = counts(&sb);
    let at = |needle: &str| c[number(needle) - 1];
    assert_eq!(
        at("7001/tcp"),
        (3, false),
        "the marked connection counted: {c:?}"
    );
    assert_eq!(
        at("7002/tcp (v6)"),
        (4, true),
        "the marked connection counted: {c:?}"
    );

    readers_agree(&sb, &policy);
}

/// The counters read over netlink (what `status verbose` shows) equal those of nft's
/// own listing, for every rule and element that stands for a user rule, and some were
/// read.
fn readers_agree(sb: &Sandbox, policy: &rampart::model::Policy) {
    use rampart::backend::{Backend, Counters, NftBackend};
    let plan = rampart::compile::compile(policy);
    let (fast, listed) = rampart_sandbox::in_netns(&sb.srv.ns, || {
        (
            NftBackend.counters(&plan).unwrap(),
            Counters::from_listing(&NftBackend.list_json().unwrap()),
        )
    })
    .unwrap();
    let tagged = |c: &Counters| Counters {
        rules: c
            .rules
            .iter()
            .filter(|(k, _)| plan.rule_tags.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        elements: c
            .elements
            .iter()
            .filter(|(k, _)| plan.element_tags.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    };
    assert_eq!(tagged(&fast), tagged(&listed));
    assert!(!fast.elements.is_empty(), "{fast:?}");
}
