//! The optimiser keeps first-match order: for random policies and packets, the compiled
//! plan (run by the interpreter) decides exactly as the reference evaluator of the model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use rampart::compile::compile;
use rampart::interpret;
use rampart::model::{
    Action, Direction, Endpoint, Family, Limit, Packet, Policy, PortRange, Ports, Proto, Rule,
    RuleLog, Then,
};

/// A small address space, so that rules and packets overlap often.
fn addr(family: Family, host: u8, net: u8) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 18, net, host)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(net),
            0,
            0,
            0,
            u16::from(host),
        )),
    }
}

fn net(family: Family) -> impl Strategy<Value = Option<IpNet>> {
    prop_oneof![
        3 => Just(None),
        2 => (0u8..4, 0u8..2, prop_oneof![Just(0u8), Just(1), Just(2)]).prop_map(move |(h, n, wide)| {
            let a = addr(family, h, n);
            let len = match (family, wide) {
                (Family::V4, 0) => 32,
                (Family::V4, 1) => 30,
                (Family::V4, _) => 23,
                (Family::V6, 0) => 128,
                (Family::V6, 1) => 126,
                (Family::V6, _) => 63,
            };
            Some(IpNet::new(a, len).unwrap().trunc())
        }),
    ]
}

fn ports() -> impl Strategy<Value = Option<Ports>> {
    let range = (20u16..32, 0u16..4).prop_map(|(a, w)| PortRange {
        first: a,
        last: a + w,
    });
    prop_oneof![
        2 => Just(None),
        3 => prop::collection::vec(range, 1..4).prop_map(|v| Some(Ports(v))),
    ]
}

/// Actions, allows most often.
fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Allow),
        3 => Just(Action::Deny),
        2 => Just(Action::Reject),
        1 => Just(Action::Limit),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    family.prop_flat_map(|family| {
        (
            action(),
            prop_oneof![5 => Just(Direction::In), 1 => Just(Direction::Out)],
            prop_oneof![
                12 => Just(None),
                1 => Just(Some("eth0".to_string())),
                1 => Just(Some("eth+".to_string()))
            ],
            prop_oneof![
                Just(Proto::Any),
                Just(Proto::Tcp),
                Just(Proto::Udp),
                Just(Proto::Esp)
            ],
            net(family),
            net(family),
            ports(),
            ports(),
            prop_oneof![8 => Just(false), 1 => Just(true)],
            prop_oneof![8 => Just(None), 1 => Just(Some(Ports(vec![PortRange::single(24)])))],
            prop_oneof![Just(Then::Accept), Just(Then::Continue)],
        )
            .prop_map(
                move |(
                    action,
                    direction,
                    iface,
                    proto,
                    src,
                    dst,
                    sports,
                    dports,
                    log,
                    except,
                    then,
                )| {
                    let ports_ok = proto != Proto::Esp;
                    let dports = if ports_ok { dports } else { None };
                    // Source ports are rarer in real rules.
                    let sports = if ports_ok && dports.is_none() {
                        sports
                    } else {
                        None
                    };
                    let except = if dports.is_some() { except } else { None };
                    let limit = (action == Action::Limit).then(|| Limit {
                        then,
                        ..Limit::ufw_default()
                    });
                    Rule {
                        action,
                        direction,
                        iface: iface.map(|i| i.parse().unwrap()),
                        out_iface: None,
                        log: if log { RuleLog::Log } else { RuleLog::None },
                        family,
                        proto,
                        from: Endpoint {
                            addr: src,
                            ports: sports,
                            app: None,
                        },
                        to: Endpoint {
                            addr: dst,
                            ports: dports,
                            app: None,
                        },
                        except,
                        limit,
                        comment: None,
                    }
                },
            )
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    family.prop_flat_map(|family| {
        (
            prop_oneof![5 => Just(Direction::In), 1 => Just(Direction::Out)],
            prop_oneof![
                Just("eth0".to_string()),
                Just("eth1".to_string()),
                Just("wg0".to_string())
            ],
            prop_oneof![
                Just(Proto::Tcp),
                Just(Proto::Udp),
                Just(Proto::Esp),
                Just(Proto::Gre)
            ],
            (0u8..5, 0u8..3),
            (0u8..5, 0u8..3),
            18u16..38,
            18u16..38,
        )
            .prop_map(
                move |(direction, iface, proto, (sh, sn), (dh, dn), sport, dport)| Packet {
                    family,
                    direction,
                    iface,
                    out_iface: String::new(),
                    proto,
                    src: addr(family, sh, sn),
                    dst: addr(family, dh, dn),
                    sport,
                    dport,
                },
            )
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(rule(), 0..40),
        prop::collection::vec(0u8..4, 40),
    )
        .prop_map(|(mut rules, twin)| {
            // As `allow 22/tcp` does: rules that name no address often come with their
            // other family's copy (the optimiser may join the two into one element),
            // and sometimes with a near copy of another action (which it must not join).
            let copies: Vec<Rule> = rules
                .iter()
                .zip(&twin)
                .filter(|(r, t)| **t >= 2 && r.from.addr.is_none() && r.to.addr.is_none())
                .map(|(r, t)| Rule {
                    family: match r.family {
                        Family::V4 => Family::V6,
                        Family::V6 => Family::V4,
                    },
                    action: match (t, r.action) {
                        (3, Action::Allow) => Action::Deny,
                        (3, _) => Action::Allow,
                        (_, a) => a,
                    },
                    ..r.clone()
                })
                .collect();
            rules.extend(copies);
            // The model keeps IPv4 rules before IPv6 ones.
            rules.sort_by_key(|r| r.family);
            Policy {
                rules,
                ..Policy::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn compiled_plan_decides_like_the_model(p in policy(), packets in prop::collection::vec(packet(), 16)) {
        let plan = compile(&p);
        for pkt in &packets {
            prop_assert_eq!(interpret::decide(&plan, pkt), Ok(p.decide(pkt)), "packet {:?}", pkt);
        }
    }
}

/// Ports for mixed runs, edges of the port space included.
fn mixed_ports() -> impl Strategy<Value = Option<Ports>> {
    let first =
        prop_oneof![4 => 20u16..32, 1 => Just(1u16), 1 => Just(65534u16), 1 => Just(65535u16)];
    let range = (first, 0u16..4).prop_map(|(a, w)| PortRange {
        first: a,
        last: a.saturating_add(w),
    });
    prop_oneof![
        1 => Just(None),
        4 => prop::collection::vec(range, 1..4).prop_map(|v| Some(Ports(v))),
    ]
}

/// Rules of the shapes a mixed run holds, in a small space so that they overlap often:
/// source-only rules, rules from anywhere (or from the whole address space) to ports,
/// rules from a source to ports, limits that accept under the limit; now and then a
/// rule no map holds (logged, or on an interface) or a limit that lets later rules
/// decide, which splits the stretch.
fn mixed_rule() -> impl Strategy<Value = Rule> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    family.prop_flat_map(|family| {
        (
            action(),
            0u8..5,
            net(family),
            prop_oneof![Just(Proto::Any), Just(Proto::Tcp), Just(Proto::Udp)],
            mixed_ports(),
            prop_oneof![6 => Just(Direction::In), 1 => Just(Direction::Out)],
            prop_oneof![20 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
        )
            .prop_map(move |(action, shape, src, proto, dports, direction, odd)| {
                // A limit that lets later rules decide (never in a mixed run).
                let action = if odd == 3 { Action::Limit } else { action };
                let (any, all): (IpNet, IpNet) = match family {
                    Family::V4 => (
                        "198.18.0.0/23".parse().unwrap(),
                        "0.0.0.0/0".parse().unwrap(),
                    ),
                    Family::V6 => ("2001:db8::/63".parse().unwrap(), "::/0".parse().unwrap()),
                };
                let (src, proto, dports) = match shape {
                    // Source only.
                    0 => (Some(src.unwrap_or(any)), Proto::Any, None),
                    // From anywhere to ports.
                    1 => (
                        None,
                        proto,
                        dports.or(Some(Ports(vec![PortRange::single(22)]))),
                    ),
                    // From the whole address space to ports, or source-only from it.
                    2 => match dports {
                        Some(p) => (Some(all), proto, Some(p)),
                        None => (Some(all), Proto::Any, None),
                    },
                    // From a source to ports (or to a protocol).
                    _ => (
                        src,
                        if proto == Proto::Any {
                            Proto::Tcp
                        } else {
                            proto
                        },
                        dports,
                    ),
                };
                Rule {
                    action,
                    direction,
                    iface: (odd == 2).then(|| "eth0".parse().unwrap()),
                    out_iface: None,
                    log: if odd == 1 {
                        RuleLog::Log
                    } else {
                        RuleLog::None
                    },
                    family,
                    proto,
                    from: Endpoint {
                        addr: src,
                        ports: None,
                        app: None,
                    },
                    to: Endpoint {
                        addr: None,
                        ports: dports,
                        app: None,
                    },
                    except: None,
                    limit: (action == Action::Limit).then(|| Limit {
                        then: if odd == 3 {
                            Then::Continue
                        } else {
                            Then::Accept
                        },
                        ..Limit::ufw_default()
                    }),
                    comment: None,
                }
            })
    })
}

fn mixed_policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(mixed_rule(), 12..90),
        prop::collection::vec(any::<bool>(), 90),
    )
        .prop_map(|(mut rules, twin)| {
            // Rules from anywhere often come with their IPv6 copy (one element serves both).
            let copies: Vec<Rule> = rules
                .iter()
                .zip(&twin)
                .filter(|(r, t)| **t && r.from.addr.is_none() && r.family == Family::V4)
                .map(|(r, _)| Rule {
                    family: Family::V6,
                    ..r.clone()
                })
                .collect();
            rules.extend(copies);
            rules.sort_by_key(|r| r.family);
            Policy {
                rules,
                ..Policy::default()
            }
        })
}

/// Packets for mixed runs: the small address space, and ports at the edges too.
fn mixed_packet() -> impl Strategy<Value = Packet> {
    (
        packet(),
        prop_oneof![6 => 18u16..38, 1 => Just(1u16), 1 => Just(65534u16), 1 => Just(65535u16)],
    )
        .prop_map(|(mut p, port)| {
            p.dport = port;
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Interleaved rules of both map shapes (mixed runs): the plan decides as the model,
    /// for packets that come with mark 0 (the mixed lookups) and with a mark of another
    /// tool's (the run compiled the ordinary way), and what it lets on leaves with the
    /// mark it came with.
    #[test]
    fn mixed_runs_decide_like_the_model(
        p in mixed_policy(),
        packets in prop::collection::vec(mixed_packet(), 24),
        other in 1u32..,
    ) {
        let plan = compile(&p);
        for pkt in &packets {
            let want = p.decide(pkt);
            for mark in [0u32, other] {
                let (d, out) = interpret::decide_marked(&plan, pkt, mark).map_err(TestCaseError::fail)?;
                prop_assert_eq!(d, want, "packet {:?} with mark {}", pkt, mark);
                if d != rampart::model::Decision::Drop {
                    prop_assert_eq!(out, mark, "packet {:?} leaves with another mark", pkt);
                }
            }
        }
    }
}

/// The generated mixed policies do make mixed runs, several to a chain at times, in
/// both directions (so the property above covers them).
#[test]
fn mixed_policies_make_mixed_runs() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut any, mut second, mut out) = (0, 0, 0);
    for _ in 0..200 {
        let p = mixed_policy().new_tree(&mut runner).unwrap().current();
        let text = rampart::render::plan_text(&compile(&p));
        any += usize::from(text.contains("jump user_input_mixed_0"));
        second += usize::from(text.contains("jump user_input_mixed_1"));
        out += usize::from(text.contains("jump user_output_mixed_0"));
    }
    assert!(any > 100 && second > 0 && out > 0, "{any} {second} {out}");
}

/// Interleaved rules do become a mixed run (so the property above covers it).
#[test]
fn interleaved_rules_become_a_mixed_run() {
    let mut p = Policy::default();
    for i in 0..40u16 {
        let (action, cmd) = match i % 3 {
            0 => (Action::Deny, format!("from 198.18.{i}.0/29")),
            1 => (Action::Allow, format!("{}/tcp", 1000 + i)),
            _ => (
                Action::Allow,
                format!("from 198.18.1.{i} to any port 22 proto tcp"),
            ),
        };
        let words: Vec<String> = cmd.split(' ').map(String::from).collect();
        p.rules
            .extend(rampart::grammar::parse_rule(action, &words).unwrap().rules);
    }
    let plan = compile(&p);
    let text = rampart::render::plan_text(&plan);
    assert!(
        text.contains("meta mark 0 jump user_input_mixed_0"),
        "{text}"
    );
    assert!(
        text.contains("meta mark != 0 jump user_input_marked_0"),
        "{text}"
    );
    assert!(
        text.contains("meta mark set ip saddr . meta mark map @rules_user_input_m0_a4"),
        "{text}"
    );
    assert_eq!(
        plan.map_elements("rules_user_input_m0_v").len(),
        p.rules.len() - 13
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The renderer knows every statement and expression compile emits.
    #[test]
    fn compiled_plans_render_as_nft_text(p in policy()) {
        let text = rampart::render::plan_text(&compile(&p));
        prop_assert!(!text.contains(rampart::render::UNRENDERED), "{}", text);
    }
}

/// An address of 198.18.0.0/15 or 2001:db8::/111 from 17 bits.
fn list_addr(family: Family, bits: u32) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::from(0xc612_0000 | bits).into(),
        Family::V6 => Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(bits)).into(),
    }
}

fn family_bits(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

/// Block and allow lists: many source networks of a few prefix lengths, in both
/// families (so that runs get hashed prefix-length maps, interval maps and host maps,
/// and split where networks nest).
fn list_rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![Just(Family::V4), Just(Family::V6)],
        prop_oneof![2 => Just(Action::Deny), 1 => Just(Action::Allow), 1 => Just(Action::Reject)],
        0u32..(1 << 17),
        prop_oneof![3 => Just(0u8), 3 => Just(4), 3 => Just(8), 1 => Just(12)],
        prop_oneof![4 => Just(None), 1 => Just(Some(Proto::Tcp))],
    )
        .prop_map(|(family, action, bits, shorter, proto)| {
            let (a, max): (IpAddr, u8) = (list_addr(family, bits), family_bits(family));
            Rule {
                action,
                direction: Direction::In,
                iface: None,
                out_iface: None,
                log: RuleLog::None,
                family,
                proto: proto.unwrap_or(Proto::Any),
                from: Endpoint {
                    addr: Some(IpNet::new(a, max - shorter).unwrap().trunc()),
                    ports: None,
                    app: None,
                },
                to: Endpoint {
                    addr: None,
                    ports: proto.map(|_| Ports(vec![PortRange::single(24)])),
                    app: None,
                },
                except: None,
                limit: None,
                comment: None,
            }
        })
}

fn list_packet() -> impl Strategy<Value = Packet> {
    (
        prop_oneof![Just(Family::V4), Just(Family::V6)],
        0u32..(1 << 17),
        prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)],
        23u16..26,
    )
        .prop_map(|(family, bits, proto, dport)| {
            let src = list_addr(family, bits);
            Packet {
                family,
                direction: Direction::In,
                iface: "eth0".into(),
                out_iface: String::new(),
                proto,
                src,
                dst: addr(family, 0, 0),
                sport: 40000,
                dport,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn compiled_lists_decide_like_the_model(
        rules in prop::collection::vec(list_rule(), 0..120),
        packets in prop::collection::vec(list_packet(), 32),
    ) {
        let mut rules = rules;
        rules.sort_by_key(|r| r.family);
        let p = Policy { rules, ..Policy::default() };
        let plan = compile(&p);
        // Members of the rules' own networks as well as random sources.
        let mut packets = packets;
        for r in p.rules.iter().take(16) {
            let mut pkt = packets[0].clone();
            pkt.family = r.family;
            pkt.src = r.from.addr.unwrap().network();
            packets.push(pkt);
        }
        for pkt in &packets {
            prop_assert_eq!(interpret::decide(&plan, pkt), Ok(p.decide(pkt)), "packet {:?}", pkt);
        }
    }
}

/// The optimiser does produce maps for a typical block list (so the property above
/// really covers them).
#[test]
fn typical_rules_become_maps() {
    let mut p = Policy::default();
    for i in 0..50u8 {
        p.rules.push(Rule {
            action: Action::Deny,
            direction: Direction::In,
            iface: None,
            out_iface: None,
            log: RuleLog::None,
            family: Family::V4,
            proto: Proto::Any,
            from: Endpoint {
                addr: Some(IpNet::new(addr(Family::V4, 0, i), 24).unwrap()),
                ports: None,
                app: None,
            },
            to: Endpoint::default(),
            except: None,
            limit: None,
            comment: None,
        });
    }
    let plan = compile(&p);
    let text = rampart::render::plan_text(&plan);
    let user = text.split("chain user_input {").nth(1).unwrap();
    let user = &user[..user.find('}').unwrap() + 1];
    // One run (the last, so with all its maps): hosts (none here), intervals (none
    // here), and the fifty /24 networks in a hash map keyed by the masked address.
    assert!(
        user.contains("ip saddr & 255.255.255.0 vmap @rules_user_input_0_4n24"),
        "{user}"
    );
    assert_eq!(user.lines().filter(|l| l.contains("vmap")).count(), 3);
    assert_eq!(
        plan.verdict_maps,
        vec![
            "rules_user_input_0_4h".to_string(),
            "rules_user_input_0_4i".to_string(),
            "rules_user_input_0_4n24".to_string(),
        ]
    );
    assert_eq!(plan.map_elements("rules_user_input_0_4n24").len(), 50);
    assert_eq!(plan.map_elements("rules_user_input_0_4i").len(), 0);
}
