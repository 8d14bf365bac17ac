//! Crashes: rampart killed (`kill -9`) at random moments while it changes a policy of
//! 2,006 rules. After the next command, the kernel must hold exactly what the policy
//! file says, every time. Docs: README "After a crash".

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rampart::grammar::parse_rule;
use rampart::model::{Action, Policy, Position};
use rampart::store::{LockMode, Store};
use rampart_sandbox::Lcg;

/// Trials, each one kill.
const TRIALS: usize = 200;

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// 1,000 denied hosts, 500 open ports (an IPv4 and an IPv6 rule each) and three
/// commands more: 2,006 rules.
fn big_policy() -> Policy {
    let mut p = Policy {
        enabled: true,
        ..Policy::default()
    };
    let mut add = |action, text: &str| {
        let rules = parse_rule(action, &words(text)).unwrap().rules;
        p.add_all(rules, Position::Append).unwrap();
    };
    for i in 0..1000 {
        add(
            Action::Deny,
            &format!("from 198.19.{}.{}", i / 250, i % 250),
        );
    }
    for i in 0..500 {
        add(Action::Allow, &format!("{}/tcp", 10_000 + i));
    }
    add(Action::Allow, "80/tcp");
    add(Action::Limit, "22/tcp");
    add(Action::Reject, "25/tcp");
    assert_eq!(p.rules.len(), 2006);
    p
}

/// The command of trial `k`: element-only changes and whole-table changes.
fn change(g: &mut Lcg, k: usize) -> Vec<String> {
    let text = match g.next(5) {
        0 => format!("allow {}/tcp", 20_000 + k),
        1 => format!("delete allow {}/tcp", 10_000 + g.next(500)),
        2 => format!("insert 1 deny from 198.19.9.{}", k % 250),
        3 => format!(
            "default {} incoming",
            if g.next(2) == 0 { "reject" } else { "deny" }
        ),
        _ => format!("logging {}", if g.next(2) == 0 { "off" } else { "low" }),
    };
    let mut w = words(&text);
    w.insert(0, "--force".into());
    w
}

/// The first object that differs between two table listings, shortened.
fn first_difference(have: &serde_json::Value, want: &serde_json::Value) -> String {
    let items = |v: &serde_json::Value| v["nftables"].as_array().cloned().unwrap_or_default();
    let (a, b) = (items(have), items(want));
    let short = |v: Option<&serde_json::Value>| {
        let t = v.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into());
        t.chars().take(300).collect::<String>()
    };
    (0..a.len().max(b.len()))
        .find(|&i| a.get(i) != b.get(i))
        .map(|i| {
            format!(
                "kernel has {}, file says {}",
                short(a.get(i)),
                short(b.get(i))
            )
        })
        .unwrap_or_default()
}

/// Docs: README "After a crash" — 200 kill -9 at random moments, 0 disagreements.
#[test]
fn kill_9_at_random_moments_leaves_kernel_and_file_agreeing() {
    let Some(mut sb) = rampart_sandbox::for_test(0, Path::new(env!("CARGO_BIN_EXE_rampart")))
    else {
        return;
    };
    let reference = sb.spare_ns().unwrap();
    let ref_dir = sb.config_dir().with_extension("ref");
    let store = Store::open(sb.config_dir(), LockMode::Exclusive).unwrap();
    store.save(&big_policy()).unwrap();
    drop(store);
    sb.rampart_ok(&["reload"]);

    // How long a change takes here: kills land anywhere in that window.
    let mut g = Lcg(2006);
    let mut longest = Duration::ZERO;
    for k in 0..4 {
        let args = change(&mut g, 1000 + k);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Instant::now();
        sb.rampart_ok(&args);
        longest = longest.max(t.elapsed());
    }
    let window = longest.as_micros() as u64 * 12 / 10;

    let (mut recovered, mut wrong) = (0, Vec::new());
    let mut toggle = false;
    for k in 0..TRIALS {
        let args = change(&mut g, k);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = sb
            .rampart_command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(g.next(window)));
        let _ = child.kill();
        let _ = child.wait();

        // The next command: a reader or a writer, alternately.
        let next = if k % 2 == 0 {
            sb.rampart(&["status"])
        } else {
            toggle = !toggle;
            sb.rampart(&if toggle {
                vec!["allow", "2/tcp"]
            } else {
                vec!["--force", "delete", "allow", "2/tcp"]
            })
        };
        let stderr = String::from_utf8_lossy(&next.stderr);
        assert!(next.status.success(), "trial {k}: {stderr}");
        if stderr.contains("interrupted change") {
            recovered += 1;
        }
        // Agreement: what the file says, loaded afresh elsewhere, is what the kernel has.
        let want = sb.full_apply_table(&reference, &ref_dir);
        let have = sb.table_json(&sb.srv.ns);
        if have != want {
            wrong.push((
                k,
                format!("{}: {}", args.join(" "), first_difference(&have, &want)),
            ));
        }
        if stderr.contains("WARN") && k % 2 == 0 {
            wrong.push((k, format!("status warned: {stderr}")));
        }
    }
    let _ = std::fs::remove_dir_all(&ref_dir);
    eprintln!(
        "{TRIALS} kills within {} ms of a change: {recovered} interrupted changes found and settled by the next command, {} disagreements",
        window / 1000,
        wrong.len()
    );
    assert!(wrong.is_empty(), "disagreements: {wrong:?}");
    // The kills did land inside changes (the trials test something).
    assert!(
        recovered >= TRIALS / 20,
        "only {recovered} kills interrupted a change"
    );
}
