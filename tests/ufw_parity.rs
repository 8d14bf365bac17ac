//! UFW parity: the command sequences of tests/ufw/sequences.txt, replayed against
//! rampart (an in-memory kernel) and compared with what UFW 0.36.2 answered
//! (tests/ufw/recorded.txt, written by scripts/ufw-record.sh). Output must be the same
//! line for line, but for the program's name in `show added`; two refusals agree
//! whatever their wording. Warnings (`WARN: …`, which rampart writes to stderr) are
//! left out of UFW's answers: the in-memory run sees stdout only.

use rampart::backend::MemoryBackend;
use rampart::cli::{run_with, Cli};

use clap::Parser;

/// (title, [(command, UFW's answer lines)])
type Sequence = (String, Vec<(String, Vec<String>)>);

fn recorded() -> Vec<Sequence> {
    let text = include_str!("ufw/recorded.txt");
    let mut out: Vec<Sequence> = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("=== ") {
            out.push((title.to_string(), Vec::new()));
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            out.last_mut()
                .expect("a sequence")
                .1
                .push((cmd.to_string(), Vec::new()));
        } else if let Some((_, cmds)) = out.last_mut() {
            if let Some((_, answer)) = cmds.last_mut() {
                answer.push(
                    line.replace("(see 'ufw status'", "(see 'rampart status'")
                        .replacen("ufw ", "rampart ", usize::from(line.starts_with("ufw "))),
                );
            }
        }
    }
    out
}

fn rampart(dir: &std::path::Path, backend: &MemoryBackend, cmd: &str) -> Vec<String> {
    let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
    args.extend(cmd.split(' '));
    match Cli::try_parse_from(args) {
        Err(e) => vec![format!("ERROR: {e}")],
        Ok(cli) => match run_with(cli, backend) {
            Ok(lines) => lines
                .iter()
                .flat_map(|l| l.split('\n').map(String::from).collect::<Vec<_>>())
                .collect(),
            Err(e) => vec![format!("ERROR: {e}")],
        },
    }
}

#[test]
fn rampart_answers_as_ufw_does() {
    // The profiles UFW had: its package's, kept in tests/ufw/applications.d (and no
    // others, whatever this machine has installed).
    rampart::grammar::use_profile_dirs(vec![
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ufw/applications.d")
    ]);
    let sequences = recorded();
    assert!(sequences.len() >= 8);
    let (mut agree, mut total) = (0, 0);
    let mut failures = Vec::new();
    for (title, cmds) in &sequences {
        let dir = tempdir(title);
        let backend = MemoryBackend::new();
        rampart(&dir, &backend, "enable");
        for (cmd, ufw) in cmds {
            total += 1;
            let mut ours = rampart(&dir, &backend, cmd);
            // UFW ends a status table with an empty line; a trailing one is not kept
            // apart from that.
            while ours.last().is_some_and(|l| l.is_empty()) && ours.len() > ufw.len() {
                ours.pop();
            }
            let mut theirs: Vec<String> = ufw
                .iter()
                .filter(|l| !l.starts_with("WARN: "))
                .cloned()
                .collect();
            while theirs.last().is_some_and(|l| l.is_empty()) && theirs.len() > ours.len() {
                theirs.pop();
            }
            let refusals = ours.first().is_some_and(|l| l.starts_with("ERROR: "))
                && theirs.first().is_some_and(|l| l.starts_with("ERROR: "));
            if refusals || ours == theirs {
                agree += 1;
            } else {
                failures.push(format!(
                    "[{title}] {cmd}\n  UFW:     {theirs:?}\n  rampart: {ours:?}"
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("UFW parity: {agree} of {total} commands answered alike");
    assert!(
        failures.is_empty(),
        "{agree} of {total} alike:\n{}",
        failures.join("\n")
    );
}

fn tempdir(title: &str) -> std::path::PathBuf {
    let n: u32 = title.bytes().map(u32::from).sum();
    let dir = std::env::temp_dir().join(format!("rampart-parity-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
