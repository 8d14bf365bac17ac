//! Commit-confirmed on a real kernel: a change made with `--confirm` is rolled back by
//! a detached process unless `rampart confirm` runs in time, also after the terminal
//! it was typed in is gone; `rampart rollback` rolls back at once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rampart_sandbox::Sandbox;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(BIN))
}

fn open(sb: &Sandbox, port: u16) -> bool {
    sb.tcp_timeout(0, false, port, Duration::from_millis(400))
        .is_open()
}

fn policy(sb: &Sandbox) -> Vec<u8> {
    std::fs::read(sb.config_dir().join("policy.toml")).unwrap()
}

fn waiting(sb: &Sandbox) -> bool {
    sb.config_dir().join(".rollback.json").exists()
}

/// Wait up to `within` for `f`.
fn eventually(within: Duration, f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

#[test]
fn an_unconfirmed_change_rolls_back_after_its_terminal_is_gone() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "80/tcp", "comment", "web"]);
    let before = policy(&sb);
    let table = sb.table_json(&sb.srv.ns);
    assert!(open(&sb, 80));
    // Typed in a shell that then hangs up its whole process group, as a terminal that
    // closes (or an SSH session that ends) does.
    let script = format!(
        "ip netns exec {} {BIN} --config-dir {} --force --confirm 3 delete allow 80/tcp comment web; sleep 0.5; kill -HUP 0",
        sb.srv.ns,
        sb.config_dir().display()
    );
    let out = Command::new("setsid")
        .args(["--wait", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Rule deleted"), "{stdout}");
    assert!(stdout.contains("rolls back at"), "{stdout}");
    assert!(!open(&sb, 80), "the change is in force");
    let status = sb.rampart(&["status"]);
    let warn = String::from_utf8_lossy(&status.stderr);
    assert!(warn.contains("waiting for confirmation"), "{warn}");
    assert!(
        eventually(Duration::from_secs(10), || open(&sb, 80)),
        "the previous verdict is back"
    );
    // The kernel is restored first, then the file: the rollback may still be writing.
    eventually(Duration::from_secs(5), || policy(&sb) == before);
    assert_eq!(
        policy(&sb),
        before,
        "the policy file is restored byte for byte"
    );
    assert_eq!(sb.table_json(&sb.srv.ns), table, "the same table");
    assert!(!waiting(&sb));
    let log = std::fs::read_to_string(sb.config_dir().join("rollback.log")).unwrap();
    assert!(log.contains("not confirmed in time; rolled back"), "{log}");
}

#[test]
fn a_confirmed_change_stays_and_rollback_is_at_once() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.serve_tcp(81).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "80/tcp"]);
    let out = sb.rampart_ok(&["--confirm", "2", "deny", "80/tcp"]);
    assert!(out.contains("Rule updated"), "{out}");
    assert!(!open(&sb, 80));
    let out = sb.rampart_ok(&["confirm"]);
    assert!(
        out.contains("Change confirmed: 'rampart deny 80/tcp' stays"),
        "{out}"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(!open(&sb, 80), "a confirmed change stays");
    assert!(String::from_utf8_lossy(&policy(&sb)).contains("deny"));

    let before = policy(&sb);
    sb.rampart_ok(&["--confirm", "600", "allow", "81/tcp"]);
    assert!(open(&sb, 81));
    // One change waits at a time.
    let again = sb.rampart(&["--confirm", "600", "allow", "82/tcp"]);
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already waiting for confirmation"), "{err}");
    // A plain change meanwhile is told it rolls back too.
    let plain = sb.rampart(&["allow", "83/tcp"]);
    assert!(String::from_utf8_lossy(&plain.stderr).contains("rolls back with it"));
    let out = sb.rampart_ok(&["rollback"]);
    assert!(
        out.contains("Rolled back: the policy from before 'rampart allow 81/tcp'"),
        "{out}"
    );
    assert!(!open(&sb, 81), "rolled back at once");
    assert_eq!(policy(&sb), before);
    assert!(!waiting(&sb));
    let none = sb.rampart(&["rollback"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing to roll back"));
    let bad = sb.rampart(&["--confirm", "5", "status"]);
    assert_eq!(bad.status.code(), Some(1));
    let bad = sb.rampart(&["--confirm", "0", "allow", "84/tcp"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// A change never confirmed because the machine went down is rolled back at boot.
#[test]
fn boot_rolls_back_an_unconfirmed_change() {
    let Some(sb) = sandbox() else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    let before = policy(&sb);
    sb.rampart_ok(&["--confirm", "600", "deny", "22/tcp"]);
    // The reboot: the table and the waiting process are gone.
    sb.rampart_ok(&["unload"]);
    let out = sb.rampart(&["boot"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was never confirmed: rolled back"), "{err}");
    assert_eq!(policy(&sb), before);
    assert!(!waiting(&sb));
}
