//! Limits under attack, on a real kernel: tens of thousands of spoofed sources (raw
//! SYNs from a client namespace, bounded in count and time) against limits with their
//! default capacity. What is promised is in README.md ("Limits under attack").

use std::path::Path;
use std::time::Duration;

use rampart::model::DEFAULT_CAPACITY;
use rampart_sandbox::{Conn, Sandbox};

const A: usize = 0;
const ATTACKER: usize = 1;
const C: usize = 2;

/// Spoofed sources per family: more than a limit tracks by default.
const SOURCES: u32 = 20_000;
const WITHIN: Duration = Duration::from_secs(20);

fn sandbox(clients: usize) -> Option<Sandbox> {
    rampart_sandbox::for_test(clients, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

fn flood(sb: &Sandbox, v6: bool, port: u16) {
    let f = sb
        .spoof_syns(ATTACKER, v6, port, 0, SOURCES, WITHIN)
        .expect("send spoofed SYNs");
    assert_eq!(f.sent, SOURCES, "the flood was sent in time");
}

/// `conn 2` with its set full: a source it tracked keeps its own count, a source it
/// could not track is counted in the one shared overflow count (which the flood has
/// used up), so no source ever holds more than 2: the limit never fails open.
#[test]
fn a_full_conn_set_fails_closed() {
    let Some(mut sb) = sandbox(3) else {
        return;
    };
    sb.serve_tcp(3128).unwrap();
    sb.route_spoofed(ATTACKER).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "3128/tcp", "conn", "2"]);
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let known = sb.tcp(A, v6, 3128);
        assert!(known.is_open(), "{family}: A holds one before the flood");
        flood(&sb, v6, 3128);
        let tracked: usize = sb.state_elements("_c").iter().sum();
        let want = DEFAULT_CAPACITY as usize * if v6 { 2 } else { 1 };
        assert!(
            tracked <= want && tracked + 64 >= want,
            "{family}: the sets are full ({tracked} of {want})"
        );
        let second = sb.tcp(A, v6, 3128);
        assert!(
            second.is_open(),
            "{family}: A (tracked) still opens its second"
        );
        assert_eq!(sb.tcp(A, v6, 3128).word(), "refused", "{family}: A's third");
        // C was never seen: no room for it, so the overflow count decides (full).
        let held: Vec<Conn> = (0..4).map(|_| sb.tcp(C, v6, 3128)).collect();
        let open = held.iter().filter(|c| c.is_open()).count();
        assert!(open <= 2, "{family}: C held {open} at once");
        assert_eq!(open, 0, "{family}: the overflow count is the flood's");
        drop((known, second));
    }
}

/// A flood at one rate limit fills that limit's sets only: another limit serves its
/// clients as before; a source the flooded limit tracked keeps its budget; a new source
/// shares the overflow budget (used up by the flood), so it is refused, not let in.
#[test]
fn a_flood_at_one_rate_limit_leaves_the_others_alone() {
    let Some(mut sb) = sandbox(3) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.serve_tcp(22).unwrap();
    sb.route_spoofed(ATTACKER).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "20/30s"]);
    sb.rampart_ok(&["limit", "22/tcp"]);
    sb.rampart_ok(&["limit", "443/tcp", "rate", "100/1h"]);
    sb.serve_tcp(443).unwrap();
    for v6 in [false, true] {
        let family = if v6 { "IPv6" } else { "IPv4" };
        assert_eq!(sb.burst(A, v6, 80, 5), (5, 0, 0), "{family}: A before");
        assert_eq!(sb.burst(A, v6, 443, 30), (30, 0, 0), "{family}: A before");
        flood(&sb, v6, 80);
        flood(&sb, v6, 443);
        assert_eq!(
            sb.burst(C, v6, 22, 7),
            (5, 2, 0),
            "{family}: C on the other limit gets UFW's 5"
        );
        assert_eq!(
            sb.burst(A, v6, 80, 17),
            (15, 2, 0),
            "{family}: A (tracked) gets the rest of its 20"
        );
        let (open, _, _) = sb.burst(A, v6, 443, 80);
        assert!(
            (70..=72).contains(&open),
            "{family}: A's bucket had 70 left: {open}"
        );
        assert_eq!(
            sb.burst(C, v6, 80, 3).0,
            0,
            "{family}: C (untracked) shares the overflow budget the flood used"
        );
        assert_eq!(
            sb.burst(C, v6, 443, 3).0,
            0,
            "{family}: C (untracked) shares the overflow bucket the flood used"
        );
    }
    let keys = sb.state_elements("_k");
    assert!(
        keys.iter().all(|&n| n <= DEFAULT_CAPACITY as usize),
        "no set holds more than its capacity: {keys:?}"
    );
}

/// `capacity N` sets how many sources a limit tracks; it is shown by `show added`.
#[test]
fn capacity_is_configurable_per_rule() {
    let Some(mut sb) = sandbox(3) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.route_spoofed(ATTACKER).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "3/30s", "capacity", "1000"]);
    let added = sb.rampart_ok(&["show", "added"]);
    assert!(added.contains("capacity 1000"), "{added}");
    let status = sb.rampart_ok(&["status"]);
    assert!(status.contains("capacity 1000"), "{status}");
    let f = sb.spoof_syns(ATTACKER, false, 80, 0, 3000, WITHIN).unwrap();
    assert_eq!(f.sent, 3000);
    let keys: usize = sb.state_elements("_k").iter().sum();
    assert!((990..=1000).contains(&keys), "tracked {keys} of 1000");
    assert_eq!(
        sb.burst(C, false, 80, 2).0,
        0,
        "C shares the used-up overflow"
    );
}
