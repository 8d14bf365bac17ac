//! `rampart top` driven in a pseudo-terminal (tmux, on a private socket) while a client
//! makes connections: the live view shows the busiest rules and the limit refusing,
//! with their counts, and `q` quits. Not on a terminal it prints a snapshot.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rampart_sandbox::Sandbox;

const A: usize = 0;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("tmux runs")
    }
    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", "top"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_the_busiest_rules_and_limits_live_and_q_quits() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    let have_tmux = Command::new("sh")
        .args(["-c", "command -v tmux"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_tmux {
        assert!(
            std::env::var("RAMPART_KERNEL_TESTS").as_deref() != Ok("required"),
            "tmux is not installed (apt-get install tmux)"
        );
        return;
    }
    sb.serve_tcp(80).unwrap();
    sb.serve_tcp(2222).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    sb.rampart_ok(&["allow", "80/tcp"]);
    sb.rampart_ok(&["limit", "2222/tcp", "rate", "2/30s"]);

    let tmux = Tmux(format!("rampart-top-{}", std::process::id()));
    let cmd = format!(
        "ip netns exec {} {} --config-dir {} top",
        sb.srv.ns,
        sb.bin().display(),
        sb.config_dir().display()
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &cmd,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Traffic while it watches: 10 connections to 80, 5 to the limit (3 refused).
    for _ in 0..10 {
        assert!(sb.tcp(A, false, 80).is_open());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sb.burst(A, false, 2222, 5), (2, 3, 0));
    std::thread::sleep(Duration::from_millis(2500));
    let screen = String::from_utf8_lossy(&tmux.run(&["capture-pane", "-p", "-t", "top"]).stdout)
        .into_owned();
    assert!(screen.contains("Busiest rules"), "{screen}");
    assert!(screen.contains("Limits refusing most"), "{screen}");
    let row = |needle: &str| -> Vec<String> {
        // Limits are looked up in their own table, below the rules'.
        let part = if needle.starts_with("limit") {
            screen.split("Limits refusing most").nth(1).unwrap_or("")
        } else {
            screen.as_str()
        };
        part.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no row {needle:?} in\n{screen}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // The busiest rule is first, with its packets; the limit shows its refused.
    let first = screen
        .lines()
        .find(|l| l.contains("[ ") && l.contains("/tcp"))
        .unwrap_or("");
    assert!(first.contains("allow 80/tcp"), "busiest first:\n{screen}");
    assert!(row("allow 80/tcp").iter().any(|w| w == "10"), "{screen}");
    assert!(
        row("limit 2222/tcp rate 2/30s").iter().any(|w| w == "3"),
        "{screen}"
    );
    assert!(
        screen.contains('█') || screen.contains('▁'),
        "sparklines:\n{screen}"
    );

    // q quits.
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!tmux.alive(), "top did not quit on q");

    // Not on a terminal: one snapshot of the totals.
    let snap = sb.rampart_ok(&["top"]);
    assert!(snap.starts_with("     packets  rule\n"), "{snap}");
    assert!(snap.contains("          10  [ 2] allow 80/tcp\n"), "{snap}");
    assert!(
        snap.contains("           3  [1,4] limit 2222/tcp rate 2/30s\n")
            || snap.contains("           3  [3] limit 2222/tcp rate 2/30s\n"),
        "{snap}"
    );
}
