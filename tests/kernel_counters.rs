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
    let c = counts(&sb);
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
    // A reload applies the table afresh: the counters start again.
    sb.rampart_ok(&["reload"]);
    assert!(counts(&sb).iter().all(|(p, _)| *p == 0));
}
