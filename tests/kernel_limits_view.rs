//! `rampart limits` on real connections: the refused counts equal the connections
//! refused, the rate window's use per source, the open connections of a `conn` limit
//! as they open and close, and `limits --reset` letting a refused source in at once.

use std::path::Path;
use std::time::Duration;

use rampart_sandbox::{Conn, Sandbox};
use serde_json::Value;

const A: usize = 0;
const B: usize = 1;
const V4: bool = false;
const V6: bool = true;

fn sandbox() -> Option<Sandbox> {
    rampart_sandbox::for_test(2, Path::new(env!("CARGO_BIN_EXE_rampart")))
}

/// `limits --json`, with an `nft` on PATH that only fails: the limits are read over
/// netlink.
fn limits(sb: &Sandbox) -> Vec<Value> {
    let stand_in = sb.config_dir().join("no-nft");
    let path = rampart_sandbox::stand_in(&stand_in, "nft", "#!/bin/sh\nexit 1\n").unwrap();
    let out = sb
        .rampart_command(&["limits", "--json"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "limits without nft: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "rampart.limits/1");
    v["limits"].as_array().unwrap().clone()
}

/// `limits --json` with the kernel read through nft's listing of the whole table (the
/// path taken where netlink fails) instead of netlink.
fn limits_through_nft(sb: &Sandbox) -> Vec<Value> {
    let out = sb
        .rampart_command(&["limits", "--json"])
        .env("RAMPART_NFT_ELEMENTS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["limits"].as_array().unwrap().clone()
}

/// The two readings agree: the same limits, refused counts, keys and their slots, and
/// times left within the second that may pass between the two reads.
fn assert_same_reading(netlink: &[Value], nft: &[Value]) {
    let timeless = |all: &[Value]| -> Vec<Value> {
        let mut all = all.to_vec();
        for l in &mut all {
            for k in l["keys"].as_array_mut().into_iter().flatten() {
                let k = k.as_object_mut().unwrap();
                k.remove("next_slot_in");
                k.remove("expires_in");
            }
        }
        all
    };
    assert_eq!(timeless(netlink), timeless(nft));
    for (a, b) in netlink.iter().zip(nft) {
        for (x, y) in a["keys"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["keys"].as_array().unwrap())
        {
            for field in ["next_slot_in", "expires_in"] {
                if let (Some(x), Some(y)) = (x[field].as_u64(), y[field].as_u64()) {
                    assert!(x.abs_diff(y) <= 1, "{field}: {x} and {y}");
                }
            }
        }
    }
}

/// The limit whose first rule is `n`.
fn limit(all: &[Value], n: u64) -> Value {
    all.iter()
        .find(|l| l["rules"][0] == n)
        .unwrap_or_else(|| panic!("no limit of rule {n} in {all:?}"))
        .clone()
}

fn key<'a>(l: &'a Value, field: &str, k: &str) -> Option<&'a Value> {
    l[field].as_array()?.iter().find(|e| e["key"] == k)
}

#[test]
fn limits_show_what_is_refused_and_held_and_reset_unbans() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(80).unwrap();
    sb.serve_tcp(3128).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    sb.rampart_ok(&["limit", "80/tcp", "rate", "3/30s"]);
    sb.rampart_ok(&["limit", "3128/tcp", "conn", "2"]);
    // Rules: 1 80 (v4), 2 3128 (v4), 3 80 (v6), 4 3128 (v6).
    let a4 = sb.clients[A].v4.to_string();

    assert_eq!(sb.burst(A, V4, 80, 5), (3, 2, 0));
    assert_eq!(sb.burst(A, V6, 80, 4), (3, 1, 0));
    assert_eq!(sb.burst(B, V4, 80, 1), (1, 0, 0));
    let all = limits(&sb);
    assert_same_reading(&all, &limits_through_nft(&sb));
    let l4 = limit(&all, 1);
    assert_eq!(l4["refused"], 2, "{l4}");
    let a = key(&l4, "keys", &a4).unwrap_or_else(|| panic!("{l4}"));
    assert_eq!(
        (a["used"].as_u64(), a["of"].as_u64(), a["over"].as_bool()),
        (Some(3), Some(3), Some(true))
    );
    assert!(a["next_slot_in"].as_u64().unwrap() <= 30);
    let b = key(&l4, "keys", &sb.clients[B].v4.to_string()).unwrap();
    assert_eq!(
        (b["used"].as_u64(), b["over"].as_bool()),
        (Some(1), Some(false))
    );
    let l6 = limit(&all, 3);
    assert_eq!(l6["refused"], 1, "{l6}");
    // IPv6 sources are counted per /64, UFW-style limits' default.
    let net6 = format!(
        "{}/64",
        ipnet::Ipv6Net::new(sb.clients[A].v6, 64)
            .unwrap()
            .trunc()
            .addr()
    );
    assert_eq!(
        key(&l6, "keys", &net6).unwrap_or_else(|| panic!("{l6}"))["used"],
        3
    );

    // The text view says the same.
    let text = sb.rampart_ok(&["limits"]);
    assert!(
        text.contains("[ 1] limit 80/tcp rate 3/30s: refused 2 since applied"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "     {a4:<39} 3 of 3 in 30 s, over: a slot back in "
        )),
        "{text}"
    );

    // conn 2: the open connections per source follow them opening and closing.
    let held: Vec<Conn> = (0..2).map(|_| sb.tcp(A, V4, 3128)).collect();
    assert!(held.iter().all(Conn::is_open));
    assert_eq!(sb.tcp(A, V4, 3128).word(), "refused");
    assert_same_reading(&limits(&sb), &limits_through_nft(&sb));
    let l = limit(&limits(&sb), 2);
    assert_eq!(l["refused"], 1, "{l}");
    assert_eq!(key(&l, "open", &a4).unwrap()["connections"], 2, "{l}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let l = limit(&limits(&sb), 2);
    assert!(
        key(&l, "open", &a4).is_none(),
        "closed connections do not count: {l}"
    );

    // An unban: A's IPv4 state is forgotten in every limit, and A gets in at once.
    assert_eq!(sb.tcp(A, V4, 80).word(), "refused", "still over");
    let out = sb.rampart_ok(&["limits", "--reset", &a4]);
    assert!(out.starts_with(&format!("Reset {a4} in ")), "{out}");
    assert!(sb.tcp(A, V4, 80).is_open(), "in at once after the reset");
    assert_eq!(sb.tcp(A, V6, 80).word(), "refused", "IPv6 is another key");
    let out = sb.rampart_ok(&["limits", "--reset", "198.19.9.9"]);
    assert_eq!(out.trim(), "198.19.9.9 is not held by any limit");
    let bad = sb.rampart(&["limits", "--reset", "nonsense"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn a_per_any_window_and_a_token_bucket_read_alike_through_netlink_and_nft() {
    let Some(mut sb) = sandbox() else {
        return;
    };
    sb.serve_tcp(8080).unwrap();
    sb.serve_tcp(8081).unwrap();
    sb.rampart_ok(&["--force", "enable"]);
    // One window for everyone (its slots keyed by number alone), and a rate too high
    // for slots (a token bucket per source: its set tracks the sources).
    sb.rampart_ok(&["limit", "8080/tcp", "rate", "2/30s", "per", "any"]);
    sb.rampart_ok(&["limit", "8081/tcp", "rate", "100/1m"]);
    assert_eq!(sb.burst(A, V4, 8080, 2), (2, 0, 0));
    assert_eq!(
        sb.burst(B, V6, 8080, 1),
        (0, 1, 0),
        "IPv6 shares the window"
    );
    assert_eq!(sb.burst(A, V4, 8081, 3), (3, 0, 0));
    assert_eq!(sb.burst(B, V6, 8081, 2), (2, 0, 0));
    let all = limits(&sb);
    assert_same_reading(&all, &limits_through_nft(&sb));
    let window = limit(&all, 1);
    assert_eq!(window["refused"], 1, "{window}");
    let any = key(&window, "keys", "any").unwrap_or_else(|| panic!("{window}"));
    assert_eq!(
        (any["used"].as_u64(), any["over"].as_bool()),
        (Some(2), Some(true))
    );
    let bucket = all
        .iter()
        .find(|l| l["command"] == "limit 8081/tcp rate 100/1m")
        .unwrap_or_else(|| panic!("{all:?}"));
    let tracked = bucket["keys"].as_array().unwrap();
    assert!(
        tracked
            .iter()
            .any(|k| k["key"] == sb.clients[A].v4.to_string()),
        "{bucket}"
    );
}
