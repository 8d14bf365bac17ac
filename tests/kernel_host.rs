//! rampart on a real host: forwarding left alone unless asked, boot, the systemd unit,
//! UFW's "any" and interface wildcards, questions that cannot be answered, exit
//! statuses, and a dry run that nft accepts. Real nftables in throwaway namespaces.
//! Docs: README "Forwarded traffic", "At boot", "Exit status".

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rampart_sandbox::Sandbox;

const A: usize = 0;
const V4: bool = false;
const V6: bool = true;
const WAIT: Duration = Duration::from_millis(800);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rampart"))
}

fn sandbox(clients: usize) -> Option<Sandbox> {
    rampart_sandbox::for_test(clients, bin())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A shell command run in the server namespace with rampart on hand as `$R` (with the
/// sandbox's config dir).
fn sh(sb: &Sandbox, script: &str) -> Output {
    let r = format!(
        "{} --config-dir {}",
        sb.bin().display(),
        sb.config_dir().display()
    );
    Command::new("ip")
        .args(["netns", "exec", &sb.srv.ns, "sh", "-c", script])
        .env("R", r)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Defect 2: with the defaults, rampart leaves forwarded traffic to others (Docker,
/// libvirt…); `default deny routed` starts filtering it, and says which other table
/// handles forwarding.
#[test]
fn forwarded_traffic_is_left_alone_unless_asked() {
    if rampart_sandbox::kernel_unavailable().is_some() {
        let _ = sandbox(0);
        return;
    }
    let mut sb = Sandbox::routed(bin()).expect("routed sandbox");
    let far = sb.far.clone().unwrap();
    sb.serve_tcp_in(&far.ns, 8080).unwrap();
    let to_far = |sb: &Sandbox, v6: bool| {
        sb.tcp_to(A, SocketAddr::new(far.addr(v6), 8080), WAIT)
            .word()
    };
    for v6 in [V4, V6] {
        assert_eq!(to_far(&sb, v6), "accepted", "before enable");
    }
    sb.rampart_ok(&["--force", "enable"]);
    for v6 in [V4, V6] {
        assert_eq!(to_far(&sb, v6), "accepted", "enabled with the defaults");
    }
    assert!(sb
        .rampart_ok(&["status", "verbose"])
        .contains("disabled (routed)"));
    // Docker's way: a table of its own on the forward hook.
    let out = sb.exec(
        &sb.srv.ns,
        &["nft", "add table ip dockerish; add chain ip dockerish dfwd { type filter hook forward priority 0; policy accept; }"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sb.rampart(&["default", "deny", "routed"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("WARN: table ip dockerish also handles forwarded traffic"),
        "{}",
        stderr(&out)
    );
    for v6 in [V4, V6] {
        assert_eq!(to_far(&sb, v6), "timed out", "default deny routed");
    }
    assert!(sb
        .rampart_ok(&["status", "verbose"])
        .contains("deny (routed)"));
    sb.rampart_ok(&["default", "allow", "routed"]);
    for v6 in [V4, V6] {
        assert_eq!(to_far(&sb, v6), "accepted", "default allow routed");
    }
}

/// Defect 3: `0.0.0.0/0` and `::/0` are "anywhere" of one family, as in UFW.
#[test]
fn any_address_is_anywhere() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(22).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22"]);
    let same = ["allow", "from", "0.0.0.0/0", "to", "any", "port", "22"];
    assert_eq!(sb.rampart_ok(&same), "Skipping adding existing rule\n");
    let deny = ["deny", "from", "0.0.0.0/0", "to", "any", "port", "22"];
    assert_eq!(sb.rampart_ok(&deny), "Rule updated\n");
    assert_eq!(
        sb.tcp(A, V4, 22).word(),
        "timed out",
        "the IPv4 copy is denied"
    );
    assert!(sb.tcp(A, V6, 22).is_open(), "the IPv6 copy is not");
    let six = ["deny", "from", "::/0", "to", "any", "port", "22"];
    assert_eq!(sb.rampart_ok(&six), "Rule updated (v6)\n");
    assert_eq!(sb.tcp(A, V6, 22).word(), "timed out");
    let status = sb.rampart_ok(&["status"]);
    assert!(
        status.contains("\n22                         DENY        Anywhere  "),
        "{status}"
    );
    assert!(!status.contains("0.0.0.0/0"), "{status}");
    assert_eq!(
        sb.rampart_ok(&["status", "numbered"])
            .matches("\n[")
            .count(),
        2
    );
}

/// Defect 4: UFW's interface wildcard (`eth+`) matches every interface that starts so.
#[test]
fn interface_wildcards_match_by_prefix() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(7020).unwrap();
    sb.serve_tcp(7021).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    // The server's interface is eth0.
    sb.rampart_ok(&[
        "deny", "in", "on", "eth+", "to", "any", "port", "7020", "proto", "tcp",
    ]);
    sb.rampart_ok(&[
        "deny", "in", "on", "wg+", "to", "any", "port", "7021", "proto", "tcp",
    ]);
    sb.rampart_ok(&["allow", "7020:7021/tcp"]);
    for v6 in [V4, V6] {
        assert_eq!(sb.tcp(A, v6, 7020).word(), "timed out", "eth0 is eth+");
        assert!(sb.tcp(A, v6, 7021).is_open(), "eth0 is not wg+");
    }
    assert!(sb.rampart_ok(&["status"]).contains("7020/tcp on eth+"));
}

/// Interface names take UFW's characters: `,=%@`, and a `+` inside a name, which is the
/// character itself (only a last `+` is the wildcard). A rule for the server's
/// interface renamed `v,=@+1` matches its traffic (Linux takes no `%` in a name: it
/// makes the name a template); `e+th` does not match eth0; a name
/// starting with `@` (a set's name to nftables) is refused and changes nothing.
#[test]
fn interface_names_take_ufws_characters() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(7022).unwrap();
    sb.serve_tcp(7023).unwrap();
    let name = "v,=@+1";
    let ns = sb.srv.ns.clone();
    // IPv6 addresses are kept across the rename (they go with the link by default).
    let sysctl = ["sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1"];
    for cmd in [
        &sysctl[..],
        &["ip", "link", "set", "eth0", "down"],
        &["ip", "link", "set", "eth0", "name", name],
        &["ip", "link", "set", name, "up"],
    ] {
        let out = sb.exec(&ns, cmd);
        assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    }
    // The link back (the bridge's side comes up again, IPv6 addresses leave tentative).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(sb.tcp(A, V4, 7022).is_open() && sb.tcp(A, V6, 7022).is_open()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the renamed link came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&[
        "allow", "in", "on", name, "to", "any", "port", "7022", "proto", "tcp",
    ]);
    sb.rampart_ok(&[
        "allow", "in", "on", "e+th", "to", "any", "port", "7023", "proto", "tcp",
    ]);
    for v6 in [V4, V6] {
        assert!(
            sb.tcp(A, v6, 7022).is_open(),
            "{name} is the server's interface"
        );
        assert_eq!(
            sb.tcp(A, v6, 7023).word(),
            "timed out",
            "e+th is not a wildcard"
        );
    }
    assert!(sb
        .rampart_ok(&["status"])
        .contains(&format!("7022/tcp on {name}")));
    let policy = sb.config_dir().join("policy.toml");
    let before = (
        sb.rampart_ok(&["status", "numbered"]),
        fs::read(&policy).unwrap(),
    );
    let bad = sb.rampart(&["allow", "in", "on", "@x", "to", "any", "port", "1"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("nftables cannot match a name that starts with '@'"),
        "{}",
        stderr(&bad)
    );
    let after = (
        sb.rampart_ok(&["status", "numbered"]),
        fs::read(&policy).unwrap(),
    );
    assert!(after == before, "nothing changed");
}

/// Defect 5: `enable` asks only inside an SSH session (an sshd among its parents), and
/// a question no answer can come to is refused with exit status 4, changing nothing.
#[test]
fn enable_asks_only_over_ssh_and_never_without_an_answer() {
    let Some(sb) = sandbox(0) else { return };
    let out = sh(&sb, "$R enable </dev/null");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("Firewall is active"),
        "{}",
        stdout(&out)
    );
    sb.rampart_ok(&["disable"]);
    // A parent process named sshd, as in an SSH session.
    let fake = sb.config_dir().with_extension("sshd");
    fs::create_dir_all(&fake).unwrap();
    fs::copy("/bin/sh", fake.join("sshd")).unwrap();
    let sshd = fake.join("sshd").display().to_string();
    let under_sshd = |input: &str| sh(&sb, &format!("{sshd} -c '{input} $R enable; exit $?'"));
    let out = under_sshd("</dev/null");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stdout(&out).contains("Command may disrupt existing ssh connections"));
    assert!(
        stderr(&out).contains("run with --force"),
        "{}",
        stderr(&out)
    );
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: inactive"));
    let out = sh(&sb, &format!("echo n | {sshd} -c '$R enable; exit $?'"));
    assert_eq!(out.status.code(), Some(4));
    assert!(stdout(&out).contains("Aborted"));
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: inactive"));
    let out = sh(&sb, &format!("echo y | {sshd} -c '$R enable; exit $?'"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sb.rampart_ok(&["status"]).starts_with("Status: active"));
    let _ = fs::remove_dir_all(&fake);
}

/// A stand-in for an nft that refuses every transaction (first on PATH).
fn refusing_nft(dir: &Path) -> String {
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in *\" -f \"*|*\" list table \"*) echo 'Error: injected' >&2; exit 1 ;; esac\nexec {} \"$@\"\n",
        rampart_sandbox::real_tool("nft")
    );
    rampart_sandbox::stand_in(dir, "nft", &script).unwrap()
}

/// Defect 6: the exit status says what failed (README "Exit status"), and `show raw`
/// reports nft's failure instead of printing nothing.
#[test]
fn exit_statuses_say_what_failed() {
    let Some(sb) = sandbox(0) else { return };
    let code = |args: &[&str]| sb.rampart(args).status.code();
    assert_eq!(code(&["allow", "99999"]), Some(1), "a bad rule");
    assert_eq!(code(&["frobnicate"]), Some(1), "a bad command");
    let raw = sb.rampart_ok(&["show", "raw"]);
    assert_eq!(raw, "(rampart's table is not loaded)\n");
    sb.rampart_ok(&["--force", "enable"]);
    let path = refusing_nft(&sb.config_dir().with_extension("bin"));
    let with_bad_nft = |args: &[&str]| {
        sb.rampart_command(args)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = with_bad_nft(&["default", "reject"]);
    assert_eq!(out.status.code(), Some(3), "the kernel: {}", stderr(&out));
    let out = with_bad_nft(&["show", "raw"]);
    assert_eq!(out.status.code(), Some(3), "show raw: {}", stderr(&out));
    assert!(stderr(&out).contains("Error: injected"));
    let policy = sb.config_dir().join("policy.toml");
    let good = fs::read_to_string(&policy).unwrap();
    fs::write(&policy, good.replace("enabled = true", "enabled = maybe")).unwrap();
    assert_eq!(code(&["status"]), Some(2), "the policy file");
    fs::write(&policy, &good).unwrap();
    let out = sh(&sb, "echo n | $R reset");
    assert_eq!(out.status.code(), Some(4), "declined");
    let out = sh(&sb, "$R reset </dev/null");
    assert_eq!(out.status.code(), Some(4), "no answer");
    assert!(
        sb.rampart_ok(&["status"]).starts_with("Status: active"),
        "nothing reset"
    );
    let _ = fs::remove_dir_all(sb.config_dir().with_extension("bin"));
}

/// Defect 1: `rampart boot` loads an enabled policy, nothing for a disabled one, and
/// for a policy file that does not load the last policy rampart wrote, with exit 2.
#[test]
fn boot_loads_the_policy_or_the_last_good_one() {
    let Some(mut sb) = sandbox(1) else { return };
    sb.serve_tcp(8080).unwrap();
    sb.serve_tcp(9090).unwrap();
    let loaded = |sb: &Sandbox| sb.ruleset().contains("table inet rampart");
    sb.rampart_ok(&["allow", "8080/tcp"]);
    assert_eq!(
        sb.rampart_ok(&["boot"]),
        "Firewall not enabled (nothing loaded)\n"
    );
    assert!(!loaded(&sb));
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["unload"]);
    assert!(!loaded(&sb), "unload");
    assert!(sb.tcp(A, V4, 9090).is_open(), "nothing loaded, all open");
    assert_eq!(sb.rampart_ok(&["boot"]), "Firewall loaded\n");
    for v6 in [V4, V6] {
        assert!(sb.tcp(A, v6, 8080).is_open());
        assert_eq!(sb.tcp(A, v6, 9090).word(), "timed out");
    }
    // A bad hand edit, then a reboot: the host is not left open.
    sb.rampart_ok(&["unload"]);
    let policy = sb.config_dir().join("policy.toml");
    let text = fs::read_to_string(&policy).unwrap();
    fs::write(
        &policy,
        text.replace("ports = \"8080\"", "ports = \"80:70\""),
    )
    .unwrap();
    let out = sb.rampart(&["boot"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("loaded the last policy rampart applied instead"));
    for v6 in [V4, V6] {
        assert!(sb.tcp(A, v6, 8080).is_open(), "the last good policy");
        assert_eq!(sb.tcp(A, v6, 9090).word(), "timed out", "default deny");
    }
}

/// The unit in `dist/` passes `systemd-analyze verify` (with its binary where the
/// build put it).
#[test]
fn the_boot_unit_is_valid() {
    let Some(sb) = sandbox(0) else { return };
    let unit =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/rampart.service")).unwrap();
    for want in [
        "DefaultDependencies=no",
        "Before=network-pre.target",
        "Wants=network-pre.target local-fs.target",
        "After=local-fs.target nftables.service",
        "PartOf=nftables.service",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/sbin/rampart boot",
        "ExecStop=/usr/sbin/rampart unload",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want}");
    }
    let dir = sb.config_dir().with_extension("unit");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rampart.service");
    fs::write(
        &path,
        unit.replace("/usr/sbin/rampart", &bin().display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd)");
    let err = stderr(&out);
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("rampart.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

/// `enable` and `disable` enable and disable the unit where systemd runs, and say
/// plainly when that failed (here: systemd faked in a private mount namespace, and a
/// systemctl that records what it was asked).
#[test]
fn enable_and_disable_use_the_unit_where_systemd_runs() {
    let Some(sb) = sandbox(0) else { return };
    let dir = sb.config_dir().with_extension("systemctl");
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {}\n[ -e {}/fail ] && {{ echo 'Failed to enable unit' >&2; exit 1; }}\nexit 0\n",
        log.display(),
        dir.display()
    );
    let path = rampart_sandbox::stand_in(&dir, "systemctl", &script).unwrap();
    let run = |args: &str| {
        let script = format!(
            "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/system && PATH={path} exec ip netns exec {} {} --config-dir {} {args}",
            sb.srv.ns,
            sb.bin().display(),
            sb.config_dir().display()
        );
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("--force enable");
    assert_eq!(
        stdout(&out),
        "Firewall is active and enabled on system startup\n",
        "{}",
        stderr(&out)
    );
    let out = run("disable");
    assert_eq!(
        stdout(&out),
        "Firewall stopped and disabled on system startup\n"
    );
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "--quiet enable rampart.service\n--quiet disable rampart.service\n"
    );
    fs::write(dir.join("fail"), "").unwrap();
    let out = run("--force enable");
    assert!(out.status.success());
    assert_eq!(stdout(&out), "Firewall is active\n");
    assert!(
        stderr(&out).contains("WARN: not enabled on system startup"),
        "{}",
        stderr(&out)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Defect 7: the dry run prints the ruleset that is applied, and nft accepts it, for a
/// policy with every kind of rule.
#[test]
fn the_dry_run_is_a_ruleset_nft_accepts() {
    let Some(mut sb) = sandbox(0) else { return };
    let fresh = sb.spare_ns().unwrap();
    let commands: &[&[&str]] = &[
        &["--force", "enable"],
        &["allow", "22/tcp"],
        &["allow", "80,443/tcp"],
        &["allow", "60000:61000/udp"],
        &[
            "allow",
            "from",
            "198.18.0.0/24",
            "to",
            "any",
            "port",
            "5432",
            "proto",
            "tcp",
        ],
        &["deny", "from", "2001:db8::/48"],
        &["reject", "out", "25/tcp", "comment", "no mail"],
        &["allow", "in", "on", "eth0", "to", "any", "port", "53"],
        &[
            "deny", "in", "on", "eth+", "to", "any", "port", "7020", "proto", "tcp",
        ],
        &["allow", "log", "8080/tcp"],
        &[
            "allow",
            "log-all",
            "from",
            "198.18.0.9",
            "port",
            "1000",
            "to",
            "198.18.0.1",
            "port",
            "2000",
            "proto",
            "udp",
        ],
        &["deny", "proto", "esp", "from", "198.18.0.7"],
        &[
            "allow",
            "proto",
            "gre",
            "from",
            "198.18.0.8",
            "to",
            "198.18.0.9",
        ],
        &["limit", "ssh"],
        &["limit", "8000/tcp", "rate", "20/30s", "per", "/24"],
        &["limit", "8001/tcp", "rate", "100/1m", "per", "/24,/48"],
        &["limit", "3128/tcp", "conn", "1", "per", "any"],
        &[
            "limit", "3129/tcp", "conn", "4", "rate", "10/1m", "over", "drop",
        ],
        &["limit", "2222/tcp", "rate", "6/30s", "then", "continue"],
        &[
            "limit",
            "1:65535/udp",
            "rate",
            "5/30s",
            "except",
            "30000:30005",
        ],
        &["default", "reject", "routed"],
        &["logging", "full"],
    ];
    for cmd in commands {
        sb.rampart_ok(cmd);
    }
    // Enough denied hosts for a verdict map of each shape.
    for i in 0..12 {
        sb.rampart_ok(&["deny", "from", &format!("198.19.0.{i}")]);
        sb.rampart_ok(&["deny", "from", &format!("198.19.{i}.0/24")]);
    }
    let text = sb.rampart_ok(&["--dry-run", "reload"]);
    assert!(text.starts_with("table inet rampart {"), "{text}");
    assert!(!text.contains("{\""), "no JSON in the text");
    assert!(text.contains("vmap @rules_"), "maps are in it");
    let file = sb.config_dir().with_extension("nft");
    fs::write(&file, &text).unwrap();
    let out = sb.exec(&fresh, &["nft", "-c", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "nft -c: {}\n{text}", stderr(&out));
    // And it is what is applied: loaded in a fresh namespace, the same table.
    let out = sb.exec(&fresh, &["nft", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rules = |ns: &str| {
        let v = sb.table_json(ns);
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o.get("rule").is_some() || o.get("chain").is_some())
            .count()
    };
    assert_eq!(rules(&fresh), rules(&sb.srv.ns));
    let _ = fs::remove_file(&file);
    let _: PathBuf = file;
}

/// As UFW: while the kernel forwards nothing, `status verbose` shows the routed
/// default as disabled, whatever the policy says (a routed sandbox forwards, and shows
/// the policy: `forwarded_traffic_is_left_alone_unless_asked`).
#[test]
fn routed_default_shows_disabled_without_forwarding() {
    let Some(sb) = rampart_sandbox::for_test(1, bin()) else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["default", "deny", "routed"]);
    let forwarding = sb.exec(&sb.srv.ns, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "0");
    let verbose = sb.rampart_ok(&["status", "verbose"]);
    assert!(
        verbose.contains("allow (outgoing), disabled (routed)"),
        "{verbose}"
    );
}
