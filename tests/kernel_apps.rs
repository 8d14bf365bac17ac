//! Application profiles in UFW's format on a real kernel: a rule naming a profile opens
//! its ports, `status` and `show added` name it, `app update` moves the rule to the
//! profile's new ports, and a broken profile is reported and skipped.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;

use rampart_sandbox::Sandbox;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(1, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

fn open(sb: &Sandbox, port: u16) -> bool {
    sb.tcp_timeout(0, false, port, Duration::from_millis(400))
        .is_open()
}

const PROFILES: &str =
    "[RampartTestWeb]\ntitle=Test web\ndescription=A web server for the test\nports=8080/tcp\n\n\
[Multi Test]\ntitle=Two groups\ndescription=TCP and UDP\nports=8081/tcp|8082/udp\n\n\
[Broken]\ntitle=b\nports=70000/tcp\n";

#[test]
fn rules_follow_their_profiles() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    for port in [8080, 8081, 9090] {
        sb.serve_tcp(port).unwrap();
    }
    let dir = sb.config_dir().join("applications.d");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    std::fs::write(dir.join("test"), PROFILES).unwrap();
    sb.rampart_ok(&["--force", "enable"]);

    let out = sb.rampart(&["app", "list"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.starts_with("Available applications:\n"), "{stdout}");
    assert!(stdout.contains("\n  Multi Test\n") && stdout.contains("\n  RampartTestWeb\n"));
    assert!(!stdout.contains("Broken"));
    assert!(
        stderr.contains("applications.d/test:11: profile 'Broken'"),
        "{stderr}"
    );
    let info = sb.rampart_ok(&["app", "info", "Multi Test"]);
    assert!(
        info.starts_with("Profile: Multi Test\nTitle: Two groups\nDescription: TCP and UDP\n\nPorts:\n  8081/tcp\n  8082/udp\n"),
        "{info}"
    );

    assert!(!open(&sb, 8080));
    let added = sb.rampart_ok(&["allow", "RampartTestWeb"]);
    assert_eq!(added, "Rule added\nRule added (v6)\n");
    assert!(open(&sb, 8080), "the profile's port is open");
    let status = sb.rampart_ok(&["status"]);
    assert!(
        status.contains("RampartTestWeb             ALLOW       Anywhere"),
        "{status}"
    );
    assert!(
        status.contains("RampartTestWeb (v6)        ALLOW       Anywhere (v6)"),
        "{status}"
    );
    let shown = sb.rampart_ok(&["show", "added"]);
    assert!(shown.contains("rampart allow RampartTestWeb\n"), "{shown}");

    // The profile moves to another port; app update moves the rule with it.
    std::fs::write(dir.join("test"), PROFILES.replace("8080/tcp", "9090/tcp")).unwrap();
    let out = sb.rampart_ok(&["app", "update", "RampartTestWeb"]);
    assert!(
        out.contains("Rules updated for profile 'RampartTestWeb'"),
        "{out}"
    );
    assert!(open(&sb, 9090), "the new port");
    assert!(!open(&sb, 8080), "not the old one");

    // The full form, a name with a space, and a profile of two protocols.
    let client = sb.clients[0].v4.to_string();
    sb.rampart_ok(&["allow", "from", &client, "to", "any", "app", "Multi Test"]);
    assert!(open(&sb, 8081));
    // One rule per group of the profile's ports.
    let status = sb.rampart_ok(&["status"]);
    assert_eq!(status.matches("Multi Test").count(), 2, "{status}");
    let all = sb.rampart_ok(&["app", "info", "all"]);
    assert!(
        all.contains("Profile: Multi Test\n") && all.contains("Profile: RampartTestWeb\n"),
        "{all}"
    );
    let shown = sb.rampart_ok(&["show", "added"]);
    assert!(
        shown.contains(&format!(
            "rampart allow from {client} to any app 'Multi Test'"
        )),
        "{shown}"
    );

    // New profiles: app default, then app update --add-new.
    std::fs::write(
        dir.join("fresh"),
        "[FreshApp]\ntitle=f\ndescription=f\nports=8090/tcp\n\n[OtherApp]\ntitle=o\ndescription=o\nports=8091/tcp\n",
    )
    .unwrap();
    let out = sb.rampart_ok(&["app", "update", "--add-new", "OtherApp"]);
    assert!(
        out.contains("Skipped adding rules for profile 'OtherApp'"),
        "{out}"
    );
    let out = sb.rampart_ok(&["app", "default", "allow"]);
    assert_eq!(out, "Default application policy changed to 'allow'\n");
    assert!(sb
        .rampart_ok(&["status", "verbose"])
        .contains("New profiles: allow\n"));
    sb.serve_tcp(8090).unwrap();
    assert!(!open(&sb, 8090));
    let out = sb.rampart_ok(&["app", "update", "--add-new", "FreshApp"]);
    assert_eq!(out, "Rule added\nRule added (v6)\n");
    assert!(open(&sb, 8090), "the new profile's rule");
    sb.rampart_ok(&["delete", "allow", "RampartTestWeb"]);
    assert!(!open(&sb, 9090), "deleted by its name");
    let out = sb.rampart(&["allow", "NoSuchApp"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ERROR: Could not find a profile matching 'NoSuchApp'\n"
    );
}
