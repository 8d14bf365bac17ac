//! Custom rules (`before.nft`, `after.nft`) on real connections: where they run
//! relative to the user rules, and that a bad snippet changes nothing, on disk or in
//! the kernel, with an error that names the file and line.

use std::path::Path;
use std::time::Duration;

use rampart_sandbox::{Conn, Sandbox};

const A: usize = 0;
const B: usize = 1;
const V4: bool = false;
const V6: bool = true;
const SHORT: Duration = Duration::from_millis(400);

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(2, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

fn write(sb: &Sandbox, name: &str, text: &str) {
    std::fs::write(sb.config_dir().join(name), text).unwrap();
}

fn word(c: Conn) -> &'static str {
    c.word()
}

#[test]
fn snippets_run_around_the_user_rules_and_a_bad_one_changes_nothing() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [80, 2222, 3333, 4444] {
        sb.serve_tcp(port).unwrap();
    }
    let b4 = sb.clients[B].v4;
    write(
        &sb,
        "before.nft",
        &format!(
            "# B is refused before any user rule; 2222 is open without one.\n\
             set blocked {{\n    type ipv4_addr\n    elements = {{ {b4} }}\n}}\n\
             chain input {{\n    ip saddr @blocked drop\n    tcp dport 2222 accept\n}}\n"
        ),
    );
    write(
        &sb,
        "after.nft",
        "# What no user rule decides on 3333 and 4444 is refused with a reset.\n\
         chain input {\n    tcp dport { 3333, 4444 } reject with tcp reset\n}\n",
    );
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "80/tcp"]);
    sb.rampart_ok(&["deny", "4444/tcp"]);

    for v6 in [V4, V6] {
        assert!(sb.tcp(A, v6, 80).is_open(), "user rule, v6={v6}");
        assert!(sb.tcp(A, v6, 2222).is_open(), "before.nft accepts, v6={v6}");
        // after.nft decides what the user rules leave...
        assert_eq!(word(sb.tcp(A, v6, 3333)), "refused", "after.nft, v6={v6}");
        // ... and not what they decide: the user's deny comes first.
        assert_eq!(word(sb.tcp_timeout(A, v6, 4444, SHORT)), "timed out");
    }
    // before.nft runs before the user rules: B's IPv4 is dropped even on 80.
    assert_eq!(word(sb.tcp_timeout(B, V4, 80, SHORT)), "timed out");
    assert!(sb.tcp(B, V6, 80).is_open(), "the set holds B's IPv4 only");

    let before = sb.rampart_ok(&["show", "before-rules"]);
    assert!(before.contains("chain custom_before_input"), "{before}");
    assert!(
        before.contains("ip saddr @custom_before_blocked drop"),
        "{before}"
    );
    let after = sb.rampart_ok(&["show", "after-rules"]);
    assert!(after.contains("chain custom_after_input"), "{after}");
    assert!(!after.contains("custom_before"), "{after}");

    // A syntax error: the change is refused, the error names the file and line, and
    // neither the policy file nor the kernel changed.
    let policy = std::fs::read(sb.config_dir().join("policy.toml")).unwrap();
    let table = sb.table_json(&sb.srv.ns.clone());
    write(
        &sb,
        "after.nft",
        "chain input {\n    tcp dport 3333 reject with tcp reset\n    tcp dport 3334 rejekt\n}\n",
    );
    let out = sb.rampart(&["allow", "81/tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let path = sb.config_dir().join("after.nft").canonicalize().unwrap();
    assert!(
        err.starts_with(&format!("ERROR: {} line 3: ", path.display())),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("fix the file, nothing was changed"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read(sb.config_dir().join("policy.toml")).unwrap(),
        policy
    );
    assert_eq!(sb.table_json(&sb.srv.ns.clone()), table, "kernel unchanged");

    // What rampart does not take: another chain, a hook, a jump.
    for (text, what) in [
        (
            "chain other {\n    accept\n}\n",
            "chain 'other': a snippet writes only chains input, output and forward",
        ),
        (
            "chain input {\n    type filter hook input priority 0; policy accept;\n}\n",
            "chain 'input' has a type or hook",
        ),
        (
            "chain input {\n    jump input\n}\n",
            "rule 1 of chain 'input': jump and goto are not supported",
        ),
    ] {
        write(&sb, "after.nft", text);
        let out = sb.rampart(&["reload"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(what), "{text}: {err}");
        assert_eq!(sb.table_json(&sb.srv.ns.clone()), table, "kernel unchanged");
    }

    // An include: refused with its line (nft would read a file that is not checked
    // as the config directory's are), changing nothing.
    let other = sb.config_dir().join("other.nft");
    std::fs::write(&other, "tcp dport 5555 accept\n").unwrap();
    write(
        &sb,
        "after.nft",
        &format!("chain input {{\n    include \"{}\"\n}}\n", other.display()),
    );
    let out = sb.rampart(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{} line 2: 'include' is not taken in custom rules",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(sb.table_json(&sb.srv.ns.clone()), table, "kernel unchanged");
    std::fs::remove_file(&other).unwrap();

    // A broken snippet does not stop the firewall from being turned off...
    sb.rampart_ok(&["disable"]);
    // ... and at boot the policy is loaded without the custom rules (never left
    // open), with the error said.
    let good = "chain input {\n    tcp dport 3333 reject with tcp reset\n}\n";
    write(&sb, "after.nft", good);
    sb.rampart_ok(&["--force", "enable"]);
    write(&sb, "after.nft", "chain input {\n    jump input\n}\n");
    let out = sb.rampart(&["boot"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the policy was loaded without the custom rules"),
        "{err}"
    );
    assert!(sb.tcp(A, V4, 80).is_open(), "the policy is loaded");
    assert_eq!(word(sb.tcp_timeout(A, V4, 2222, SHORT)), "timed out");

    // A snippet nft reads but the kernel refuses where rampart hooks it (masquerade in
    // a filter chain): a reload changes nothing; boot loads the policy without it.
    write(&sb, "after.nft", good);
    sb.rampart_ok(&["reload"]);
    write(&sb, "before.nft", "chain input {\n    masquerade\n}\n");
    let before_reload = sb.table_json(&sb.srv.ns.clone());
    let out = sb.rampart(&["reload"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sb.table_json(&sb.srv.ns.clone()),
        before_reload,
        "nothing changed"
    );
    let out = sb.rampart(&["boot"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the kernel refused the policy with the custom rules"),
        "{err}"
    );
    assert!(sb.tcp(A, V4, 80).is_open(), "the policy is loaded");
    assert_eq!(word(sb.tcp_timeout(A, V4, 4444, SHORT)), "timed out");
    // A verdict map's jump is refused as a rule's is.
    write(
        &sb,
        "before.nft",
        "map m {\n    type inet_service : verdict\n    elements = { 22 : jump input }\n}\nchain input {\n    tcp dport vmap @m\n}\n",
    );
    let out = sb.rampart(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("map 'm': jump and goto are not supported"),
        "{err}"
    );
    write(
        &sb,
        "before.nft",
        &format!(
            "set blocked {{\n    type ipv4_addr\n    elements = {{ {b4} }}\n}}\n\
             chain input {{\n    ip saddr @blocked drop\n    tcp dport 2222 accept\n}}\n"
        ),
    );

    // Fixed, a reload brings the custom rules back.
    write(&sb, "after.nft", good);
    sb.rampart_ok(&["reload"]);
    assert!(sb.tcp(A, V4, 2222).is_open());
    assert_eq!(word(sb.tcp(A, V4, 3333)), "refused");
}
