//! Kernel tests: real nftables in throwaway namespaces, real TCP and UDP connections.
//! Each test builds its own sandbox (unique names), removed on drop even on failure.

use std::path::Path;

use rampart_sandbox::{still_works, Conn, Sandbox, Udp};

const A: usize = 0;
const B: usize = 1;
const V4: bool = false;
const V6: bool = true;

fn sandbox(clients: usize) -> Option<Sandbox> {
    rampart_sandbox::for_test(clients, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

fn assert_conn(c: Conn, want: &str, what: &str) -> Conn {
    assert_eq!(c.word(), want, "{what}");
    c
}

/// Docs: README "Guarantees" — default deny; allow opens; delete closes again.
#[test]
fn default_deny_then_allow_then_delete() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(8080).unwrap();
    sb.serve_udp(8080).unwrap();
    // No firewall yet: open.
    assert_conn(sb.tcp(A, V4, 8080), "accepted", "before enable");
    sb.rampart_ok(&["--force", "enable"]);
    for v6 in [V4, V6] {
        assert_conn(sb.tcp(A, v6, 8080), "timed out", "default deny");
        assert_eq!(sb.udp(A, v6, 8080), Udp::TimedOut, "default deny udp");
    }
    let out = sb.rampart_ok(&["allow", "8080/tcp"]);
    assert_eq!(out, "Rule added\nRule added (v6)\n");
    for v6 in [V4, V6] {
        assert_conn(sb.tcp(A, v6, 8080), "accepted", "after allow");
        assert_eq!(sb.udp(A, v6, 8080), Udp::TimedOut, "allow was tcp only");
    }
    let out = sb.rampart_ok(&["--force", "delete", "allow", "8080/tcp"]);
    assert_eq!(out, "Rule deleted\nRule deleted (v6)\n");
    for v6 in [V4, V6] {
        assert_conn(sb.tcp(A, v6, 8080), "timed out", "after delete");
    }
    // Allow without protocol opens TCP and UDP; delete by number removes one family.
    sb.rampart_ok(&["allow", "8080"]);
    assert_eq!(sb.udp(A, V4, 8080), Udp::Reply);
    assert_eq!(sb.udp(A, V6, 8080), Udp::Reply);
    assert_conn(sb.tcp(A, V6, 8080), "accepted", "allow any proto");
    sb.rampart_ok(&["--force", "delete", "2"]);
    assert_eq!(sb.udp(A, V6, 8080), Udp::TimedOut, "v6 copy deleted");
    assert_eq!(sb.udp(A, V4, 8080), Udp::Reply, "v4 copy kept");
}

/// deny from A blocks A but not B; reject refuses with a reset while deny times out.
#[test]
fn deny_from_one_client_and_reject_versus_deny() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.serve_udp(53).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    let a4 = sb.clients[A].v4.to_string();
    let a6 = sb.clients[A].v6.to_string();
    sb.rampart_ok(&["deny", "from", &a4]);
    sb.rampart_ok(&["deny", "from", &a6]);
    sb.rampart_ok(&["allow", "80/tcp"]);
    sb.rampart_ok(&["allow", "53/udp"]);
    for v6 in [V4, V6] {
        assert_conn(sb.tcp(A, v6, 80), "timed out", "A denied");
        assert_conn(sb.tcp(B, v6, 80), "accepted", "B allowed");
        assert_eq!(sb.udp(A, v6, 53), Udp::TimedOut);
        assert_eq!(sb.udp(B, v6, 53), Udp::Reply);
    }
    // Turn A's deny into reject: same match, new action → "Rule updated".
    let out = sb.rampart_ok(&["reject", "from", &a4]);
    assert_eq!(out, "Rule updated\n");
    sb.rampart_ok(&["reject", "from", &a6]);
    for v6 in [V4, V6] {
        assert_conn(sb.tcp(A, v6, 80), "refused", "A rejected with reset");
        assert_eq!(sb.udp(A, v6, 53), Udp::Refused, "A rejected with ICMP");
        assert_conn(sb.tcp(B, v6, 80), "accepted", "B still allowed");
    }
}

/// allow proto udp from A to any port 5353: works for UDP, and only for A.
#[test]
fn udp_rule_for_one_source() {
    let Some(mut sb) = sandbox(2) else {
        return;
    };
    sb.serve_udp(5353).unwrap();
    sb.serve_tcp(5353).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    let a4 = sb.clients[A].v4.to_string();
    let out = sb.rampart_ok(&[
        "allow", "proto", "udp", "from", &a4, "to", "any", "port", "5353",
    ]);
    assert_eq!(out, "Rule added\n");
    assert_eq!(sb.udp(A, V4, 5353), Udp::Reply);
    assert_eq!(sb.udp(B, V4, 5353), Udp::TimedOut);
    assert_eq!(
        sb.udp(A, V6, 5353),
        Udp::TimedOut,
        "an IPv4 rule says nothing of IPv6"
    );
    assert_conn(
        sb.tcp(A, V4, 5353),
        "timed out",
        "udp rule does not open tcp",
    );
    let a6 = sb.clients[A].v6.to_string();
    sb.rampart_ok(&[
        "allow", "from", &a6, "to", "any", "port", "5353", "proto", "udp",
    ]);
    assert_eq!(sb.udp(A, V6, 5353), Udp::Reply);
    assert_eq!(sb.udp(B, V6, 5353), Udp::TimedOut);
}

/// An established connection survives reload, added rules, and deletion of its rule.
#[test]
fn established_connection_survives_changes() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let Conn::Open(mut s4) = sb.tcp(A, V4, 22) else {
        panic!("ssh v4 not accepted")
    };
    let Conn::Open(mut s6) = sb.tcp(A, V6, 22) else {
        panic!("ssh v6 not accepted")
    };
    sb.rampart_ok(&["reload"]);
    assert!(still_works(&mut s4) && still_works(&mut s6), "after reload");
    for port in 1000..1010 {
        sb.rampart_ok(&["allow", &format!("{port}/tcp")]);
    }
    sb.rampart_ok(&["default", "reject", "incoming"]);
    assert!(
        still_works(&mut s4) && still_works(&mut s6),
        "after adding rules"
    );
    sb.rampart_ok(&["--force", "delete", "allow", "22/tcp"]);
    assert!(
        still_works(&mut s4) && still_works(&mut s6),
        "after deleting its rule"
    );
    // A new connection is now refused (default reject).
    assert_conn(sb.tcp(A, V4, 22), "refused", "new connection after delete");
}

/// disable removes rampart's table; foreign tables (`ip`, and `inet` like rampart's
/// own) are intact through everything.
#[test]
fn foreign_tables_are_never_touched() {
    let Some(sb) = sandbox(1) else {
        return;
    };
    let out = sb.exec(
        &sb.srv.ns,
        &[
            "nft",
            "add table ip keepme; add chain ip keepme c { type filter hook input priority 10; policy accept; }; add rule ip keepme c ip saddr 198.19.0.1 counter drop; add table inet keepme; add set inet keepme s { type ipv4_addr; elements = { 198.19.0.2 } }; add chain inet keepme c { type filter hook input priority 20; policy accept; }; add rule inet keepme c ip saddr @s counter drop",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keepme = || {
        ["ip", "inet"]
            .map(|family| {
                String::from_utf8_lossy(
                    &sb.exec(&sb.srv.ns, &["nft", "list", "table", family, "keepme"])
                        .stdout,
                )
                .into_owned()
            })
            .join("")
    };
    let foreign = keepme();
    assert!(foreign.contains("ip saddr 198.19.0.1 counter"), "{foreign}");
    assert!(foreign.contains("ip saddr @s counter"), "{foreign}");
    let has_rampart = || sb.ruleset().contains("table inet rampart");
    sb.rampart_ok(&["--force", "enable"]);
    assert!(has_rampart());
    assert_eq!(keepme(), foreign, "after enable");
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&["reload"]);
    assert_eq!(keepme(), foreign, "after reload");
    assert_eq!(
        sb.rampart_ok(&["disable"]),
        "Firewall stopped\n",
        "no systemd here"
    );
    assert!(!has_rampart(), "disable removes rampart's table");
    assert_eq!(keepme(), foreign, "after disable");
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["--force", "reset"]);
    assert!(!has_rampart(), "reset disables");
    assert_eq!(keepme(), foreign, "after reset");
    let status = sb.rampart_ok(&["status"]);
    assert_eq!(status, "Status: inactive\n");
}

/// --dry-run changes nothing on disk or in the kernel, whatever the command.
#[test]
fn dry_run_changes_nothing() {
    let Some(sb) = sandbox(1) else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(sb.config_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        (files, sb.ruleset())
    };
    let before = snapshot();
    for cmd in [
        vec!["allow", "80/tcp"],
        vec!["deny", "from", "198.18.0.11"],
        vec!["insert", "1", "reject", "23"],
        vec!["delete", "1"],
        vec!["delete", "allow", "22/tcp"],
        vec!["default", "allow", "incoming"],
        vec!["logging", "off"],
        vec!["disable"],
        vec!["reload"],
        vec!["reset"],
        vec!["enable"],
    ] {
        let mut args = vec!["--dry-run"];
        args.extend(cmd.iter());
        let out = sb.rampart(&args);
        assert!(out.status.success(), "dry run of {cmd:?} failed");
        assert_eq!(snapshot(), before, "dry run of {cmd:?} changed something");
    }
    // A dry run prints the ruleset that would be applied.
    let out = sb.rampart_ok(&["--dry-run", "allow", "80/tcp"]);
    assert!(out.contains("table inet rampart {"), "{out}");
    assert!(out.contains("tcp . 80 : accept"), "{out}");
    assert!(
        out.ends_with("Rules updated\nRules updated (v6)\n"),
        "{out}"
    );
}

/// UFW's before.rules come first: echo requests are answered under default deny and
/// even for a source the user's rules deny, over IPv4 and IPv6 (whose neighbour
/// discovery must pass too), while TCP from that source stays refused.
#[test]
fn ping_passes_before_user_rules() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "80/tcp"]);
    let client = sb.clients[A].ns.clone();
    let ping = |v6: bool| {
        let addr = sb.srv.addr(v6).to_string();
        let family = if v6 { "-6" } else { "-4" };
        sb.exec(&client, &["ping", family, "-c", "1", "-W", "2", &addr])
            .status
            .success()
    };
    assert!(ping(V4), "IPv4 echo under default deny");
    assert!(ping(V6), "IPv6 echo under default deny");
    let src4 = sb.clients[A].addr(V4).to_string();
    let src6 = sb.clients[A].addr(V6).to_string();
    sb.rampart_ok(&["insert", "1", "deny", "from", &src4]);
    // (positions as in UFW: 3 is the IPv6 copy of the allow, now third)
    sb.rampart_ok(&["insert", "3", "deny", "from", &src6]);
    assert_conn(sb.tcp(A, V4, 80), "timed out", "TCP from the denied source");
    assert!(ping(V4), "IPv4 echo from a denied source");
    assert!(ping(V6), "IPv6 echo from a denied source");
}

/// UFW's before rules: a DHCP server's answer (UDP 67 -> 68) reaches the client under
/// default deny, and a TCP segment conntrack calls invalid is dropped before any rule
/// (here a stray ACK, with loose pickup off: the server's stack never sees it).
#[test]
fn dhcp_answers_pass_and_invalid_packets_are_dropped() {
    let Some(mut sb) = sandbox(1) else {
        return;
    };
    sb.serve_udp(68).unwrap();
    sb.serve_tcp(7100).unwrap();
    // Without rampart, the server's stack answers a stray ACK with a reset.
    let before = sb.server_tcp_resets();
    sb.send_stray_ack(A, 7100).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(sb.server_tcp_resets(), before + 1, "the stack answers");
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "7100/tcp"]);
    assert_eq!(sb.udp_from(A, V4, 68, 67), Udp::Reply, "DHCP answer");
    assert_eq!(
        sb.udp_from(A, V4, 68, 68),
        Udp::TimedOut,
        "not from port 67"
    );
    let out = sb.exec(
        &sb.srv.ns,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = sb.server_tcp_resets();
    sb.send_stray_ack(A, 7100).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(sb.server_tcp_resets(), before, "dropped as invalid");
    assert!(sb.tcp(A, V4, 7100).is_open(), "the port itself is open");
}
