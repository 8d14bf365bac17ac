//! UFW's `show` reports of the ruleset's parts: builtins, before-rules, user-rules,
//! after-rules, logging-rules (nft text of the compiled policy).

use clap::Parser;
use rampart::backend::MemoryBackend;
use rampart::cli::{run_with, Cli};

fn run(dir: &std::path::Path, backend: &MemoryBackend, words: &[&str]) -> String {
    let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
    args.extend_from_slice(words);
    let cli = Cli::try_parse_from(args).unwrap();
    run_with(cli, backend).unwrap().join("\n")
}

#[test]
fn the_parts_of_the_ruleset() {
    let dir = std::env::temp_dir().join(format!("rampart-show-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = MemoryBackend::new();
    run(&dir, &backend, &["enable"]);
    run(&dir, &backend, &["allow", "22/tcp"]);
    run(&dir, &backend, &["limit", "80/tcp"]);
    let show = |r: &str| run(&dir, &backend, &["show", r]);
    let builtins = show("builtins");
    assert!(builtins.contains("chain input {") && builtins.contains("chain output {"));
    assert!(builtins.contains("jump user_input"), "{builtins}");
    let before = show("before-rules");
    assert!(before.contains("chain before_icmp {"), "{before}");
    assert!(
        before.contains("ct state established,related accept") || before.contains("established"),
        "{before}"
    );
    assert!(!before.contains("jump user_input"), "{before}");
    let user = show("user-rules");
    assert!(user.contains("chain user_input {"), "{user}");
    assert!(user.contains("chain limit_"), "{user}");
    assert!(!user.contains("chain before_icmp"), "{user}");
    let after = show("after-rules");
    assert!(
        !after.contains("jump user_input") && !after.contains("before_icmp"),
        "{after}"
    );
    let logging = show("logging-rules");
    assert!(logging.contains("log prefix \"[RAMPART"), "{logging}");
    assert!(
        logging
            .lines()
            .filter(|l| l.trim_start().starts_with("ct state") || l.contains("jump user_input"))
            .count()
            == 0,
        "{logging}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
