//! Commands run in-process against an in-memory kernel (no root needed): random and
//! mutated policy files never panic any command, what the grammar makes always passes
//! the file's checks (and what passes them the grammar can type back), and faults at
//! each step of an apply leave "kernel" and disk agreeing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use proptest::prelude::*;
use rampart::backend::{Backend, Fault, MemoryBackend};
use rampart::cli::{run_with, Cli};
use rampart::grammar::parse_rule;
use rampart::model::{Action, Policy};
use rampart::observe::rule_command;
use rampart::store::{policy_id, LockMode, Store};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh config directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rampart-cmd-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Run one command line (words after `rampart`) against `backend`.
fn run(dir: &Path, backend: &dyn Backend, words: &[&str]) -> Result<Vec<String>, String> {
    let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
    args.extend_from_slice(words);
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    run_with(cli, backend).map_err(|e| e.to_string())
}

/// Commands of every kind, run after a file is planted.
const COMMANDS: &[&[&str]] = &[
    &["status", "verbose"],
    &["status", "numbered"],
    &["show", "added"],
    &["--dry-run", "allow", "80/tcp"],
    &["allow", "22/tcp"],
    &["insert", "1", "deny", "from", "198.18.0.9"],
    &["delete", "1"],
    &["default", "reject"],
    &["limit", "2222/tcp", "rate", "3/1m"],
    &["reload"],
    &["disable"],
    &["enable"],
    &["reset"],
];

/// The "kernel" agrees with the policy file: it holds the file's plan (stamped with its
/// id) when the policy is enabled, nothing when it is not.
fn assert_agree(dir: &Path, backend: &MemoryBackend) {
    let store = Store::open(dir, LockMode::Shared).unwrap();
    assert!(!store.has_pending(), "a pending policy was left");
    let policy = store.load().unwrap().policy;
    match backend.held() {
        Some((plan, stamp)) => {
            assert!(policy.enabled, "loaded while the file says disabled");
            assert_eq!(stamp.policy, policy_id(&policy));
            // A change applies its plan without tags (nothing reads them there).
            let custom = rampart::compile::Custom::default();
            assert!(plan == rampart::compile::compile_untagged(&policy, &custom));
        }
        None => assert!(!policy.enabled, "not loaded while the file says enabled"),
    }
}

/// A valid policy file with rules of many kinds (for mutating).
fn sample_policy_text() -> String {
    let dir = TempDir::new();
    let backend = MemoryBackend::new();
    for cmd in [
        &["enable"][..],
        &["allow", "22/tcp"],
        &["limit", "80/tcp", "rate", "20/30s", "per", "/24"],
        &["limit", "3128/tcp", "conn", "2", "over", "drop"],
        &[
            "deny",
            "in",
            "on",
            "eth0",
            "from",
            "198.18.0.0/24",
            "to",
            "any",
            "port",
            "1000:2000",
            "proto",
            "udp",
        ],
        &["reject", "out", "25/tcp", "comment", "no mail"],
        &["allow", "from", "2001:db8::/48", "to", "any", "port", "53"],
        &[
            "limit",
            "1:65535/tcp",
            "rate",
            "5/30s",
            "except",
            "30000:30005",
        ],
    ] {
        run(&dir.0, &backend, cmd).unwrap();
    }
    fs::read_to_string(dir.0.join("policy.toml")).unwrap()
}

/// Plant `text` as the policy file (and `cache`, if any), then run every command:
/// each may fail, none may panic; after each, "kernel" and disk agree.
fn every_command_survives(text: &[u8], cache: Option<&[u8]>) {
    let dir = TempDir::new();
    fs::write(dir.0.join("policy.toml"), text).unwrap();
    if let Some(c) = cache {
        fs::write(dir.0.join(".policy.cache.json"), c).unwrap();
    }
    let backend = MemoryBackend::new();
    let mut result = Ok(vec![]);
    for cmd in COMMANDS {
        result = run(&dir.0, &backend, cmd);
        let reads = matches!(cmd[0], "status" | "show" | "--dry-run");
        if result.is_ok() && !reads {
            assert_agree(&dir.0, &backend);
        }
    }
    // `reset` (the last) works whatever the file held: the way out of a bad edit.
    assert!(result.is_ok(), "reset: {result:?}");
}

fn mutate(text: &str, op: u8, at: usize, token: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let i = at % lines.len().max(1);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match op % 6 {
        0 => {
            out.remove(i);
        }
        1 => out.insert(i, lines[i].to_string()),
        2 => out.swap(i, (i * 7 + 3) % lines.len()),
        3 => {
            // Replace a value.
            if let Some((key, _)) = lines[i].split_once(" = ") {
                out[i] = format!("{key} = {token}");
            }
        }
        4 => out.insert(i, token.to_string()),
        _ => {
            let mut bytes = lines[i].as_bytes().to_vec();
            if !bytes.is_empty() {
                let j = (at / 7) % bytes.len();
                bytes[j] = token.as_bytes().first().copied().unwrap_or(b'x');
            }
            out[i] = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    out.join("\n") + "\n"
}

/// Values that sit on or past a bound, or have the wrong type.
const TOKENS: &[&str] = &[
    "\"2000:1000\"",
    "\"0\"",
    "\"65536\"",
    "\"22:22\"",
    "\"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\"",
    "\"0/30s\"",
    "\"257/30s\"",
    "\"5/0s\"",
    "\"/0,/64\"",
    "\"/33\"",
    "0",
    "-1",
    "4294967296",
    "\"\"",
    "\"2001:db8::5/128\"",
    "\"198.18.0.5/24\"",
    "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
    "\"eth0:1\"",
    "true",
    "[]",
    "{}",
    "\"v6\"",
    "\"limit\"",
    "\"it's\"",
    "[[rule]]",
    "[rule.limit]",
    "address = \"198.18.0.1\"",
    "conn = 0",
    "\u{0}",
    "\"\\u0000\"",
    "1e999",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Random bytes as the policy file (and as its cache) never panic a command.
    #[test]
    fn random_files_never_panic(text in prop::collection::vec(any::<u8>(), 0..400),
                                cache in prop::option::of(prop::collection::vec(any::<u8>(), 0..200))) {
        every_command_survives(&text, cache.as_deref());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Mutations of a valid policy file never panic a command; what loads is valid
    /// and compiles.
    #[test]
    fn mutated_files_never_panic(ops in prop::collection::vec((any::<u8>(), any::<usize>(), 0..TOKENS.len()), 1..4)) {
        let mut text = sample_policy_text();
        for (op, at, t) in ops {
            text = mutate(&text, op, at, TOKENS[t]);
        }
        every_command_survives(text.as_bytes(), None);
    }
}

/// Rule words: pieces the grammar knows, in random order and number.
fn rule_words() -> impl Strategy<Value = Vec<String>> {
    let piece = prop_oneof![
        Just("in"),
        Just("out"),
        Just("on"),
        Just("eth0"),
        Just("log"),
        Just("proto"),
        Just("tcp"),
        Just("udp"),
        Just("esp"),
        Just("from"),
        Just("to"),
        Just("any"),
        Just("port"),
        Just("22"),
        Just("80,443"),
        Just("1000:2000"),
        Just("53"),
        Just("198.18.0.5"),
        Just("198.18.0.0/24"),
        Just("2001:db8::/48"),
        Just("2001:db8::7"),
        Just("rate"),
        Just("20/30s"),
        Just("conn"),
        Just("2"),
        Just("per"),
        Just("/24"),
        Just("over"),
        Just("drop"),
        Just("then"),
        Just("continue"),
        Just("except"),
        Just("1500"),
        Just("comment"),
        Just("note"),
        Just("22/tcp"),
        Just("1:65535/udp"),
    ];
    prop::collection::vec(piece.prop_map(String::from), 1..9)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// What the grammar accepts passes `Policy::validate` (so a file rampart wrote is
    /// always read back), and `show added`'s command for it parses to the same rule.
    #[test]
    fn grammar_and_file_checks_agree(action in 0..4u8, words in rule_words()) {
        let action = [Action::Allow, Action::Deny, Action::Reject, Action::Limit][action as usize];
        if let Ok(parsed) = parse_rule(action, &words) {
            for rule in &parsed.rules {
                prop_assert_eq!(rule.validate(), Ok(()), "{:?}", words);
                let typed = rule_command(rule);
                let mut again: Vec<String> = typed.split(' ').map(String::from).collect();
                let act = again.remove(0);
                prop_assert_eq!(act, action.word());
                // The comment is quoted in the command; take it back out (the word
                // `comment` followed by a quote: an interface may be called `comment`).
                let quoted = |i: usize| again.get(i + 1).is_some_and(|w| w.starts_with('\''));
                if let Some(i) = (0..again.len()).find(|&i| again[i] == "comment" && quoted(i)) {
                    let text = again.split_off(i + 1).join(" ");
                    again.push(text.trim_matches('\'').to_string());
                }
                let back = parse_rule(action, &again).map_err(|e| TestCaseError::fail(format!("{typed}: {e}")))?;
                prop_assert!(back.rules.contains(rule), "{} -> {:?}", typed, back.rules);
            }
        }
    }
}

/// Defect 5 in-process: a fault at each step leaves "kernel" and disk agreeing, and the
/// error says what happened.
#[test]
fn faults_at_each_step_leave_kernel_and_disk_agreeing() {
    let dir = TempDir::new();
    let backend = MemoryBackend::new();
    run(&dir.0, &backend, &["enable"]).unwrap();
    run(&dir.0, &backend, &["allow", "22/tcp"]).unwrap();
    let before = fs::read(dir.0.join("policy.toml")).unwrap();
    let cases = [
        (vec![Fault::Refuse], "nothing was changed"),
        (
            vec![Fault::FailAfterApplying],
            "the previous firewall was restored",
        ),
        (vec![Fault::Verify], "the previous firewall was restored"),
        (
            vec![Fault::FailAfterApplying, Fault::Refuse],
            "restoring the previous firewall failed too",
        ),
    ];
    for (faults, want) in cases {
        for f in &faults {
            backend.inject(*f);
        }
        let err = run(&dir.0, &backend, &["default", "reject"]).unwrap_err();
        assert!(err.contains(want), "{faults:?}: {err}");
        // The next command settles it; then both agree.
        run(&dir.0, &backend, &["status"]).unwrap();
        assert_agree(&dir.0, &backend);
        if faults.len() == 1 {
            assert_eq!(fs::read(dir.0.join("policy.toml")).unwrap(), before);
        } else {
            // The kernel kept the change, so the file took it too.
            let p: Policy =
                toml::from_str(&fs::read_to_string(dir.0.join("policy.toml")).unwrap()).unwrap();
            assert_eq!(p.defaults.incoming.word(), "reject");
            run(&dir.0, &backend, &["default", "deny"]).unwrap();
        }
    }
}
