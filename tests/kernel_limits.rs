//! Limits on a real kernel: real connections between namespaces, counted.
//! The guarantees tested here are stated in README.md ("Limits: what they promise").

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rampart_sandbox::{Conn, Sandbox, Udp};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const V4: bool = false;
const V6: bool = true;

fn sandbox(clients: usize) -> Option<Sandbox> {
    rampart_sandbox::for_test(clients, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// Try to connect until accepted or `within` has passed (a closed connection may
/// still count while it is closing; see README).
fn connect_within(sb: &Sandbox, c: usize, v6: bool, port: u16, within: Duration) -> Conn {
    let start = Instant::now();
    loop {
        let conn = sb.tcp(c, v6, port);
        if conn.is_open() || start.elapsed() >= within {
            return conn;
        }
        sleep(Duration::from_millis(50));
    }
}

/// One connection at a time to a proxy, from anywhere, IPv4 and IPv6 together.
#[test]
fn conn_1_per_any_counts_both_families() {
    let Some(mut sb) = sandbox(3) else {
        return;
    };
    sb.serve_tcp(3128).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    let out = sb.rampart_ok(&["limit", "3128/tcp", "conn", "1", "per", "any"]);
    assert_eq!(out, "Rule added\nRule added (v6)\n");
    let held = sb.tcp(A, V4, 3128);
    assert!(held.is_open(), "A gets the one slot");
    assert_eq!(
        sb.tcp(B, V4, 3128).word(),
        "refused",
        "B (IPv4) is refused with a reset"
    );
    assert_eq!(
        sb.tcp(C, V6, 3128).word(),
        "refused",
        "C (IPv6) shares the count"
    );
    drop(held);
    let again = connect_within(&sb, B, V4, 3128, Duration::from_secs(1));
    assert!(
        again.is_open(),
        "B gets in within 1 s of A closing: {again:?}"
    );
    assert_eq!(
        sb.tcp(C, V6, 3128).word(),
        "refused",
        "now B holds the slot"
    );
    drop(again);

    // over drop: the attempt over the limit times out instead.
    sb.rampart_ok(&[
        "limit", "3128/tcp", "conn", "1", "per", "any", "over", "drop",
    ]);
    let held = connect_within(&sb, A, V4, 3128, Duration::from_secs(1));
    assert!(held.is_open());
    assert_eq!(sb.tcp(B, V4, 3128).word(), "timed out", "over drop");
    assert_eq!(sb.tcp(C, V6, 3128).word(), "timed out", "over drop, IPv6");
}

/// Per-source connection caps: A's third connection is refused, B still opens two.
#[test]
fn conn_2_per_source() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(8000).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "8000/tcp", "conn", "2"]);
    let a1 = sb.tcp(A, V4, 8000);
    let a2 = sb.tcp(A, V4, 8000);
    assert!(a1.is_open() && a2.is_open(), "A opens two");
    assert_eq!(sb.tcp(A, V4, 8000).word(), "refused", "A's third");
    let b1 = sb.tcp(B, V4, 8000);
    let b2 = sb.tcp(B, V4, 8000);
    assert!(b1.is_open() && b2.is_open(), "B opens two of its own");
    assert_eq!(sb.tcp(B, V4, 8000).word(), "refused", "B's third");
    // IPv6 sources are counted by their own (per /64) key.
    let a6 = sb.tcp(A, V6, 8000);
    assert!(a6.is_open(), "A over IPv6 is another source");
}

/// rate 20/30s: exactly 20 of 25 rapid connections pass; B is unaffected; with
/// `per any`, A and B share one budget.
#[test]
fn rate_20_per_30s() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "20/30s"]);
    assert_eq!(
        sb.burst(A, V4, 80, 25),
        (20, 5, 0),
        "A: 20 accepted, 5 refused"
    );
    assert_eq!(sb.burst(B, V4, 80, 3), (3, 0, 0), "B has its own budget");
    assert_eq!(
        sb.burst(A, V6, 80, 22),
        (20, 2, 0),
        "IPv6 /64 has its own budget"
    );

    sb.rampart_ok(&["--force", "delete", "limit", "80/tcp", "rate", "20/30s"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "20/30s", "per", "any"]);
    assert_eq!(sb.burst(A, V4, 80, 15), (15, 0, 0));
    assert_eq!(
        sb.burst(B, V6, 80, 8),
        (5, 3, 0),
        "B (over IPv6) gets what A left"
    );
}

/// UFW's plain limit, as measured against ufw 0.36.2: 8 rapid attempts → 5 pass.
/// Unlike UFW, IPv6 attempts over the limit are refused with a reset, not left hanging,
/// and each limit rule has its own count.
#[test]
fn plain_limit_matches_ufw() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "22/tcp"]);
    sb.rampart_ok(&["limit", "80/tcp"]);
    assert_eq!(sb.burst(A, V4, 22, 8), (5, 3, 0));
    assert_eq!(
        sb.burst(A, V4, 80, 2),
        (2, 0, 0),
        "port 80 has its own count"
    );
    assert_eq!(
        sb.burst(A, V6, 22, 8),
        (5, 3, 0),
        "IPv6: refused, not timed out"
    );
}

/// One rule limits every port but an exempt range, without splitting ranges by hand.
#[test]
fn except_exempts_a_range() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    for port in [29999, 30000, 30005, 30006] {
        sb.serve_tcp(port).unwrap();
    }
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&[
        "limit",
        "1:65535/tcp",
        "rate",
        "5/30s",
        "except",
        "30000:30005",
    ]);
    sb.rampart_ok(&["allow", "30000:30005/tcp"]);
    assert_eq!(sb.burst(A, V4, 30000, 8), (8, 0, 0), "30000 never limited");
    assert_eq!(sb.burst(A, V4, 30005, 8), (8, 0, 0), "30005 never limited");
    // 29999 and 30006 are limited, by one budget of 5.
    let low = sb.burst(A, V4, 29999, 3);
    let high = sb.burst(A, V4, 30006, 3);
    assert_eq!(low.0 + high.0, 5, "{low:?} {high:?}");
    assert_eq!(low.1 + high.1, 1, "{low:?} {high:?}");
}

/// `then continue` lets later rules decide; plain limit accepts first (UFW), and the
/// deny added after it is reported as shadowed.
#[test]
fn limit_then_continue_versus_plain() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    let a4 = sb.clients[A].v4.to_string();
    sb.rampart_ok(&["limit", "22/tcp", "then", "continue"]);
    sb.rampart_ok(&["deny", "from", &a4, "to", "any", "port", "22"]);
    // (not `allow 22/tcp`: that has the limit's match, so it would replace it, as in UFW)
    sb.rampart_ok(&["allow", "22"]);
    assert_eq!(
        sb.tcp(A, V4, 22).word(),
        "timed out",
        "A is stopped by the deny"
    );
    assert!(sb.tcp(B, V4, 22).is_open(), "B gets in");

    sb.rampart_ok(&["--force", "reset"]);
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "22/tcp"]);
    let out = sb.rampart(&[
        "deny", "from", &a4, "to", "any", "port", "22", "proto", "tcp",
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN: ") && err.contains("shadowed by rule 1"),
        "warning expected, got {err:?}"
    );
    assert!(
        sb.tcp(A, V4, 22).is_open(),
        "UFW's meaning: the limit accepts A first"
    );
}

/// UDP: each new flow counts as a new connection.
#[test]
fn udp_rate_limit() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_udp(53).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "53/udp", "rate", "10/1s"]);
    let start = Instant::now();
    let results: Vec<Udp> = (0..15).map(|_| sb.udp(A, V4, 53)).collect();
    let replies = results.iter().filter(|r| **r == Udp::Reply).count();
    // Refused flows get ICMP port-unreachable, which the kernel itself rate-limits, so
    // some of them may show as timeouts: count the replies only.
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(replies, 10, "{results:?}");
    } else {
        assert!(replies >= 10, "{results:?}");
    }
    // After the window, flows pass again.
    sleep(Duration::from_millis(1100));
    assert_eq!(sb.udp(A, V4, 53), Udp::Reply);
}

/// Limit state survives reload and edits of unrelated rules.
#[test]
fn limit_state_survives_reload() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(443).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "443/tcp", "rate", "3/30s"]);
    assert_eq!(sb.burst(A, V4, 443, 4), (3, 1, 0));
    sb.rampart_ok(&["reload"]);
    assert_eq!(
        sb.tcp(A, V4, 443).word(),
        "refused",
        "still at budget after reload"
    );
    sb.rampart_ok(&["allow", "9999/tcp"]);
    sb.rampart_ok(&["insert", "1", "deny", "from", "198.18.0.250"]);
    sb.rampart_ok(&["default", "reject", "incoming"]);
    assert_eq!(
        sb.tcp(A, V4, 443).word(),
        "refused",
        "still at budget after edits"
    );
    assert!(sb.tcp(B, V4, 443).is_open(), "B unaffected");
    // Changing the limit itself starts a new count.
    sb.rampart_ok(&["limit", "443/tcp", "rate", "4/30s"]);
    assert!(
        sb.tcp(A, V4, 443).is_open(),
        "a changed limit has fresh state"
    );
}

/// Loopback is accepted before any rule: a limit never applies to local connections.
#[test]
fn loopback_is_never_limited() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(8003).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "8003/tcp", "rate", "1/30s"]);
    let srv = sb.srv.ns.clone();
    for addr in ["127.0.0.1:8003", "[::1]:8003"] {
        let dst: std::net::SocketAddr = addr.parse().unwrap();
        let open = (0..6)
            .filter(|_| sb.tcp_in(&srv, dst, Duration::from_millis(800)).is_open())
            .count();
        assert_eq!(open, 6, "{addr}");
    }
    assert_eq!(sb.burst(A, V4, 8003, 3).0, 1, "a client is limited");
}

/// A refused attempt takes no slot: a client that keeps trying gets in as soon as its
/// oldest accepted connection is T old (UFW's `recent` counts the attempts too).
#[test]
fn refused_attempts_do_not_extend_the_block() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(8004).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "8004/tcp", "rate", "2/2s"]);
    let start = Instant::now();
    assert_eq!(sb.burst(A, V4, 8004, 2), (2, 0, 0));
    // Keep trying through the window: all refused.
    while start.elapsed() < Duration::from_millis(1600) {
        assert_eq!(sb.tcp(A, V4, 8004).word(), "refused");
        sleep(Duration::from_millis(100));
    }
    sleep(Duration::from_millis(2200).saturating_sub(start.elapsed()));
    assert!(
        sb.tcp(A, V4, 8004).is_open(),
        "back in after T despite the attempts"
    );
}

/// `per /M` counts a subnet together (the clients share 198.18.0.0/24), `per /M,/N` the
/// IPv6 mask too, and by default IPv6 sources are counted per /64.
#[test]
fn per_masks_count_networks_together() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    for port in [8005, 8006, 8007] {
        sb.serve_tcp(port).unwrap();
    }
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "8005/tcp", "rate", "3/30s", "per", "/24"]);
    sb.rampart_ok(&["limit", "8006/tcp", "rate", "3/30s", "per", "/32,/120"]);
    sb.rampart_ok(&["limit", "8007/tcp", "rate", "3/30s"]);
    // IPv4 per /24: A and B share 3.
    assert_eq!(sb.burst(A, V4, 8005, 2).0, 2);
    assert_eq!(sb.burst(B, V4, 8005, 3).0, 1, "the /24's third");
    // per /32,/120: IPv4 per address, IPv6 per /120 (A and B share).
    assert_eq!(sb.burst(A, V4, 8006, 3).0, 3);
    assert_eq!(sb.burst(B, V4, 8006, 3).0, 3, "another IPv4 address");
    assert_eq!(sb.burst(A, V6, 8006, 2).0, 2);
    assert_eq!(sb.burst(B, V6, 8006, 3).0, 1, "the /120's third");
    // Default: IPv6 per /64 (A and B are in 2001:db8::/64), IPv4 per address.
    assert_eq!(sb.burst(A, V6, 8007, 2).0, 2);
    assert_eq!(sb.burst(B, V6, 8007, 3).0, 1, "one /64, one count");
    assert_eq!(sb.burst(B, V4, 8007, 3).0, 3);
}

/// Above 20 per window a rate is a token bucket per key: it holds N and refills N per
/// T, so a burst gets N (plus what refilled while it ran), and B has its own bucket.
#[test]
fn rate_over_20_is_a_token_bucket() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "50/1h"]);
    let start = Instant::now();
    let (open, refused, other) = sb.burst(A, V4, 80, 60);
    // 50 per hour refills one every 72 s: none within a burst that takes seconds.
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!((open, refused, other), (50, 10, 0), "A: the bucket's 50");
    assert_eq!(sb.burst(B, V4, 80, 5), (5, 0, 0), "B has its own bucket");
    assert_eq!(sb.burst(A, V6, 80, 55), (50, 5, 0), "IPv6 /64 has its own");
    let dry = sb.rampart_ok(&["--dry-run", "reload"]);
    assert!(dry.contains("limit rate over"), "{dry}");
}
