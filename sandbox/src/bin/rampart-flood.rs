//! `rampart-flood [RAMPART]`: limits under attack, rampart beside UFW 0.36, in
//! throwaway namespaces (run by `bench/flood.sh`, from the repository root, as root).
//!
//! 1. The cost of a refused SYN: one source over its limit sends SYNs from a raw socket;
//!    the time per SYN (the server's processing runs on the sender's CPU: veth hands
//!    the packet over in the same call) for a plain drop rule and for each kind of
//!    limit, medians of several rounds, all in this one run.
//! 2. During a flood of spoofed sources at `limit 22/tcp`: how many of an attacker's
//!    own connections are accepted (the limit is 5 in 30 s) and how many of a new
//!    client's are served.
//!
//! UFW runs on private copies of its files (bench/ufw-env.sh, or UFW_ENV) inside the
//! sandbox's server namespace. Prints markdown tables.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rampart_sandbox::flood::spoofed_source;
use rampart_sandbox::Sandbox;

/// SYNs per measuring round, and rounds per configuration.
const SYNS: u32 = 100_000;
const ROUNDS: usize = 5;
/// The one spoofed source that is over its limit in the cost rounds (past every
/// source a flood here uses).
const OVER: u32 = 65_535;
const SENDER: usize = 1;

#[derive(Clone, Copy, PartialEq)]
enum Fw {
    Rampart,
    Ufw,
}

struct Bench {
    rampart: PathBuf,
    ufw_env: PathBuf,
}

impl Bench {
    /// A sandbox (4 clients: attacker, spoofing sender, new client, known client) with `fw` enabled and `rules` added.
    fn sandbox(&self, fw: Fw, rules: &[&str]) -> Result<Sandbox> {
        let mut sb = Sandbox::new(4, &self.rampart)?;
        sb.route_spoofed(SENDER)?;
        sb.serve_tcp(22)?;
        sb.serve_tcp(80)?;
        match fw {
            Fw::Rampart => {
                run(sb.rampart(&["--force", "enable"]), "rampart enable")?;
                for r in rules {
                    let words: Vec<&str> = r.split(' ').collect();
                    run(sb.rampart(&words), r)?;
                }
            }
            Fw::Ufw => {
                let state = sb.config_dir().join("ufw-state");
                std::fs::create_dir_all(&state)?;
                let lib = std::fs::canonicalize("/lib/ufw")?;
                for (from, to) in [
                    (Path::new("/etc/ufw"), "etc-ufw"),
                    (lib.as_path(), "lib-ufw"),
                    (Path::new("/etc/default/ufw"), "default-ufw"),
                ] {
                    let out = std::process::Command::new("cp")
                        .arg("-a")
                        .arg(from)
                        .arg(state.join(to))
                        .output()?;
                    run(out, "copy UFW's files")?;
                }
                let ufw = |args: &[&str]| {
                    let mut cmd = vec!["bash", self.ufw_env.to_str().unwrap_or_default()];
                    let state = state.to_str().unwrap_or_default();
                    cmd.push(state);
                    cmd.push("ufw");
                    cmd.extend(args);
                    sb.exec(&sb.srv.ns, &cmd)
                };
                run(ufw(&["--force", "enable"]), "ufw enable")?;
                for r in rules {
                    let words: Vec<&str> = r.split(' ').collect();
                    run(ufw(&words), r)?;
                }
            }
        }
        Ok(sb)
    }

    /// Median time per refused SYN from one spoofed source that is over its limit.
    fn cost(&self, fw: Fw, rules: &[&str]) -> Result<f64> {
        let sb = self.sandbox(fw, rules)?;
        let dst = sb.srv.addr(false);
        let one = |_| spoofed_source(false, OVER);
        // Past every limit measured (at most 256 per window).
        sb.syns_from(SENDER, dst, 80, 400, Duration::from_secs(10), one)?;
        let mut per: Vec<f64> = Vec::new();
        for _ in 0..ROUNDS {
            let f = sb.syns_from(SENDER, dst, 80, SYNS, Duration::from_secs(30), one)?;
            per.push(f.took.as_secs_f64() * 1e6 / f64::from(f.sent.max(1)));
        }
        per.sort_by(f64::total_cmp);
        Ok(per[per.len() / 2])
    }

    /// During a flood of `sources` spoofed sources at `limit 22/tcp` (about 3 s):
    /// (attacker's own connections accepted of 20, a new client's served of 5).
    fn during_flood(&self, fw: Fw, sources: u32) -> Result<(usize, usize)> {
        let sb = self.sandbox(fw, &["limit 22/tcp"])?;
        let chunks = 30;
        std::thread::scope(|s| {
            let flooder = s.spawn(|| -> Result<u32> {
                let mut sent = 0;
                for k in 0..chunks {
                    let n = sources / chunks + u32::from(k < sources % chunks);
                    let f = sb.spoof_syns(SENDER, false, 22, sent, n, Duration::from_secs(5))?;
                    sent += f.sent;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(sent)
            });
            std::thread::sleep(Duration::from_millis(300));
            let (mut attacker, mut client) = (0, 0);
            for i in 0..20 {
                attacker += usize::from(sb.tcp(0, false, 22).is_open());
                if i % 4 == 0 {
                    client += usize::from(sb.tcp(2, false, 22).is_open());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let sent = flooder.join().expect("flood thread")?;
            if sent != sources {
                bail!("the flood sent {sent} of {sources}");
            }
            Ok((attacker, client))
        })
    }
}

impl Bench {
    /// After a flood of `sources` spoofed sources at `limit 22/tcp` (sent at full
    /// speed): (attacker's own connections accepted of 20, a client seen once before
    /// the flood served of 4, a new client served of 5).
    fn after_flood(&self, fw: Fw, sources: u32) -> Result<(usize, usize, usize)> {
        let sb = self.sandbox(fw, &["limit 22/tcp"])?;
        if !sb.tcp(3, false, 22).is_open() {
            bail!("the known client was not served before the flood");
        }
        let f = sb.spoof_syns(SENDER, false, 22, 0, sources, Duration::from_secs(30))?;
        if f.sent != sources {
            bail!("the flood sent {} of {sources}", f.sent);
        }
        let count = |c: usize, n: usize| (0..n).filter(|_| sb.tcp(c, false, 22).is_open()).count();
        Ok((count(0, 20), count(3, 4), count(2, 5)))
    }
}

fn run(out: std::process::Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn report(b: &Bench) -> Result<String> {
    let mut out = String::new();
    out.push_str(&format!(
        "### Refused SYNs: time per SYN from one source over its limit (IPv4, median of {ROUNDS} rounds of {SYNS})\n\n"
    ));
    out.push_str(
        "| firewall | rule | µs per refused SYN | × its plain rule |\n|---|---|---:|---:|\n",
    );
    let rows: &[(Fw, &str, &[&str])] = &[
        (Fw::Rampart, "deny 80/tcp", &["deny 80/tcp"]),
        (
            Fw::Rampart,
            "limit 80/tcp rate 5/1h over drop",
            &["limit 80/tcp rate 5/1h over drop"],
        ),
        (
            Fw::Rampart,
            "limit 80/tcp rate 20/1h over drop",
            &["limit 80/tcp rate 20/1h over drop"],
        ),
        (
            Fw::Rampart,
            "limit 80/tcp rate 21/1h over drop",
            &["limit 80/tcp rate 21/1h over drop"],
        ),
        (
            Fw::Rampart,
            "limit 80/tcp rate 256/1h over drop",
            &["limit 80/tcp rate 256/1h over drop"],
        ),
        (
            Fw::Rampart,
            "limit 80/tcp conn 2 over drop",
            &["limit 80/tcp conn 2 over drop"],
        ),
        (Fw::Rampart, "reject 80/tcp", &["reject 80/tcp"]),
        (
            Fw::Rampart,
            "limit 80/tcp (UFW's 6 in 30 s, reject)",
            &["limit 80/tcp"],
        ),
        (Fw::Ufw, "reject 80/tcp", &["reject 80/tcp"]),
        (Fw::Ufw, "limit 80/tcp (recent, reject)", &["limit 80/tcp"]),
    ];
    let mut plain = std::collections::HashMap::new();
    for (fw, name, rules) in rows {
        let us = b.cost(*fw, rules).with_context(|| name.to_string())?;
        let fw_name = if *fw == Fw::Rampart { "rampart" } else { "UFW" };
        let over_drop = name.contains("over drop") || name.starts_with("deny");
        let key = (fw_name, over_drop);
        let base = *plain.entry(key).or_insert(us);
        out.push_str(&format!(
            "| {fw_name} | `{name}` | {us:.2} | {:.2} |\n",
            us / base
        ));
        eprintln!("{fw_name} {name}: {us:.2} µs");
    }
    out.push_str("\n(× its plain rule: against `deny` for the `over drop` rows, against `reject` for the others, of the same firewall.)\n\n");
    out.push_str("### During a flood of spoofed sources at `limit 22/tcp` (about 3 s)\n\n");
    out.push_str("| spoofed sources | rampart: attacker's own connections accepted (of 20; the limit is 5) | rampart: new client served (of 5) | UFW: attacker accepted | UFW: new client served |\n|---:|---:|---:|---:|---:|\n");
    for sources in [50, 200, 5_000, 20_000] {
        let (ra, rc) = b.during_flood(Fw::Rampart, sources)?;
        let (ua, uc) = b.during_flood(Fw::Ufw, sources)?;
        out.push_str(&format!("| {sources} | {ra} | {rc} | {ua} | {uc} |\n"));
        eprintln!("flood of {sources}: rampart {ra}/{rc}, UFW {ua}/{uc}");
    }
    out.push_str(
        "\n### After a flood of spoofed sources at `limit 22/tcp` (sent at full speed)\n\n",
    );
    out.push_str("| spoofed sources | rampart: attacker accepted (of 20) | rampart: client seen before served (of 4) | rampart: new client served (of 5) | UFW: attacker accepted | UFW: client seen before | UFW: new client |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for sources in [5_000, 30_000] {
        let (ra, rk, rn) = b.after_flood(Fw::Rampart, sources)?;
        let (ua, uk, un) = b.after_flood(Fw::Ufw, sources)?;
        out.push_str(&format!(
            "| {sources} | {ra} | {rk} | {rn} | {ua} | {uk} | {un} |\n"
        ));
        eprintln!("after a flood of {sources}: rampart {ra}/{rk}/{rn}, UFW {ua}/{uk}/{un}");
    }
    Ok(out)
}

fn main() -> ExitCode {
    let rampart = match rampart_sandbox::rampart_bin() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(why) = rampart_sandbox::kernel_unavailable() {
        eprintln!("ERROR: the benchmark cannot run: {why}");
        return ExitCode::from(1);
    }
    let ufw_env = std::env::var_os("UFW_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bench/ufw-env.sh"));
    let ufw_env = match std::fs::canonicalize(&ufw_env) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "ERROR: {}: {e} (run from the repository root, or set UFW_ENV)",
                ufw_env.display()
            );
            return ExitCode::from(1);
        }
    };
    match report(&Bench { rampart, ufw_env }) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::from(1)
        }
    }
}
