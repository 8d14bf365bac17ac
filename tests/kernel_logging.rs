//! Logging on real connections: each refused or logged packet makes a record with
//! UFW's meaning and rampart's prefix, read from an nflog group in the server's
//! namespace (`logging to nflog N`), so the host's kernel log and settings are never
//! involved.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rampart_sandbox::nflog::{Nflog, Record};
use rampart_sandbox::{Conn, Sandbox};

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;
const GROUP: &str = "7";

/// How long the reader waits for one more record.
const QUIET: Duration = Duration::from_millis(400);

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// How many of `records` have `prefix` and come from `src`.
fn count(records: &[Record], prefix: &str, src: IpAddr) -> usize {
    records
        .iter()
        .filter(|r| r.prefix == prefix && r.src == Some(src))
        .count()
}

#[test]
fn refused_and_logged_connections_make_records_with_ufws_prefixes() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [22, 23, 80, 81] {
        sb.serve_tcp(port).unwrap();
    }
    let log = Nflog::bind(&sb.srv.ns.clone(), GROUP.parse().unwrap()).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    assert_eq!(
        sb.rampart_ok(&["logging", "to", "nflog", GROUP]).trim(),
        "Logging to nflog group 7"
    );
    let verbose = sb.rampart_ok(&["status", "verbose"]);
    assert!(
        verbose.contains("Logging: on (low), to nflog group 7"),
        "{verbose}"
    );
    sb.rampart_ok(&["allow", "log", "22/tcp"]);
    sb.rampart_ok(&["reject", "log", "81/tcp"]);
    sb.rampart_ok(&["limit", "23/tcp"]);
    let _ = log.records(QUIET);

    for v6 in [V4, V6] {
        let me = sb.clients[A].addr(v6);
        // Default deny, at level low: "[RAMPART BLOCK]" for what matches no rule.
        let c = sb.tcp_timeout(A, v6, 80, Duration::from_millis(300));
        assert!(matches!(c, Conn::TimedOut), "80: {}", c.word());
        let r = log.records(QUIET);
        assert!(count(&r, "[RAMPART BLOCK] ", me) >= 1, "v6={v6}: {r:?}");

        // A rule marked 'log': one record per new connection, none for its other packets.
        let c = sb.tcp(A, v6, 22);
        assert!(c.is_open(), "22: {}", c.word());
        drop(c);
        let r = log.records(QUIET);
        assert_eq!(count(&r, "[RAMPART ALLOW] ", me), 1, "v6={v6}: {r:?}");
        assert_eq!(r.len(), 1, "nothing else is logged at low: {r:?}");

        // A reject rule marked 'log' is a "BLOCK", as in UFW.
        assert!(matches!(sb.tcp(A, v6, 81), Conn::Refused));
        let r = log.records(QUIET);
        assert_eq!(count(&r, "[RAMPART BLOCK] ", me), 1, "v6={v6}: {r:?}");
    }

    // UFW's limit: 5 of 7 pass; each refused one is a "[RAMPART LIMIT BLOCK]".
    let me = sb.clients[A].addr(V4);
    assert_eq!(sb.burst(A, V4, 23, 7), (5, 2, 0));
    let r = log.records(QUIET);
    assert_eq!(count(&r, "[RAMPART LIMIT BLOCK] ", me), 2, "{r:?}");

    // Medium adds an audit record for each new connection, allowed or not.
    sb.rampart_ok(&["logging", "medium"]);
    assert!(sb.tcp(A, V4, 22).is_open());
    let r = log.records(QUIET);
    assert_eq!(count(&r, "[RAMPART AUDIT] ", me), 1, "{r:?}");
    assert_eq!(count(&r, "[RAMPART ALLOW] ", me), 1, "{r:?}");

    // ... and invalid packets: a stray ACK, with the namespace's loose pickup off.
    let out = sb.exec(
        &sb.srv.ns,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    );
    assert!(out.status.success());
    sb.send_stray_ack(A, 22).unwrap();
    let r = log.records(QUIET);
    assert_eq!(count(&r, "[RAMPART AUDIT INVALID] ", me), 1, "{r:?}");

    // Off: nothing, not even for the rules marked 'log'.
    sb.rampart_ok(&["logging", "off"]);
    assert!(matches!(
        sb.tcp_timeout(A, V4, 80, Duration::from_millis(300)),
        Conn::TimedOut
    ));
    assert!(sb.tcp(A, V4, 22).is_open());
    assert!(matches!(sb.tcp(A, V4, 81), Conn::Refused));
    assert_eq!(sb.burst(A, V4, 23, 1), (0, 1, 0), "still over the limit");
    let r = log.records(QUIET);
    assert!(r.is_empty(), "logging off: {r:?}");

    // Back to the kernel log: the group gets nothing more.
    sb.rampart_ok(&["logging", "on"]);
    sb.rampart_ok(&["logging", "to", "kernel"]);
    assert!(sb
        .rampart_ok(&["status", "verbose"])
        .contains("Logging: on (low)\n"));
    assert!(matches!(
        sb.tcp_timeout(A, V4, 80, Duration::from_millis(300)),
        Conn::TimedOut
    ));
    assert!(log.records(QUIET).is_empty());
}
