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

fn rule() -> impl Strategy<Value = Rule> {
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    family.prop_flat_map(|family| {
        (
            prop_oneof![
                4 => Just(Action::Allow),
                3 => Just(Action::Deny),
                2 => Just(Action::Reject),
                1 => Just(Action::Limit),
            ],
            prop_oneof![5 => Just(Direction::In), 1 => Just(Direction::Out)],
            prop_oneof![6 => Just(None), 1 => Just(Some("eth0".to_string()))],
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
                        iface,
                        log: if log { RuleLog::Log } else { RuleLog::None },
                        family,
                        proto,
                        from: Endpoint {
                            addr: src,
                            ports: sports,
                        },
                        to: Endpoint {
                            addr: dst,
                            ports: dports,
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
            prop_oneof![Just("eth0".to_string()), Just("eth1".to_string())],
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
    prop::collection::vec(rule(), 0..40).prop_map(|mut rules| {
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
            log: RuleLog::None,
            family: Family::V4,
            proto: Proto::Any,
            from: Endpoint {
                addr: Some(IpNet::new(addr(Family::V4, 0, i), 24).unwrap()),
                ports: None,
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
    assert!(
        user.contains("ip saddr vmap @rules_user_input_0i"),
        "{user}"
    );
    // One run: a hash map for hosts (empty here) and an interval map for networks.
    assert_eq!(user.lines().filter(|l| l.contains("vmap")).count(), 2);
    assert_eq!(
        plan.verdict_maps,
        vec![
            "rules_user_input_0h".to_string(),
            "rules_user_input_0i".to_string()
        ]
    );
    assert_eq!(plan.map_elements("rules_user_input_0i").len(), 50);
}
