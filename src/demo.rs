//! `rampart demo`: a small policy applied in throwaway namespaces and shown working on
//! real connections. Never touches the firewall of the namespace it is run from.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::sandbox::Sandbox;

/// Port the demo's web server listens on.
const WEB: u16 = 8080;
/// Port of a second service, refused politely.
const MAIL: u16 = 2525;

/// Run the demo, printing what happens.
pub fn run() -> Result<()> {
    let bin = std::env::current_exe().context("finding the rampart binary")?;
    let mut sb = Sandbox::new(2, &bin).context("building the demo namespaces")?;
    sb.serve_tcp(WEB)?;
    sb.serve_tcp(MAIL)?;
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
    step(&sb, &["disable"]);
    probe(&sb, 1, false, WEB);
    println!("\nDemo done; removing its namespaces.");
    Ok(())
}
