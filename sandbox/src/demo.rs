//! The demo: a small policy applied in throwaway namespaces and shown working on real
//! connections. Never touches the firewall of the namespace it is run from.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Sandbox;

/// Port the demo's web server listens on.
const WEB: u16 = 8080;
/// Port of a second service, refused politely.
const MAIL: u16 = 2525;
/// A proxy that must serve one connection at a time.
const PROXY: u16 = 3128;
/// A port exempt from the rate limit.
const EXEMPT: u16 = 30000;

/// Run the demo with the rampart binary `bin`, printing what happens.
pub fn run(bin: &Path) -> Result<()> {
    let mut sb = Sandbox::new(2, bin).context("building the demo namespaces")?;
    sb.serve_tcp(WEB)?;
    sb.serve_tcp(MAIL)?;
    sb.serve_tcp(PROXY)?;
    sb.serve_tcp(EXEMPT)?;
    println!(
        "Demo sandbox: server {} / {}, client A {} / {}, client B {} / {}",
        sb.srv.v4,
        sb.srv.v6,
        sb.clients[0].v4,
        sb.clients[0].v6,
        sb.clients[1].v4,
        sb.clients[1].v6
    );
    let a4 = sb.clients[0].v4.to_string();
    let b4 = sb.clients[1].v4.to_string();
    let step = |sb: &Sandbox, args: &[&str]| {
        println!("\n$ rampart {}", args.join(" "));
        print!("{}", sb.rampart_ok(args));
    };
    let probe = |sb: &Sandbox, who: usize, v6: bool, port: u16| {
        let t = Instant::now();
        let c = sb.tcp(who, v6, port);
        println!(
            "  client {} -> {}:{port}: {} ({} ms)",
            ["A", "B"][who],
            if v6 { "IPv6" } else { "IPv4" },
            c.word(),
            t.elapsed().as_millis()
        );
    };
    step(&sb, &["--force", "enable"]);
    println!("  (default: deny incoming)");
    probe(&sb, 0, false, WEB);
    step(&sb, &["allow", "8080/tcp"]);
    probe(&sb, 0, false, WEB);
    probe(&sb, 0, true, WEB);
    probe(&sb, 1, false, WEB);
    step(&sb, &["insert", "1", "deny", "from", &b4]);
    probe(&sb, 0, false, WEB);
    probe(&sb, 1, false, WEB);
    step(&sb, &["reject", "2525/tcp"]);
    probe(&sb, 0, false, MAIL);
    probe(&sb, 0, true, MAIL);
    step(
        &sb,
        &[
            "allow", "from", &a4, "to", "any", "port", "2525", "proto", "tcp",
        ],
    );
    println!("  (the reject above comes first, so A is still refused)");
    probe(&sb, 0, false, MAIL);
    step(&sb, &["status", "numbered"]);

    println!("\n--- Limits UFW cannot do ---");
    step(&sb, &["--force", "reset"]);
    step(&sb, &["--force", "enable"]);
    step(&sb, &["limit", "3128/tcp", "conn", "1", "per", "any"]);
    let held = sb.tcp(0, false, PROXY);
    println!("  client A -> IPv4:{PROXY}: {} (held open)", held.word());
    probe(&sb, 1, false, PROXY);
    probe(&sb, 1, true, PROXY);
    drop(held);
    let closed = Instant::now();
    let mut again = sb.tcp(1, false, PROXY);
    while !again.is_open() && closed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
        again = sb.tcp(1, false, PROXY);
    }
    println!(
        "  A closed; client B -> IPv4:{PROXY}: {} {} ms after A closed",
        again.word(),
        closed.elapsed().as_millis()
    );
    drop(again);

    step(
        &sb,
        &[
            "limit",
            "1:65535/tcp",
            "rate",
            "20/30s",
            "except",
            "30000:30005",
        ],
    );
    step(&sb, &["allow", "30000:30005/tcp"]);
    let count = |who: usize, port: u16, n: usize| {
        (0..n)
            .filter(|_| sb.tcp(who, false, port).is_open())
            .count()
    };
    println!(
        "  client A, 25 rapid connections to {WEB}: {} accepted",
        count(0, WEB, 25)
    );
    println!(
        "  client B, 5 rapid connections to {WEB}: {} accepted",
        count(1, WEB, 5)
    );
    println!(
        "  client A, 10 rapid connections to {EXEMPT} (exempt): {} accepted",
        count(0, EXEMPT, 10)
    );
    step(&sb, &["status"]);
    step(&sb, &["disable"]);
    probe(&sb, 1, false, WEB);
    println!("\nDemo done; removing its namespaces.");
    Ok(())
}
