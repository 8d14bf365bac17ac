//! Bad commands: each gives one `ERROR: ` line on stderr, exits non-zero, and leaves the
//! config directory and the kernel ruleset byte-identical. Which commands are bad follows
//! UFW 0.36's own answers.

use std::path::Path;

/// (command words, the start of the expected error line)
const BAD: &[(&str, &str)] = &[
    ("allow 99999", "ERROR: Bad port '99999'"),
    ("allow 65536", "ERROR: Bad port"),
    ("allow 0", "ERROR: Bad port"),
    ("allow -1", "ERROR: Bad port"),
    ("allow 80:70/tcp", "ERROR: Bad port '80:70'"),
    ("allow 22:22/tcp", "ERROR: Bad port"),
    (
        "allow 80:90",
        "ERROR: Must specify 'tcp' or 'udp' with multiple ports",
    ),
    (
        "allow 22,23",
        "ERROR: Must specify 'tcp' or 'udp' with multiple ports",
    ),
    (
        "limit 80,443",
        "ERROR: Must specify 'tcp' or 'udp' with multiple ports",
    ),
    (
        "allow from any port 80,443",
        "ERROR: Must specify 'tcp' or 'udp'",
    ),
    (
        "allow from 198.18.0.5 port 40:41",
        "ERROR: Must specify 'tcp' or 'udp'",
    ),
    ("allow a:b/tcp", "ERROR: Port ranges must be numeric"),
    ("allow 22:", "ERROR: Port ranges must be numeric"),
    (
        "allow to any port ssh,http proto tcp",
        "ERROR: Port ranges must be numeric",
    ),
    (
        "allow 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16/tcp",
        "ERROR: Too many ports",
    ),
    (
        "allow 1:2,3:4,5:6,7:8,9:10,11:12,13:14,15:16/tcp",
        "ERROR: Too many ports",
    ),
    ("allow 22/sctp", "ERROR: Bad port '22/sctp'"),
    ("allow 22/TCP", "ERROR: Bad port"),
    ("allow 22/tcp/udp", "ERROR: Bad port"),
    ("allow /tcp", "ERROR: Bad port"),
    ("allow to any port 38/tcp", "ERROR: Bad port '38/tcp'"),
    (
        "allow nosuchservice",
        "ERROR: Could not find a profile matching 'nosuchservice'",
    ),
    (
        "allow from",
        "ERROR: Could not find a profile matching 'from'",
    ),
    ("allow from 198.18.0.300", "ERROR: Bad source address"),
    ("allow from 198.18.0.01", "ERROR: Bad source address"),
    ("allow from 198.18.0.0/33", "ERROR: Bad source address"),
    ("allow from 2001:db8::/129", "ERROR: Bad source address"),
    ("allow to 198.18.0.1.1", "ERROR: Bad destination address"),
    (
        "allow from 198.18.0.1 to 2001:db8::1",
        "ERROR: Mixed IP versions for 'from' and 'to'",
    ),
    (
        "deny from 2001:db8::1 to 198.18.0.1",
        "ERROR: Mixed IP versions",
    ),
    ("allow from any port", "ERROR: Wrong number of arguments"),
    ("allow proto tcp", "ERROR: Need 'to' or 'from' clause"),
    (
        "allow proto icmp from 198.18.0.1",
        "ERROR: Unsupported protocol 'icmp'",
    ),
    (
        "allow in on eth0:1 to any port 22",
        "ERROR: Bad interface name: can't use interface aliases",
    ),
    (
        "allow in on verylonginterfacename0 to any port 22",
        "ERROR: Bad interface name: interface name too long",
    ),
    ("allow in on eth0 22", "ERROR: Wrong number of arguments"),
    ("allow in out 22", "ERROR: Invalid interface clause"),
    (
        "allow log log-all 22",
        "ERROR: Option 'log-all' not allowed here",
    ),
    ("allow 39/tcp log", "ERROR: Option 'log' not allowed here"),
    (
        "allow 22/tcp comment",
        "ERROR: Option 'comment' missing required argument",
    ),
    (
        "deny proto ah from 198.18.0.1 port 22",
        "ERROR: Invalid port with protocol 'ah'",
    ),
    (
        "allow proto esp to any port 80",
        "ERROR: Invalid port with protocol 'esp'",
    ),
    (
        "allow proto ipv6 from 2001:db8::1",
        "ERROR: Invalid IPv6 address with protocol 'ipv6'",
    ),
    (
        "allow proto igmp from 2001:db8::1",
        "ERROR: Invalid IPv6 address with protocol 'igmp'",
    ),
    ("allow 22 from 198.18.0.1", "ERROR: "),
    ("allow 37 proto udp", "ERROR: "),
    ("allow from 198.18.0.1 port 80 port 81", "ERROR: "),
    ("allow", "ERROR: Wrong number of arguments"),
    (
        "insert 0 allow 22",
        "ERROR: Cannot insert rule at position '0'",
    ),
    (
        "insert x allow 22",
        "ERROR: Insert position 'x' is not a valid position",
    ),
    ("insert 99 allow 2/tcp", "ERROR: Invalid position '99'"),
    (
        "insert 1 allow from 2001:db8::8",
        "ERROR: Invalid position '1'",
    ),
    (
        "insert 1 frobnicate 22",
        "ERROR: Invalid token 'frobnicate'",
    ),
    ("delete 0", "ERROR: Could not find rule '0'"),
    ("delete 99", "ERROR: Could not find rule '99'"),
    ("delete x", "ERROR: "),
    ("frobnicate", "ERROR: "),
    ("default foo", "ERROR: "),
    ("default deny in", "ERROR: "),
    ("logging bogus", "ERROR: "),
    ("status bogus", "ERROR: "),
    ("show bogus", "ERROR: "),
    ("--frob allow 22", "ERROR: "),
    // limits
    ("limit 80/tcp rate 0/30s", "ERROR: Bad rate '0/30s'"),
    ("limit 80/tcp rate 20/0s", "ERROR: Bad rate '20/0s'"),
    ("limit 80/tcp rate 20", "ERROR: Bad rate '20'"),
    ("limit 80/tcp rate 20/30x", "ERROR: Bad rate"),
    ("limit 80/tcp rate 1000/1s", "ERROR: Bad rate"),
    ("limit 80/tcp rate 5/2d", "ERROR: Bad rate"),
    ("limit 80/tcp rate", "ERROR: Wrong number of arguments"),
    (
        "limit from 198.18.0.1 conn 1",
        "ERROR: 'conn' needs a destination port",
    ),
    (
        "limit 3128 conn 1",
        "ERROR: 'conn' needs a destination port",
    ),
    ("limit 3128/tcp conn 0", "ERROR: Bad connection count '0'"),
    ("limit 3128/tcp conn many", "ERROR: Bad connection count"),
    (
        "limit 80/tcp rate 5/30s per /33",
        "ERROR: Bad limit key '/33'",
    ),
    (
        "limit 80/tcp rate 5/30s per /24,/129",
        "ERROR: Bad limit key",
    ),
    (
        "limit 80/tcp rate 5/30s per everyone",
        "ERROR: Bad limit key 'everyone'",
    ),
    (
        "limit 80/tcp over something",
        "ERROR: Bad over action 'something'",
    ),
    ("limit 80/tcp then maybe", "ERROR: Bad then action 'maybe'"),
    (
        "limit 80/tcp rate 5/30s rate 6/30s",
        "ERROR: Duplicate 'rate' clause",
    ),
    (
        "allow 80/tcp rate 5/30s",
        "ERROR: 'rate' is only for limit rules",
    ),
    (
        "deny 80/tcp conn 1",
        "ERROR: 'conn' is only for limit rules",
    ),
    (
        "limit from 198.18.0.1 except 22",
        "ERROR: 'except' needs destination ports",
    ),
    ("limit 1:65535/tcp except 0", "ERROR: Bad port"),
    ("limit 80/tcp capacity 0", "ERROR: Bad capacity '0'"),
    ("limit 80/tcp capacity 1048577", "ERROR: Bad capacity"),
    ("limit 80/tcp capacity lots", "ERROR: Bad capacity 'lots'"),
    (
        "allow 80/tcp capacity 5",
        "ERROR: 'capacity' is only for limit rules",
    ),
];

/// Free text that must not reach `status`, `show added` or the terminal raw: words
/// with spaces and control characters in them, which a shell passes as one word.
fn hostile_words() -> Vec<(Vec<String>, &'static str)> {
    let comment = |text: &str| {
        ["allow", "80/tcp", "comment", text]
            .map(String::from)
            .to_vec()
    };
    let iface = |name: &str| {
        [
            "allow", "in", "on", name, "to", "any", "port", "80", "proto", "tcp",
        ]
        .map(String::from)
        .to_vec()
    };
    vec![
        // A newline would forge a whole status line.
        (
            comment("x\n80/tcp                     ALLOW IN    Anywhere"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment("a\rb"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment("red \u{1b}[31m"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment("bell\u{7}"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment("tab\tx"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment("rtl \u{202e}txet"),
            "ERROR: Comments may not contain control characters",
        ),
        (
            comment(&"x".repeat(10_240)),
            "ERROR: Comments may be at most 512 bytes",
        ),
        (
            comment("it's"),
            "ERROR: Comments may not contain a single quote",
        ),
        (iface("eth0\n"), "ERROR: Bad interface name"),
        (iface("eth\u{1b}[2J"), "ERROR: Bad interface name"),
        (iface("eth{0}"), "ERROR: Bad interface name"),
        (iface("eth\\0"), "ERROR: Bad interface name"),
        (iface("eth\"0"), "ERROR: Bad interface name"),
        (iface(&"e".repeat(10_240)), "ERROR: Bad interface name"),
        // A profile name is echoed back inert.
        (
            ["allow", "ssh\u{1b}[2J\nx"].map(String::from).to_vec(),
            "ERROR: Could not find a profile matching 'ssh\\u{1b}[2J\\nx'",
        ),
    ]
}

#[test]
fn bad_commands_change_nothing() {
    let Some(sb) = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart"))) else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&["deny", "from", "198.18.0.99"]);
    let snapshot = || {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(sb.config_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        (files, sb.ruleset())
    };
    let before = snapshot();
    assert!(BAD.len() >= 30);
    let mut failures = Vec::new();
    let mut cases: Vec<(Vec<String>, &str)> = BAD
        .iter()
        .map(|(cmd, want)| (cmd.split(' ').map(String::from).collect(), *want))
        .collect();
    cases.extend(hostile_words());
    for (words, want) in &cases {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut cmd = words.join(" ");
        if cmd.len() > 200 {
            cmd = format!("{}... ({} bytes)", &cmd[..200], cmd.len());
        }
        let out = sb.rampart(&words);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = !out.status.success()
            && lines.len() == 1
            && lines[0].starts_with(want)
            && !stderr.chars().any(|c| c.is_control() && c != '\n')
            && stdout.is_empty();
        if !ok {
            failures.push(format!(
                "{cmd:?}: exit {:?}, stderr {stderr:?}, stdout {stdout:?}, wanted {want:?}",
                out.status.code()
            ));
        }
        if snapshot() != before {
            failures.push(format!("{cmd:?} changed the config dir or the kernel"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Bytes that are not UTF-8 are refused before anything is read or written.
#[test]
fn non_utf8_words_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let Some(sb) = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart"))) else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    let before = sb.ruleset();
    let policy = std::fs::read(sb.config_dir().join("policy.toml")).unwrap();
    let out = sb
        .rampart_command(&["allow", "80/tcp", "comment"])
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9\x1b[2J"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("ERROR: "), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(sb.ruleset(), before);
    assert_eq!(
        std::fs::read(sb.config_dir().join("policy.toml")).unwrap(),
        policy
    );
}

/// Braces, backslashes, double quotes and letters beyond ASCII are stored and shown as
/// typed (and survive a reload); a hand-edited file with a newline in a
/// comment is refused with one line that names the file.
#[test]
fn odd_but_harmless_text_is_kept_inert() {
    let Some(sb) = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart"))) else {
        return;
    };
    sb.rampart_ok(&["--force", "enable"]);
    let text = r#"web {x} \ "y" ; } # ü"#;
    sb.rampart_ok(&["allow", "80/tcp", "comment", text]);
    let status = sb.rampart_ok(&["status"]);
    assert!(status.contains(&format!("# {text}")), "{status}");
    assert_eq!(
        status.lines().filter(|l| l.contains("ALLOW")).count(),
        2,
        "{status}"
    );
    let added = sb.rampart_ok(&["show", "added"]);
    assert!(added.contains(&format!("comment '{text}'")), "{added}");
    let dry = sb.rampart_ok(&["--dry-run", "reload"]);
    assert!(dry.contains("80"), "{dry}");
    sb.rampart_ok(&["reload"]);
    assert_eq!(sb.rampart_ok(&["status"]), status);
    let path = sb.config_dir().join("policy.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let stored = format!("comment = '{text}'");
    assert!(good.contains(&stored), "{good}");
    let forged = good.replace(&stored, r#"comment = "x\n80/tcp ALLOW IN Anywhere""#);
    assert_ne!(forged, good);
    std::fs::write(&path, &forged).unwrap();
    let before = sb.ruleset();
    let out = sb.rampart(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("policy.toml") && stderr.contains("control characters"),
        "{stderr}"
    );
    assert_eq!(sb.ruleset(), before);
}
