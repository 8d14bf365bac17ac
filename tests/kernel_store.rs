//! The config directory and the kernel kept in agreement: hand edits, a tampered or
//! torn cache, invalid files, the lock, file modes, backups. Real nftables in
//! throwaway namespaces. Docs: README "Editing the policy by hand", "The lock",
//! "Files". Exit statuses: 2 for the config directory, 3 for the kernel.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rampart_sandbox::Sandbox;

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;

fn sandbox(clients: usize) -> Option<Sandbox> {
    rampart_sandbox::for_test(clients, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

fn policy_text(sb: &Sandbox) -> String {
    fs::read_to_string(sb.config_dir().join("policy.toml")).unwrap()
}

fn write_policy(sb: &Sandbox, text: &str) {
    fs::write(sb.config_dir().join("policy.toml"), text).unwrap();
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Defect 2: a hand edit is applied whole by the next change, and until then `status`
/// shows what the kernel enforces, with a warning.
#[test]
fn a_hand_edit_is_applied_whole_by_the_next_change() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(8080).unwrap();
    sb.serve_tcp(6000).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "8080"]);
    assert!(sb.tcp(A, V4, 8080).is_open());
    let text = policy_text(&sb);
    write_policy(
        &sb,
        &text.replace("action = \"allow\"", "action = \"deny\""),
    );

    let status = sb.rampart(&["status"]);
    assert!(status.status.success());
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("8080                       ALLOW"),
        "{shown}"
    );
    assert!(stderr(&status).contains("was changed since it was applied"));
    assert!(sb.tcp(A, V4, 8080).is_open(), "not applied yet");

    sb.rampart_ok(&["allow", "6000/tcp"]);
    for v6 in [V4, V6] {
        assert_eq!(
            sb.tcp(A, v6, 8080).word(),
            "timed out",
            "the edit is applied"
        );
        assert!(sb.tcp(A, v6, 6000).is_open());
    }
    let status = sb.rampart(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("8080                       DENY"));
    assert!(!stderr(&status).contains("WARN"), "{}", stderr(&status));
}

/// Defect 3: the cache can make commands fast but never change what the policy says.
#[test]
fn a_tampered_or_torn_cache_changes_nothing() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(22).unwrap();
    sb.serve_tcp(23).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let cache = sb.config_dir().join(".policy.cache.json");

    // "22" -> "23" in the cache: SSH stays open, 23 stays closed, even after reload.
    let text = fs::read_to_string(&cache).unwrap();
    fs::write(&cache, text.replace("\"22\"", "\"23\"")).unwrap();
    for cmd in [&["status"][..], &["reload"], &["allow", "80/tcp"]] {
        sb.rampart_ok(cmd);
        assert!(sb.tcp(A, V4, 22).is_open(), "after {cmd:?}");
        assert_eq!(sb.tcp(A, V4, 23).word(), "timed out", "after {cmd:?}");
    }
    assert!(policy_text(&sb).contains("ports = \"22\""));
    assert!(!policy_text(&sb).contains("\"23\""));

    // A cache torn at a line end: every rule is still read, and kept by the next write.
    for port in 1001..=1008 {
        sb.rampart_ok(&["allow", &format!("{port}/tcp")]);
    }
    let rules = |sb: &Sandbox| policy_text(sb).matches("[[rule]]").count();
    let before = rules(&sb);
    assert_eq!(before, 20);
    let text = fs::read_to_string(&cache).unwrap();
    let cut: Vec<&str> = text.lines().take(6).collect();
    fs::write(&cache, cut.join("\n")).unwrap();
    let status = sb.rampart_ok(&["status", "numbered"]);
    assert!(status.contains("[20]"), "{status}");
    sb.rampart_ok(&["allow", "7000/tcp"]);
    assert_eq!(rules(&sb), before + 2, "no rule lost");

    // "enabled": false in the cache does not turn the firewall off.
    let text = fs::read_to_string(&cache).unwrap();
    fs::write(
        &cache,
        text.replacen("\"enabled\":true", "\"enabled\":false", 1),
    )
    .unwrap();
    sb.rampart_ok(&["allow", "7001/tcp"]);
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: active"));
    assert_eq!(sb.tcp(A, V4, 23).word(), "timed out", "still enforcing");
}

/// Defect 4: a hand edit that breaks a bound or a rule is refused by every command with
/// the file, the line and the problem, and nothing is applied.
#[test]
fn invalid_hand_edits_are_refused_with_file_and_line() {
    let Some(sb) = sandbox(0) else { return };
    sb.rampart_ok(&["--force", "enable"]);
    for cmd in [
        &["allow", "22/tcp"][..],
        &["limit", "80/tcp", "rate", "20/30s"],
        &["limit", "3128/tcp", "conn", "2"],
        &["allow", "from", "198.18.0.5"],
        &["allow", "in", "on", "eth0", "to", "any", "port", "53"],
    ] {
        sb.rampart_ok(cmd);
    }
    let good = policy_text(&sb);
    let kernel = sb.table_json(&sb.srv.ns);
    let long = "x".repeat(40);
    let edits: Vec<(&str, String, &str)> = vec![
        (
            "ports = \"22\"",
            "ports = \"2000:1000\"".into(),
            "bad port '2000:1000'",
        ),
        ("rate = \"20/30s\"", "rate = \"0/30s\"".into(), "bad rate"),
        ("rate = \"20/30s\"", "rate = \"300/30s\"".into(), "bad rate"),
        (
            "rate = \"20/30s\"",
            "rate = \"5000/30s\"".into(),
            "bad rate",
        ),
        ("conn = 2", "conn = 0".into(), "conn 0 is out of bounds"),
        (
            "addr = \"198.18.0.5/32\"",
            "addr = \"2001:db8::5/128\"".into(),
            "not of the rule's family",
        ),
        (
            "iface = \"eth0\"",
            format!("iface = \"{long}\""),
            "too long",
        ),
        (
            "addr = \"198.18.0.5/32\"",
            "address = \"198.18.0.5/32\"".into(),
            "unknown field `address`",
        ),
        (
            "iface = \"eth0\"",
            "interface = \"eth0\"".into(),
            "unknown field `interface`",
        ),
        (
            "action = \"allow\"",
            "action = \"permit\"".into(),
            "unknown variant `permit`",
        ),
    ];
    for (from, to, problem) in &edits {
        assert!(good.contains(from), "{from}");
        let bad = good.replacen(from, to, 1);
        write_policy(&sb, &bad);
        let edited_line = bad.lines().position(|l| l.contains(to.as_str())).unwrap() + 1;
        let header = bad
            .lines()
            .take(edited_line)
            .filter(|l| *l == "[[rule]]")
            .count();
        let header_line = bad
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == "[[rule]]")
            .nth(header - 1)
            .unwrap()
            .0
            + 1;
        for cmd in [&["status"][..], &["reload"], &["allow", "7000/tcp"]] {
            let out = sb.rampart(cmd);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{to}: {cmd:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            let path = sb.config_dir().join("policy.toml");
            let at = [edited_line, header_line].map(|l| format!("{} line {l}:", path.display()));
            assert!(
                at.iter().any(|a| err.starts_with(&format!("ERROR: {a}"))),
                "{to}: {err} (want line {edited_line} or {header_line})"
            );
            assert!(err.contains(problem), "{to}: {err}");
            assert_eq!(policy_text(&sb), bad, "the file is left as it is");
            assert_eq!(sb.table_json(&sb.srv.ns), kernel, "nothing applied");
        }
    }
    write_policy(&sb, &good);
    sb.rampart_ok(&["allow", "7000/tcp"]);
}

/// Defect 6: `delete N` deletes the rule it showed, even when another command would
/// have renumbered the rules meanwhile (it waits for the lock).
#[test]
fn delete_n_deletes_the_rule_it_showed() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(22).unwrap();
    sb.serve_tcp(80).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&["allow", "80/tcp"]);

    let mut delete = sb
        .rampart_command(&["delete", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = delete.stdout.take().unwrap();
    let mut shown = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&shown).ends_with("(y|n)? ") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1, "prompt: {shown:?}");
        shown.push(byte[0]);
    }
    let shown = String::from_utf8_lossy(&shown).into_owned();
    assert!(shown.contains("Deleting:\n allow 80/tcp\n"), "{shown}");

    // Another command meanwhile waits for the lock (and says so).
    let mut insert = sb
        .rampart_command(&["insert", "1", "allow", "9999/tcp"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = BufReader::new(insert.stderr.take().unwrap());
    let mut line = String::new();
    waiting.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("Waiting for another rampart command"),
        "{line}"
    );

    delete.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(delete.wait().unwrap().success());
    assert_eq!(rest, "Rule deleted\n");
    assert!(insert.wait().unwrap().success());

    // 80/tcp over IPv4 is gone; 22/tcp and the IPv6 copy of 80/tcp stay.
    assert_eq!(sb.tcp(A, V4, 80).word(), "timed out");
    assert!(sb.tcp(A, V6, 80).is_open());
    assert!(sb.tcp(A, V4, 22).is_open());
    let status = sb.rampart_ok(&["status", "numbered"]);
    assert!(status.contains("[ 1] 9999/tcp"), "{status}");
    assert!(status.contains("[ 2] 22/tcp"), "{status}");
}

/// Run `flock MODE LOCK sleep SECS` in the background: another holder of the lock
/// (`-o`: the lock is flock's own, so killing flock lets it go).
fn hold_lock(sb: &Sandbox, mode: &str, secs: u32) -> std::process::Child {
    let lock = sb.config_dir().join(".lock");
    let child = Command::new("flock")
        .args(["-o", mode])
        .arg(&lock)
        .args(["sleep", &secs.to_string()])
        .spawn()
        .unwrap();
    // Until the lock is taken: a non-blocking try of the opposite kind fails.
    let probe = if mode == "-s" { "-x" } else { "-s" };
    let start = Instant::now();
    while Command::new("flock")
        .args(["-n", probe])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(5), "lock not taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Defect 7: readers share the lock, writers wait with a message and give up; the lock
/// file is root's alone.
#[test]
fn readers_share_the_lock_and_writers_wait_then_give_up() {
    let Some(sb) = sandbox(0) else { return };
    sb.rampart_ok(&["--force", "enable"]);
    let timed = |args: &[&str]| {
        let t = Instant::now();
        let out = sb
            .rampart_command(args)
            .env("RAMPART_LOCK_TIMEOUT", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out, t.elapsed())
    };

    // A writer holds it: writers and readers wait, say so, and give up after 1 s.
    let mut holder = hold_lock(&sb, "-x", 20);
    for args in [&["allow", "7000/tcp"][..], &["status"]] {
        let (out, took) = timed(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("Waiting for another rampart command to finish"),
            "{err}"
        );
        assert!(
            err.contains("ERROR: another rampart command has held"),
            "{err}"
        );
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(10));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();

    // A reader holds it: readers go on at once; a writer waits.
    let mut holder = hold_lock(&sb, "-s", 20);
    let (out, _) = timed(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Waiting"));
    let (out, _) = timed(&["allow", "7000/tcp"]);
    assert_eq!(out.status.code(), Some(2));
    holder.kill().unwrap();
    holder.wait().unwrap();
    sb.rampart_ok(&["allow", "7000/tcp"]);

    // Only root may open the lock file (the sandbox made this directory 0755).
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&sb.config_dir().join(".lock")), 0o600);
    let lock = sb.config_dir().join(".lock");
    let nobody = Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c"])
        .arg(format!("flock -n {} true", lock.display()))
        .output()
        .unwrap();
    assert!(!nobody.status.success(), "another user could take the lock");
}

/// Defect 8: modes are fixed whatever the umask, links planted where rampart writes
/// are never followed, a directory others can write to is refused, backups never
/// overwrite each other.
#[test]
fn files_are_private_links_are_not_followed_and_backups_stay() {
    let Some(sb) = sandbox(0) else { return };
    let dir = sb.config_dir().join("fresh");
    let run = |args: &str| {
        sb.exec(
            &sb.srv.ns,
            &[
                "sh",
                "-c",
                &format!(
                    "umask 000; exec {} --config-dir {} {args}",
                    sb.bin().display(),
                    dir.display()
                ),
            ],
        )
    };
    let out = run("--force enable");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run("allow 22/tcp").status.success());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    for f in ["policy.toml", ".policy.cache.json", ".lock"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    // Links planted at every name rampart writes through: the targets stay as they are.
    let victim = sb.config_dir().join("victim");
    fs::write(&victim, "victim").unwrap();
    for name in [
        ".policy.toml.tmp",
        ".policy.toml.new.tmp",
        ".policy.cache.json.tmp",
        ".policy.cache.json.new.tmp",
        ".counter-tags.tmp",
    ] {
        symlink(&victim, dir.join(name)).unwrap();
    }
    let out = run("allow 80/tcp");
    assert!(out.status.success(), "{}", stderr(&out));
    // status verbose writes the counter tags.
    let out = run("status verbose");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&dir.join(".counter-tags")), 0o600);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim");
    assert!(fs::read_to_string(dir.join("policy.toml"))
        .unwrap()
        .contains("\"80\""));

    // A directory or policy file others may write to is refused, changing nothing.
    let kernel = sb.table_json(&sb.srv.ns);
    for (path, bad) in [(dir.clone(), 0o777), (dir.join("policy.toml"), 0o666)] {
        let good = mode(&path);
        fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
        for args in ["status", "allow 8080/tcp"] {
            let out = run(args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains("group or others may write to it"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(good)).unwrap();
        assert_eq!(sb.table_json(&sb.srv.ns), kernel);
    }

    // Resets in quick succession: one backup each, none overwritten.
    let mut wanted = Vec::new();
    for port in ["1111", "2222", "3333"] {
        assert!(run(&format!("allow {port}/tcp")).status.success());
        assert!(run("--force reset").status.success());
        wanted.push(port);
    }
    let backups: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("policy.toml.2"))
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(backups.len(), 3);
    for port in wanted {
        assert_eq!(
            backups
                .iter()
                .filter(|b| b.contains(&format!("\"{port}\"")))
                .count(),
            1,
            "the backup with {port}"
        );
    }
}

/// The kernel is what the file says after a plain `status`, and nothing else: a quick
/// check used after each fault below.
fn assert_agree(sb: &Sandbox, kernel: &serde_json::Value, text: &str, what: &str) {
    let out = sb.rampart(&["status"]);
    assert!(out.status.success(), "{what}: {}", stderr(&out));
    assert_eq!(&sb.table_json(&sb.srv.ns), kernel, "{what}: kernel");
    assert_eq!(policy_text(sb), text, "{what}: file");
    assert!(!sb.config_dir().join(".policy.toml.new").exists(), "{what}");
}

/// A stand-in for nft, first on PATH (with element changes sent through nft too):
/// runs the real one, except for the faults listed
/// in `$FAULTS` (one line per transaction, consumed in order). `verify` makes the
/// table differ from the plan right after the transaction (a chain added, as another
/// tool could), which the verify step, reading the kernel over netlink, must see.
const FAKE_NFT: &str = r#"#!/bin/sh
case " $* " in *" -f "*) ;; *) exec "$REAL_NFT" "$@" ;; esac
fault=$(head -n 1 "$FAULTS" 2>/dev/null); sed -i 1d "$FAULTS" 2>/dev/null
case "$fault" in
  refuse) cat >/dev/null; echo "Error: injected refusal" >&2; exit 1 ;;
  fail-after) "$REAL_NFT" "$@"; echo "Error: injected failure after the transaction" >&2; exit 1 ;;
  verify) "$REAL_NFT" "$@" || exit $?; "$REAL_NFT" add chain inet rampart stray; exit 0 ;;
  hang) exec sleep 30 ;;
  slow) sleep 2; exec "$REAL_NFT" "$@" ;;
  ro-after) "$REAL_NFT" "$@"; rc=$?; mount -o remount,ro,bind "$RO_DIR"; exit $rc ;;
esac
exec "$REAL_NFT" "$@"
"#;

/// Defect 5: nft failing at the apply, after it, at the verify, hanging; the write
/// failing (read-only, full, or at the last rename): afterwards kernel and disk agree
/// and the error says what failed.
#[test]
fn faults_leave_kernel_and_disk_agreeing() {
    let Some(sb) = sandbox(0) else { return };
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let bin = sb.config_dir().with_extension("bin");
    let path = rampart_sandbox::stand_in(&bin, "nft", FAKE_NFT).unwrap();
    let faults = bin.join("faults");
    let real = rampart_sandbox::real_tool("nft");
    let with_faults = |list: &[&str], args: &[&str]| {
        fs::write(
            &faults,
            list.iter().map(|f| format!("{f}\n")).collect::<String>(),
        )
        .unwrap();
        let out = sb
            .rampart_command(args)
            .env("PATH", &path)
            .env("REAL_NFT", &real)
            .env("FAULTS", &faults)
            .env("RAMPART_NFT_TIMEOUT", "2")
            // Element changes through nft too, where the faults are.
            .env("RAMPART_NFT_ELEMENTS", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = fs::remove_file(&faults);
        out
    };

    let cases: &[(&[&str], &[&str], &str)] = &[
        (
            &["refuse", "refuse"],
            &["allow", "7000/tcp"],
            "injected refusal; nothing was changed",
        ),
        (
            &["refuse"],
            &["default", "reject"],
            "injected refusal; nothing was changed",
        ),
        (
            &["fail-after"],
            &["default", "reject"],
            "injected failure after the transaction; the previous firewall was restored",
        ),
        (
            &["fail-after", "fail-after"],
            &["allow", "7000/tcp"],
            "injected failure after the transaction; the previous firewall was restored",
        ),
        (
            &["verify"],
            &["default", "reject"],
            "does not match the plan after applying it",
        ),
        (
            &["hang"],
            &["default", "reject"],
            "nft did not finish within 2 s",
        ),
    ];
    for (list, args, want) in cases {
        let (kernel, text) = (sb.table_json(&sb.srv.ns), policy_text(&sb));
        let out = with_faults(list, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{list:?}: {err}");
        assert!(
            err.starts_with("ERROR: ") && err.contains(want),
            "{list:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_agree(&sb, &kernel, &text, &format!("{list:?}"));
    }

    // rampart killed while its nft works: the next command waits for that nft (it
    // holds rampart's lock), then finds the change in the kernel and completes it.
    fs::write(&faults, "slow\n").unwrap();
    let mut child = sb
        .rampart_command(&["allow", "7001/tcp"])
        .env("PATH", &path)
        .env("REAL_NFT", &real)
        .env("FAULTS", &faults)
        .env("RAMPART_NFT_ELEMENTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while fs::metadata(&faults).unwrap().len() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "nft never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = sb.rampart(&["status"]);
    let err = stderr(&status);
    assert!(
        err.starts_with("Waiting for another rampart command"),
        "{err}"
    );
    assert!(
        err.contains("interrupted change was found applied"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("7001/tcp"));
    let _ = fs::remove_file(&faults);
    sb.rampart_ok(&["--force", "delete", "allow", "7001/tcp"]);

    // Applied, then restoring is refused: the next command finds the change in the
    // kernel and completes it (file and kernel both have it).
    let out = with_faults(&["fail-after", "refuse"], &["default", "reject"]);
    let err = stderr(&out);
    assert!(
        err.contains("restoring the previous firewall failed too"),
        "{err}"
    );
    assert!(sb.config_dir().join(".policy.toml.new").exists());
    let status = sb.rampart(&["status", "verbose"]);
    assert!(stderr(&status).contains("interrupted change was found applied"));
    assert!(String::from_utf8_lossy(&status.stdout).contains("Default: reject (incoming)"));
    sb.rampart_ok(&["default", "deny"]);

    // The directory read-only, full, or read-only just before the last rename.
    let (kernel, text) = (sb.table_json(&sb.srv.ns), policy_text(&sb));
    let dir = sb.config_dir().display().to_string();
    let copy = sb.config_dir().with_extension("copy");
    let in_mount_ns = |setup: &str, fault: &str| {
        fs::write(&faults, format!("{fault}\n")).unwrap();
        let script = format!(
            "{setup} && exec ip netns exec {} {} --config-dir {dir} allow 7000/tcp",
            sb.srv.ns,
            sb.bin().display()
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env("PATH", &path)
            .env("REAL_NFT", &real)
            .env("FAULTS", &faults)
            .env("RO_DIR", &dir)
            .env("RAMPART_NFT_ELEMENTS", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let _ = fs::remove_file(&faults);
        out
    };
    let ro = format!("mount --bind {dir} {dir} && mount -o remount,ro,bind {dir}");
    let full = format!(
        "rm -rf {c} && cp -a {dir} {c} && mount -t tmpfs -o size=64k,mode=0700 tmpfs {dir} && cp -a {c}/. {dir}/ && (dd if=/dev/zero of={dir}/fill bs=4k 2>/dev/null; true)",
        c = copy.display()
    );
    let late = format!("mount --bind {dir} {dir}");
    for (setup, fault, want) in [
        (&ro, "", "Read-only file system"),
        (&full, "", "No space left on device"),
        (
            &late,
            "ro-after",
            "Read-only file system (os error 30); the previous firewall was restored",
        ),
    ] {
        let out = in_mount_ns(setup, fault);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{setup}: {err}");
        assert!(err.contains(want), "{setup}: {err}");
        assert_agree(&sb, &kernel, &text, setup);
    }
    let _ = fs::remove_dir_all(&copy);
    let _ = fs::remove_dir_all(&bin);
}

/// Each element-only change creates the next stamp in its own transaction; superseded
/// stamps are pruned, so the stamp set stays small, and the kernel keeps agreeing.
#[test]
fn stamps_follow_element_changes_and_are_pruned() {
    let Some(sb) = sandbox(0) else { return };
    sb.rampart_ok(&["--force", "enable"]);
    for port in 0..40 {
        sb.rampart_ok(&["allow", &format!("{}/tcp", 5000 + port)]);
        let set = sb.exec(
            &sb.srv.ns,
            &["nft", "-j", "list", "set", "inet", "rampart", "stamp"],
        );
        let v: serde_json::Value = serde_json::from_slice(&set.stdout).unwrap();
        let elems = v["nftables"][1]["set"]["elem"].as_array().unwrap().len();
        assert!(
            (1..=rampart::backend::STAMP_PRUNE_AT).contains(&elems),
            "{elems} stamps"
        );
        let status = sb.rampart(&["status"]);
        assert!(!stderr(&status).contains("WARN"), "{}", stderr(&status));
    }
}
