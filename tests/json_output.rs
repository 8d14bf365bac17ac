//! `status --json` and `show added --json`: versioned documents a script can read
//! (README "JSON output").

use clap::Parser;
use rampart::backend::MemoryBackend;
use rampart::cli::{run_with, Cli};

fn run(dir: &std::path::Path, backend: &MemoryBackend, words: &[&str]) -> Result<String, String> {
    let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
    args.extend_from_slice(words);
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    run_with(cli, backend)
        .map(|l| l.join("\n"))
        .map_err(|e| e.to_string())
}

#[test]
fn status_and_rules_as_json() {
    let dir = std::env::temp_dir().join(format!("rampart-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = MemoryBackend::new();
    run(&dir, &backend, &["enable"]).unwrap();
    run(&dir, &backend, &["allow", "22/tcp"]).unwrap();
    run(
        &dir,
        &backend,
        &["limit", "80/tcp", "rate", "20/30s", "capacity", "500"],
    )
    .unwrap();
    run(
        &dir,
        &backend,
        &["deny", "from", "198.18.0.9", "comment", "a \"b\" c"],
    )
    .unwrap();

    let status: serde_json::Value =
        serde_json::from_str(&run(&dir, &backend, &["status", "--json"]).unwrap()).unwrap();
    assert_eq!(status["schema"], "rampart.status/1");
    assert_eq!(status["active"], true);
    assert_eq!(status["in_sync"], true);
    assert_eq!(status["logging"], "low");
    assert_eq!(status["defaults"]["incoming"], "deny");
    let rules = status["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 5, "{rules:?}");
    assert_eq!(rules[0]["number"], 1);
    assert_eq!(rules[0]["command"], "allow 22/tcp");
    assert_eq!(rules[0]["rule"]["action"], "allow");
    assert_eq!(rules[0]["rule"]["family"], "v4");
    assert_eq!(rules[1]["rule"]["limit"]["rate"], "20/30s");
    assert_eq!(rules[1]["rule"]["limit"]["capacity"], 500);
    assert_eq!(rules[2]["rule"]["comment"], "a \"b\" c");

    let added: serde_json::Value =
        serde_json::from_str(&run(&dir, &backend, &["show", "added", "--json"]).unwrap()).unwrap();
    assert_eq!(added["schema"], "rampart.rules/1");
    assert_eq!(added["rules"], status["rules"]);

    // After a hand edit the kernel no longer holds the file's policy.
    let path = dir.join("policy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("action = \"allow\"", "action = \"reject\"", 1),
    )
    .unwrap();
    let edited: serde_json::Value =
        serde_json::from_str(&run(&dir, &backend, &["status", "--json"]).unwrap()).unwrap();
    assert_eq!(edited["in_sync"], false);
    assert_eq!(edited["rules"], status["rules"], "what the kernel enforces");
    run(&dir, &backend, &["reload"]).unwrap();

    run(&dir, &backend, &["disable"]).unwrap();
    let off: serde_json::Value =
        serde_json::from_str(&run(&dir, &backend, &["status", "--json"]).unwrap()).unwrap();
    assert_eq!(off["active"], false);
    assert_eq!(off["enabled"], false);

    let err = run(&dir, &backend, &["show", "raw", "--json"]).unwrap_err();
    assert!(
        err.contains("--json is for 'status' and 'show added'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
