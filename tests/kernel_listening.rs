//! `show listening` inside a server namespace: each listening socket, with the rules
//! that decide a new connection to it, or the default.

use std::path::Path;

#[test]
fn listening_sockets_and_their_rules() {
    let Some(mut sb) = rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
    else {
        return;
    };
    sb.serve_tcp(22).unwrap();
    sb.serve_tcp(8080).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&[
        "allow",
        "from",
        "198.18.0.0/24",
        "to",
        "any",
        "port",
        "8080",
        "proto",
        "tcp",
    ]);
    sb.rampart_ok(&["allow", "22/tcp"]);
    let out = sb.rampart_ok(&["show", "listening"]);
    let lines: Vec<&str> = out.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{out}"))
    };
    assert_eq!(lines[0], "tcp:");
    let ssh = at("  22 *");
    // The process that holds the socket: this test's own.
    assert!(lines[ssh].contains(" (kernel_listenin"), "{out}");
    assert_eq!(lines[ssh + 1], "   [ 2] allow 22/tcp", "{out}");
    let web = at("  8080 *");
    assert_eq!(
        lines[web + 1],
        "   [ 1] allow from 198.18.0.0/24 to any port 8080 proto tcp",
        "{out}"
    );
    assert_eq!(lines[web + 2], "   (otherwise the default: deny)", "{out}");
    assert!(lines.contains(&"udp:"), "{out}");
    // The real connections agree: 8080 is open to the sandbox's network.
    assert!(sb.tcp(0, false, 8080).is_open());
}
