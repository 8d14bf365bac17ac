//! Route rules on a real kernel: a client, a router (rampart) and a far host, real
//! forwarded connections over IPv4 and IPv6.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rampart_sandbox::Sandbox;

const WAIT: Duration = Duration::from_millis(800);

#[test]
fn route_rules_filter_forwarded_connections() {
    if rampart_sandbox::kernel_unavailable().is_some() {
        let _ = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart")));
        return;
    }
    let mut sb = Sandbox::routed(Path::new(env!("CARGO_BIN_EXE_rampart"))).expect("routed sandbox");
    let far = sb.far.clone().unwrap();
    for port in [8080, 8081] {
        sb.serve_tcp_in(&far.ns, port).unwrap();
    }
    let to_far = |sb: &Sandbox, v6: bool, port: u16| {
        sb.tcp_to(0, SocketAddr::new(far.addr(v6), port), WAIT)
            .word()
    };
    sb.rampart_ok(&["--force", "enable"]);

    // With the routed default disabled, route rules decide what they match and the
    // rest is forwarded as before.
    let out = sb.rampart_ok(&["route", "reject", "8081/tcp"]);
    assert_eq!(out, "Rule added\nRule added (v6)\n");
    for v6 in [false, true] {
        assert_eq!(to_far(&sb, v6, 8081), "refused", "v6={v6}");
        assert_eq!(to_far(&sb, v6, 8080), "accepted", "v6={v6}");
    }
    let status = sb.rampart_ok(&["status"]);
    assert!(
        status.contains("8081/tcp                   REJECT FWD  Anywhere"),
        "{status}"
    );

    // Under default deny routed, only what a route rule allows is forwarded.
    sb.rampart_ok(&["default", "deny", "routed"]);
    assert_eq!(to_far(&sb, false, 8080), "timed out");
    sb.rampart_ok(&[
        "route", "allow", "in", "on", "eth0", "out", "on", "eth1", "to", "any", "port", "8080",
        "proto", "tcp",
    ]);
    for v6 in [false, true] {
        assert_eq!(to_far(&sb, v6, 8080), "accepted", "v6={v6}");
    }
    let status = sb.rampart_ok(&["status"]);
    assert!(
        status.contains("8080/tcp on eth1           ALLOW FWD   Anywhere on eth0"),
        "{status}"
    );
    let added = sb.rampart_ok(&["show", "added"]);
    assert!(
        added.contains("rampart route allow in on eth0 out on eth1 to any port 8080 proto tcp"),
        "{added}"
    );
    // Another interface pair does not match.
    sb.rampart_ok(&[
        "route", "delete", "allow", "in", "on", "eth0", "out", "on", "eth1", "to", "any", "port",
        "8080", "proto", "tcp",
    ]);
    sb.rampart_ok(&[
        "route", "allow", "in", "on", "eth1", "out", "on", "eth0", "to", "any", "port", "8080",
        "proto", "tcp",
    ]);
    assert_eq!(to_far(&sb, false, 8080), "timed out", "the wrong way round");

    // An outgoing interface alone (`route allow out on eth1`, as UFW takes it): all that
    // is forwarded out of it; the numbered status says `(out)`, as UFW's does.
    sb.rampart_ok(&["route", "allow", "out", "on", "eth0"]);
    assert_eq!(to_far(&sb, false, 8080), "timed out", "not out of eth0");
    sb.rampart_ok(&["route", "allow", "out", "on", "eth1"]);
    for v6 in [false, true] {
        assert_eq!(to_far(&sb, v6, 8080), "accepted", "out of eth1, v6={v6}");
    }
    let numbered = sb.rampart_ok(&["status", "numbered"]);
    assert!(
        numbered
            .contains("Anywhere on eth1           ALLOW FWD   Anywhere                   (out)"),
        "{numbered}"
    );
    for iface in ["eth0", "eth1"] {
        sb.rampart_ok(&["route", "delete", "allow", "out", "on", iface]);
    }
    assert_eq!(to_far(&sb, false, 8080), "timed out", "deleted");

    // route insert and an address: IPv4 from the client refused, IPv6 not.
    sb.rampart_ok(&["route", "allow", "8080/tcp"]);
    let client = sb.clients[0].v4.to_string();
    sb.rampart_ok(&["route", "insert", "1", "reject", "from", &client]);
    assert_eq!(to_far(&sb, false, 8080), "refused");
    assert_eq!(to_far(&sb, true, 8080), "accepted");
    let numbered = sb.rampart_ok(&["status", "numbered"]);
    assert!(
        numbered.contains("[ 1] Anywhere                   REJECT FWD  198.18."),
        "{numbered}"
    );

    // A destination address (matched as the connection's original one), each family.
    for v6 in [false, true] {
        let net = if v6 {
            "2001:db8:2::/64"
        } else {
            "198.18.2.0/24"
        };
        sb.rampart_ok(&[
            "route", "prepend", "reject", "to", net, "port", "8080", "proto", "tcp",
        ]);
    }
    assert_eq!(
        to_far(&sb, true, 8080),
        "refused",
        "IPv6 to the far network"
    );
    sb.rampart_ok(&["route", "delete", "reject", "from", &client]);
    assert_eq!(
        to_far(&sb, false, 8080),
        "refused",
        "IPv4 to the far network"
    );
}

/// Publish the far host's port 80 as the router's port 8080 the way Docker does: DNAT
/// in a table of its own (`ip dockerish`, or `ip6 dockerish6`). Returns (the published
/// address, the container's own).
fn publish(sb: &Sandbox, v6: bool) -> (SocketAddr, SocketAddr) {
    let far = sb.far.as_ref().unwrap();
    let (family, table, router, container) = if v6 {
        (
            "ip6",
            "dockerish6",
            sb.srv.addr(true),
            format!("[{}]", far.v6),
        )
    } else {
        ("ip", "dockerish", sb.srv.addr(false), far.v4.to_string())
    };
    let nat = format!(
        "add table {family} {table}; add chain {family} {table} pre {{ type nat hook prerouting priority -100; }}; add rule {family} {table} pre {family} daddr {router} tcp dport 8080 dnat to {container}:80"
    );
    let out = sb.exec(&sb.srv.ns, &["nft", &nat]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        SocketAddr::new(router, 8080),
        SocketAddr::new(far.addr(v6), 80),
    )
}

/// Docker's published ports: a foreign table DNATs the router's port 8080 to a
/// "container" (the far host) on port 80, as `docker run -p 8080:80` does. Route rules
/// match the connection's original destination, so they filter the published port;
/// the container's own port, reached without NAT, is another port.
#[test]
fn route_rules_filter_published_ports() {
    if rampart_sandbox::kernel_unavailable().is_some() {
        let _ = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart")));
        return;
    }
    let mut sb = Sandbox::routed(Path::new(env!("CARGO_BIN_EXE_rampart"))).expect("routed sandbox");
    let far = sb.far.clone().unwrap();
    sb.serve_tcp_in(&far.ns, 80).unwrap();
    let (published, container) = publish(&sb, false);
    let word = |sb: &Sandbox, to: SocketAddr| sb.tcp_to(0, to, WAIT).word();

    sb.rampart_ok(&["--force", "enable"]);
    assert_eq!(word(&sb, published), "accepted", "published, by default");
    sb.rampart_ok(&["route", "deny", "8080/tcp"]);
    assert_eq!(word(&sb, published), "timed out", "route deny 8080/tcp");
    assert_eq!(word(&sb, container), "accepted", "the container's own port");
    let client = sb.clients[0].v4.to_string();
    sb.rampart_ok(&[
        "route", "insert", "1", "allow", "from", &client, "to", "any", "port", "8080", "proto",
        "tcp",
    ]);
    assert_eq!(word(&sb, published), "accepted", "allowed for this source");
    // The rule reads the original destination, as the dry run shows.
    let dry = sb.rampart_ok(&["--dry-run", "reload"]);
    assert!(dry.contains("ct original proto-dst 8080"), "{dry}");
    // The foreign table is rampart's to leave alone.
    let out = sb.exec(&sb.srv.ns, &["nft", "list", "table", "ip", "dockerish"]);
    assert!(out.status.success());

    // IPv6 publishing: the same rules on `ip6`.
    let (published6, container6) = publish(&sb, true);
    assert_eq!(
        word(&sb, published6),
        "timed out",
        "route deny 8080/tcp (v6)"
    );
    assert_eq!(
        word(&sb, container6),
        "accepted",
        "the container's own port (v6)"
    );
    let client6 = sb.clients[0].v6.to_string();
    sb.rampart_ok(&[
        "route", "prepend", "allow", "from", &client6, "to", "any", "port", "8080", "proto", "tcp",
    ]);
    assert_eq!(
        word(&sb, published6),
        "accepted",
        "allowed for this source (v6)"
    );
}
