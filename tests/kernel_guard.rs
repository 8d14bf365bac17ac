//! The lockout guard on a real kernel: rampart runs in an SSH-like session (the
//! environment sshd sets, naming a real established TCP connection from a client
//! namespace to the server's port 22) and refuses changes that would refuse that
//! client's next connection; a session from an allowed client is not bothered.

use std::net::TcpStream;
use std::path::Path;
use std::process::Output;

use rampart_sandbox::{Conn, Sandbox};

const A: usize = 0;
const B: usize = 1;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(2, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// rampart in the SSH session `ssh` (an established connection to port 22).
fn in_session(sb: &Sandbox, ssh: &TcpStream, args: &[&str]) -> Output {
    let (client, server) = (ssh.local_addr().unwrap(), ssh.peer_addr().unwrap());
    let env = format!(
        "{} {} {} {}",
        client.ip(),
        client.port(),
        server.ip(),
        server.port()
    );
    sb.rampart_command(args)
        .env("SSH_CONNECTION", env)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[track_caller]
fn refused(out: &Output, why: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("would lock out the SSH session"), "{err}");
    assert!(err.contains(why), "{err}");
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_session_typed_in_is_protected() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    let Conn::Open(ssh) = sb.tcp(A, false, 22) else {
        panic!("A's session to port 22");
    };
    let files = |sb: &Sandbox| (sb.ruleset(), sb.config_dir().join("policy.toml").exists());

    // enable under default deny with no rule for it.
    let before = files(&sb);
    let out = in_session(&sb, &ssh, &["enable"]);
    refused(
        &out,
        "no rule allows it and the default for incoming is deny",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let a = sb.clients[A].v4;
    assert!(
        err.contains(&format!(
            "'rampart prepend allow from {a} to any port 22 proto tcp'"
        )),
        "{err}"
    );
    assert_eq!(files(&sb), before, "nothing changed");
    // The rule it names, then enable: fine, and the kernel enforces it.
    let a_text = a.to_string();
    let admit_a = [
        "allow", "from", &a_text, "to", "any", "port", "22", "proto", "tcp",
    ];
    let with = |verb: &'static str| [&[verb][..], &admit_a[..]].concat();
    ok(&in_session(&sb, &ssh, &with("prepend")));
    ok(&in_session(&sb, &ssh, &["--force", "enable"]));
    assert!(sb.tcp(A, false, 22).is_open(), "A's next session gets in");
    assert!(
        !sb.tcp(B, false, 22).is_open(),
        "B's does not: default deny"
    );

    // Changes that would refuse A's next connection.
    refused(
        &in_session(&sb, &ssh, &["insert", "1", "deny", "22/tcp"]),
        "rule 1 ('deny 22/tcp') would refuse it",
    );
    refused(&in_session(&sb, &ssh, &with("delete")), "no rule allows it");
    refused(
        &in_session(&sb, &ssh, &["insert", "1", "limit", "22/tcp", "conn", "1"]),
        "allows 1 at a time and 1 are open",
    );
    // Changes that leave it alone pass quietly.
    let b = sb.clients[B].v4.to_string();
    ok(&in_session(&sb, &ssh, &["deny", "from", &b]));
    ok(&in_session(&sb, &ssh, &["default", "reject", "incoming"]));
    ok(&in_session(
        &sb,
        &ssh,
        &["insert", "1", "limit", "22/tcp", "conn", "3"],
    ));
    assert!(sb.tcp(A, false, 22).is_open());
    // --force goes on regardless, and the kernel then refuses A's next session.
    ok(&in_session(
        &sb,
        &ssh,
        &["--force", "insert", "1", "deny", "from", &a_text],
    ));
    assert!(!sb.tcp(A, false, 22).is_open(), "forced: A is locked out");
    drop(ssh);
}

/// A client the policy admits is never asked or refused, and a session to an address
/// this host does not have (the environment of another namespace) is not guarded.
#[test]
fn other_sessions_are_not_bothered() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let Conn::Open(ssh) = sb.tcp(A, false, 22) else {
        panic!("A's session");
    };
    let out = in_session(&sb, &ssh, &["deny", "80/tcp"]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).is_empty());
    // A hand edit that would refuse it is refused at the reload that applies it.
    let path = sb.config_dir().join("policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("action = \"allow\"", "action = \"deny\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    refused(
        &in_session(&sb, &ssh, &["reload"]),
        "rule 1 ('deny 22/tcp') would refuse it",
    );
    std::fs::write(&path, text).unwrap();
    // Over IPv6 the same: a deny of the client's address is refused.
    let Conn::Open(ssh6) = sb.tcp(A, true, 22) else {
        panic!("A's IPv6 session");
    };
    let a6 = sb.clients[A].v6.to_string();
    refused(
        &in_session(&sb, &ssh6, &["prepend", "deny", "from", &a6]),
        &format!("('deny from {a6}') would refuse it"),
    );
    let out = sb
        .rampart_command(&["default", "deny", "incoming"])
        .env("SSH_CONNECTION", "198.19.9.9 5000 198.19.0.1 22")
        .output()
        .unwrap();
    ok(&out);
}
