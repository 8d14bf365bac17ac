//! `rampart apply FILE` on a real kernel: the policy becomes the file's, atomically
//! and keeping limit state; a second apply changes nothing, not even in the kernel;
//! `--check` prints the difference and changes nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rampart_sandbox::Sandbox;

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// A policy file: SSH, a limit of 3 per 30 s on 80, and `extra` rules (TOML).
fn fleet_file(enabled: Option<bool>, extra: &str) -> String {
    let mut text = String::new();
    if let Some(e) = enabled {
        text.push_str(&format!("enabled = {e}\n"));
    }
    for family in ["v4", "v6"] {
        text.push_str(&format!(
            "[[rule]]\naction = \"allow\"\ndirection = \"in\"\nfamily = \"{family}\"\nproto = \"tcp\"\nto = {{ ports = \"22\" }}\n\n\
             [[rule]]\naction = \"limit\"\ndirection = \"in\"\nfamily = \"{family}\"\nproto = \"tcp\"\nto = {{ ports = \"80\" }}\nlimit = {{ rate = \"3/30s\" }}\n\n{}",
            extra.replace("FAMILY", family)
        ));
    }
    text
}

const HTTPS: &str = "[[rule]]\naction = \"allow\"\ndirection = \"in\"\nfamily = \"FAMILY\"\nproto = \"tcp\"\nto = { ports = \"443\" }\n\n";

fn run(sb: &Sandbox, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd: Command = sb.rampart_command(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apply_makes_the_policy_the_files_and_check_only_tells() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [22, 80, 443] {
        sb.serve_tcp(port).unwrap();
    }
    let dir = sb.config_dir().to_path_buf();
    let v1 = dir.join("fleet-v1.toml");
    let v2 = dir.join("fleet-v2.toml");
    std::fs::write(&v1, fleet_file(Some(true), "")).unwrap();
    std::fs::write(&v2, fleet_file(None, HTTPS)).unwrap();
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    // --check: the difference as commands, exit 1, nothing changed.
    let (code, out, err) = run(&sb, &["apply", "--check", v1], None);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "enable\nallow 22/tcp\nlimit 80/tcp rate 3/30s\n");
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: inactive"));
    assert!(
        !sb.ruleset().contains("table inet rampart"),
        "nothing loaded"
    );

    let (code, out, err) = run(&sb, &["apply", v1], None);
    assert_eq!(
        (code, out.as_str()),
        (0, "enable\nallow 22/tcp\nlimit 80/tcp rate 3/30s\n"),
        "{err}"
    );
    for v6 in [V4, V6] {
        assert!(sb.tcp(A, v6, 22).is_open());
        let c = sb.tcp_timeout(A, v6, 443, Duration::from_millis(300));
        assert_eq!(c.word(), "timed out", "v6={v6}");
    }
    // Use up the limit's budget: 3 of 3.
    assert_eq!(sb.burst(A, V4, 80, 3), (3, 0, 0));

    // The file without `enabled` leaves the firewall on; the limit keeps its state.
    let (code, out, err) = run(&sb, &["apply", v2], None);
    assert_eq!((code, out.as_str()), (0, "allow 443/tcp\n"), "{err}");
    assert!(sb.tcp(A, V4, 443).is_open() && sb.tcp(A, V6, 443).is_open());
    assert_eq!(sb.burst(A, V4, 80, 1), (0, 1, 0), "the limit remembers");

    // Again: no change, and the kernel is not touched (its stamp is the same).
    let table = sb.table_json(&sb.srv.ns.clone());
    let (code, out, _) = run(&sb, &["apply", v2], None);
    assert_eq!((code, out.as_str()), (0, "Policy unchanged\n"));
    let (code, out, _) = run(
        &sb,
        &["apply", "--check", "-"],
        Some(&fleet_file(None, HTTPS)),
    );
    assert_eq!((code, out.as_str()), (0, "Policy unchanged\n"));
    assert_eq!(sb.table_json(&sb.srv.ns.clone()), table);

    // Back to v1 in check mode: the rule that would go, nothing done.
    let (code, out, _) = run(&sb, &["apply", "--check", v1], None);
    assert_eq!((code, out.as_str()), (1, "delete allow 443/tcp\n"));
    assert_eq!(sb.table_json(&sb.srv.ns.clone()), table);

    // A bad file: exit 2, one line naming it and the line, nothing changed.
    let policy = std::fs::read(dir.join("policy.toml")).unwrap();
    let (code, out, err) = run(
        &sb,
        &["apply", "-"],
        Some("enabled = true\n[[rule]]\naction = \"allow\"\ndirection = \"sideways\"\n"),
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.starts_with("ERROR: standard input line 4: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(dir.join("policy.toml")).unwrap(), policy);
    assert_eq!(sb.table_json(&sb.srv.ns.clone()), table);

    // From stdin, with `enabled = false`: the firewall goes off.
    let (code, out, _) = run(&sb, &["apply", "-"], Some(&fleet_file(Some(false), "")));
    assert_eq!((code, out.as_str()), (0, "disable\ndelete allow 443/tcp\n"));
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: inactive"));

    // With --confirm, as any change: applied, then rolled back at once.
    let before = std::fs::read(dir.join("policy.toml")).unwrap();
    let (code, _, err) = run(&sb, &["--confirm", "600", "apply", v2], None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&sb, &["--confirm", "600", "apply", v1], None);
    assert_ne!(code, 0, "one change waits at a time: {err}");
    sb.rampart_ok(&["rollback"]);
    assert_eq!(std::fs::read(dir.join("policy.toml")).unwrap(), before);
    let (code, _, err) = run(&sb, &["--confirm", "600", "apply", v1], None);
    assert_eq!(code, 0, "{err}");
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: active"));
    assert!(sb.tcp(A, V4, 22).is_open());
    sb.rampart_ok(&["rollback"]);
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: inactive"));
    assert_eq!(std::fs::read(dir.join("policy.toml")).unwrap(), before);
}
