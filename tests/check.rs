//! `rampart check`: a table of policies with the findings each must give (kind, rule,
//! the other rule), and the command's text, JSON and exit status.

use rampart::backend::MemoryBackend;
use rampart::cli::{run_with, Cli, CliError};
use rampart::model::check::{check, Kind};

use clap::Parser;
use Kind::*;

/// The policy the commands make (through the command line, so numbered as `status
/// numbered` numbers them).
fn policy(n: usize, commands: &[&str]) -> rampart::model::Policy {
    let dir = std::env::temp_dir().join(format!("rampart-check-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = MemoryBackend::new();
    for cmd in commands {
        let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
        args.extend(cmd.split(' '));
        run_with(Cli::try_parse_from(args).unwrap(), &backend)
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    let p = rampart::store::parse_policy(&std::fs::read(dir.join("policy.toml")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    p
}

type Case = (
    &'static str,
    &'static [&'static str],
    &'static [(Kind, usize, Option<usize>)],
);

const CASES: &[Case] = &[
    ("one open port", &["allow 22/tcp"], &[(Exposed, 1, None)]),
    (
        "a narrower rule under a wider one",
        &[
            "allow 22/tcp",
            "allow from 198.18.0.5 to any port 22 proto tcp",
        ],
        &[(Shadowed, 2, Some(1)), (Exposed, 1, None)],
    ),
    (
        "a deny above an allow is fine",
        &["deny from 198.18.0.9", "allow 22/tcp"],
        &[(Exposed, 2, None)],
    ),
    (
        "UFW's surprise: a limit above a deny of the same port",
        &[
            "limit 22/tcp",
            "deny from 198.18.0.9 to any port 22 proto tcp",
        ],
        &[(LimitSurprise, 2, Some(1)), (Exposed, 1, None)],
    ),
    (
        "UFW's surprise, in part: a limit above a wider deny",
        &["limit 22/tcp", "deny from 198.18.0.9"],
        &[(LimitSurprise, 2, Some(1)), (Exposed, 1, None)],
    ),
    (
        "a limit that continues lets the deny decide",
        &["limit 22/tcp then continue", "deny from 198.18.0.9"],
        &[],
    ),
    (
        "a narrower allow above a wider one is redundant",
        &[
            "allow from 198.18.0.5 to any port 22 proto tcp",
            "allow 22/tcp",
        ],
        &[(Redundant, 1, Some(2)), (Exposed, 2, None)],
    ),
    (
        "not redundant when a rule between decides otherwise",
        &[
            "allow from 198.18.0.5 to any port 22 proto tcp",
            "deny from 198.18.0.0/24",
            "allow 22/tcp",
        ],
        &[(Exposed, 3, None)],
    ),
    (
        "tcp under tcp and udp, both families",
        &["deny 23/tcp", "deny 23"],
        &[(Redundant, 1, Some(2)), (Redundant, 3, Some(4))],
    ),
    (
        "an interface the host does not have",
        &["allow in on eth9 to any port 80 proto tcp"],
        &[(NoSuchInterface, 1, None), (NoSuchInterface, 2, None)],
    ),
    (
        "a wildcard that matches the host's eth0",
        &["allow in on eth+ to any port 80 proto tcp"],
        &[],
    ),
    (
        "an IPv4 network let in, no IPv6 twin",
        &["allow from 198.18.0.0/24 to any port 5432 proto tcp"],
        &[(NoIpv6Twin, 1, None)],
    ),
    (
        "both families let in",
        &[
            "allow from 198.18.0.0/24 to any port 5432 proto tcp",
            "allow from 2001:db8::/32 to any port 5432 proto tcp",
        ],
        &[],
    ),
    (
        "default allow incoming",
        &["default allow incoming", "deny 23"],
        &[(DefaultAllow, 0, None)],
    ),
    (
        "an allow under a reject of the same port (TCP and UDP)",
        &["reject 2222", "allow 2222/tcp"],
        &[(Shadowed, 2, Some(1)), (Shadowed, 4, Some(3))],
    ),
    (
        "a port of a list again",
        &["allow 80,443/tcp", "allow 443/tcp"],
        &[
            (Shadowed, 2, Some(1)),
            (Shadowed, 4, Some(3)),
            (Exposed, 1, None),
        ],
    ),
    (
        "a port of a range denied too late",
        &["allow 8000:8010/tcp", "deny 8005/tcp"],
        &[
            (Shadowed, 2, Some(1)),
            (Shadowed, 4, Some(3)),
            (Exposed, 1, None),
        ],
    ),
    (
        "except leaves the port to the deny",
        &["allow 8000:8010/tcp except 8005", "deny 8005/tcp"],
        &[(Exposed, 1, None)],
    ),
    (
        "route rules through other interfaces",
        &[
            "route allow in on eth0 out on eth1 to 198.18.2.0/24 port 80 proto tcp",
            "route deny in on eth0 out on eth2 to 198.18.2.0/24 port 80 proto tcp",
        ],
        &[(NoSuchInterface, 2, None), (NoIpv6Twin, 1, None)],
    ),
    (
        "outgoing rules shadow too",
        &["deny out 25", "allow out 25/tcp"],
        &[(Shadowed, 2, Some(1)), (Shadowed, 4, Some(3))],
    ),
    (
        "a logged rule shadows the plain one",
        &["allow log 22", "allow 22/tcp"],
        &[
            (Shadowed, 2, Some(1)),
            (Shadowed, 4, Some(3)),
            (Exposed, 1, None),
        ],
    ),
    (
        "a limit under an allow never limits",
        &["allow 22", "limit 22/tcp"],
        &[
            (Shadowed, 2, Some(1)),
            (Shadowed, 4, Some(3)),
            (Exposed, 1, None),
        ],
    ),
    (
        "the deny above the limit, as it should be",
        &[
            "deny from 198.18.0.9 to any port 22 proto tcp",
            "limit 22/tcp",
        ],
        &[(Exposed, 2, None)],
    ),
    (
        "a limit's except leaves the port to the deny below",
        &["limit 1000:2000/tcp except 1500", "deny 1500/tcp"],
        &[(Exposed, 1, None)],
    ),
    (
        "not redundant when a limit between would limit it",
        &[
            "allow from 198.18.0.7 to any port 22 proto tcp",
            "limit from 198.18.0.0/24 to any port 22 proto tcp",
            "allow 22/tcp",
        ],
        &[(Exposed, 3, None)],
    ),
    (
        "a limit is not redundant under one with other settings",
        &[
            "limit from 198.18.0.7 to any port 22 proto tcp rate 100/60s",
            "limit 22/tcp",
        ],
        &[(Exposed, 2, None)],
    ),
    (
        "a connection limit for everyone above a network's allow",
        &[
            "limit 3128/tcp conn 1 per any",
            "allow from 198.18.0.0/24 to any port 3128 proto tcp",
        ],
        &[(LimitSurprise, 2, Some(1)), (Exposed, 1, None)],
    ),
];

#[test]
fn each_policy_gives_its_findings() {
    assert!(CASES.len() >= 20);
    let ifaces = ["lo".to_string(), "eth0".into(), "eth1".into()];
    for (n, (title, commands, want)) in CASES.iter().enumerate() {
        let p = policy(n, commands);
        let got: Vec<(Kind, usize, Option<usize>)> = check(&p, &ifaces)
            .iter()
            .map(|f| (f.kind, f.rule.unwrap_or(0), f.other))
            .collect();
        let mut got_sorted = got.clone();
        let mut want_sorted = want.to_vec();
        let key = |x: &(Kind, usize, Option<usize>)| format!("{x:?}");
        got_sorted.sort_by_key(key);
        want_sorted.sort_by_key(key);
        assert_eq!(got_sorted, want_sorted, "{title}: {commands:?}");
    }
}

#[test]
fn the_command_says_it_and_exits_1_on_an_error() {
    let dir = std::env::temp_dir().join(format!("rampart-check-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = MemoryBackend::new();
    let run = |cmd: &str| {
        let mut args = vec!["rampart", "--force", "--config-dir", dir.to_str().unwrap()];
        args.extend(cmd.split(' '));
        run_with(Cli::try_parse_from(args).unwrap(), &backend)
    };
    run("allow 22/tcp").unwrap();
    // Adding a rule with the same match as one there updates it (UFW's way), so the
    // table's pairs differ in their match.
    let ok = run("check").unwrap();
    assert_eq!(ok.last().unwrap(), "2 rules checked: 0 errors, 0 warnings");
    assert!(
        ok[0].starts_with(
            "info: open to any source (IPv4 and IPv6): 22/tcp by rule 1 (allow 22/tcp)"
        ),
        "{ok:?}"
    );
    run("limit 2222/tcp").unwrap();
    run("deny from 198.18.0.9").unwrap();
    let Err(CliError::Differs(lines)) = run("check") else {
        panic!("an error finding exits 1");
    };
    assert_eq!(
        lines[0],
        "error: rule 3 (deny from 198.18.0.9) never sees the connections rule 2 (limit 2222/tcp) also matches: the limit accepts them while under it (UFW's meaning); move this rule above it, or add 'then continue' to the limit"
    );
    let Err(CliError::Differs(json)) = run("check --json") else {
        panic!("--json exits 1 too");
    };
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["schema"], "rampart.check/1");
    assert_eq!(v["errors"], 1);
    assert_eq!(v["findings"][0]["kind"], "limit-surprise");
    assert_eq!(v["findings"][0]["rule"], 3);
    assert_eq!(v["findings"][0]["other"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}
