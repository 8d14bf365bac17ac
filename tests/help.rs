//! Help that teaches: every command's `--help` shows examples, the rule commands'
//! help names every word of the rule language (and `limit`'s every limit option), and
//! every example of a rule command is a command rampart takes (tried as a dry run).

use clap::CommandFactory;
use rampart::backend::MemoryBackend;
use rampart::cli::{run_with, Cli};

use clap::Parser;

/// The text of `rampart CMD --help`.
fn help(cmd: &str) -> String {
    match Cli::try_parse_from(["rampart", cmd, "--help"]) {
        Err(e) => e.render().to_string(),
        Ok(_) => panic!("--help parsed as a command"),
    }
}

/// The example command lines of a help text.
fn examples(text: &str) -> Vec<String> {
    rampart::cli::help_examples(text)
}

/// The examples that run rampart, without the program's name.
fn rampart_examples(text: &str) -> Vec<String> {
    examples(text)
        .iter()
        .filter_map(|e| e.strip_prefix("rampart ").map(String::from))
        .collect()
}

const RULE_WORDS: [&str; 13] = [
    "in", "out", "on", "log", "log-all", "proto", "from", "to", "port", "app", "except", "comment",
    "tcp",
];
const LIMIT_WORDS: [&str; 6] = ["rate", "conn", "per", "over", "then", "capacity"];

#[test]
fn every_command_shows_examples_and_its_grammar() {
    let cli = Cli::command();
    let mut seen = 0;
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let text = help(name);
        let ex = rampart_examples(&text);
        assert!(!ex.is_empty(), "{name}: no example runs rampart");
        let ex_all = examples(&text);
        assert!(
            ex_all.len() >= 2,
            "{name}: {} examples in\n{text}",
            ex_all.len()
        );
        seen += 1;
        let words = |list: &[&str]| {
            for w in list {
                assert!(
                    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
                        .any(|t| t == *w),
                    "{name} --help does not name '{w}':\n{text}"
                );
            }
        };
        if [
            "allow", "deny", "reject", "limit", "insert", "prepend", "delete", "route",
        ]
        .contains(&name)
        {
            words(&RULE_WORDS);
        }
        if name == "limit" {
            words(&LIMIT_WORDS);
            for seed in [
                "limit 80/tcp rate 20/30s except 30000:30005",
                "limit 3128/tcp conn 1 per any",
            ] {
                assert!(ex.iter().any(|e| e == seed), "limit's examples lack {seed}");
            }
        }
    }
    assert!(seen >= 20, "{seen} commands");
}

#[test]
fn the_examples_of_rule_commands_run() {
    let dir = std::env::temp_dir().join(format!("rampart-help-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let profiles = dir.join("applications.d");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("openssh-server"),
        "[OpenSSH]\ntitle=Secure shell server\ndescription=OpenSSH\nports=22/tcp\n",
    )
    .unwrap();
    rampart::grammar::use_profile_dirs(vec![profiles]);
    let backend = MemoryBackend::new();
    // A few rules first, so that the examples' numbers exist.
    for rule in ["22/tcp", "80/tcp", "443/tcp", "8080/tcp"] {
        let args = [
            "rampart",
            "--config-dir",
            dir.to_str().unwrap(),
            "allow",
            rule,
        ];
        run_with(Cli::try_parse_from(args).unwrap(), &backend).unwrap();
    }
    let mut ran = 0;
    for cmd in [
        "allow", "deny", "reject", "limit", "insert", "prepend", "delete", "route", "default",
        "logging", "status", "show", "app",
    ] {
        for ex in rampart_examples(&help(cmd)) {
            let mut args = vec![
                "rampart".to_string(),
                "--dry-run".into(),
                "--config-dir".into(),
                dir.display().to_string(),
            ];
            // Split as a shell would: words, and one quoted word.
            let mut rest = ex.as_str();
            while !rest.is_empty() {
                rest = rest.trim_start();
                if let Some(q) = rest.strip_prefix('\'') {
                    let end = q.find('\'').unwrap();
                    args.push(q[..end].to_string());
                    rest = &q[end + 1..];
                } else {
                    let end = rest.find(' ').unwrap_or(rest.len());
                    args.push(rest[..end].to_string());
                    rest = &rest[end..];
                }
            }
            // A delete of a rule that is not there is an answer, not an error.
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{ex}: {e}"));
            if let Err(e) = run_with(cli, &backend) {
                panic!("rampart {ex}: {e}");
            }
            ran += 1;
        }
    }
    assert!(ran >= 30, "{ran} examples");
    let _ = std::fs::remove_dir_all(&dir);
}
