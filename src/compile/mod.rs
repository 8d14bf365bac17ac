//! Policy → nft plan. A pure function: no I/O, so it is unit- and property-testable.
//!
//! The plan is one table, `inet rampart`, with base chains for input, output and forward
//! that carry UFW's before/after rules, and one chain per direction with the user rules.

use std::collections::HashMap;

use nftables::expr::Expression;
use nftables::schema::{Chain, Map, NfListObject, Rule as NftRule, Table};
use nftables::stmt::Statement;
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::model::{Direction, Policy, Rule, Verdict};

mod custom;
mod limits;
mod logging;
mod maps;
mod mixed;
mod nft;
mod optimiser;
mod routes;
mod rules;
mod skeleton;

pub use custom::{Custom, Part, CUSTOM_PREFIX, SNIPPET_TABLE};
pub use limits::{
    limit_id, limit_state, LimitState, EXACT_RATE_MAX, LIMIT_CHAIN_PREFIX, LIMIT_OVER_PREFIX,
    STATE_SET_PREFIX,
};
pub use mixed::{
    CHAIN_UNMARK_ACCEPT, CHAIN_UNMARK_REJECT, CODE_TOP, MIXED_MIN_LOOKUPS, UNMARK_PREFIX,
};
pub use nft::addr_text;
use nft::*;
pub use optimiser::{MapKind, MAP_PREFIX, MIN_MAP_RUN, PREFIX_HASH_MIN};
pub use rules::rule_matches;

/// rampart's one table (family inet, so one ruleset serves IPv4 and IPv6).
pub const TABLE: &str = "rampart";

/// Table family.
pub const FAMILY: NfFamily = NfFamily::INet;

/// Base chain hooked at input.
pub const CHAIN_INPUT: &str = "input";

/// Base chain hooked at output.
pub const CHAIN_OUTPUT: &str = "output";

/// Base chain hooked at forward.
pub const CHAIN_FORWARD: &str = "forward";

/// User rules for incoming traffic.
pub const CHAIN_USER_INPUT: &str = "user_input";

/// User rules for outgoing traffic.
pub const CHAIN_USER_OUTPUT: &str = "user_output";

/// The chain of the route rules (forwarded traffic), when there are any.
pub const CHAIN_USER_FORWARD: &str = "user_forward";

/// Refuses a packet the polite way: TCP reset, else ICMP port-unreachable.
pub const CHAIN_REJECT: &str = "reject_packet";

/// ICMP and ICMPv6 packets UFW's before.rules accept (input).
pub const CHAIN_BEFORE_ICMP: &str = "before_icmp";

/// UDP services UFW's before.rules accept (DHCP, mDNS, UPnP discovery; input).
pub const CHAIN_BEFORE_UDP: &str = "before_udp";

/// Priority of the base chains: the standard filter priority, as UFW's iptables chains.
pub const PRIORITY_FILTER: i32 = 0;

/// Log rate for UFW's logging: 3 per minute, burst 10.
pub const LOG_RATE_PER_MINUTE: u32 = 3;

/// Burst of the log rate.
pub const LOG_BURST: u32 = 10;

/// Burst of the log rate of what a limit refuses: UFW gives that log rule no burst,
/// so it has iptables' default, 5.
pub const LIMIT_LOG_BURST: u32 = 5;

/// Prefix of every log record rampart makes.
pub const LOG_PREFIX: &str = "RAMPART";

/// The compiled ruleset: every object of rampart's table, in creation order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Table, chains, sets and rules, in the order they are to be added.
    pub objects: Vec<NfListObject<'static>>,
    /// Stateful statements attached to the elements a rule adds to a dynamic set, by set
    /// name (`add @s { ip saddr ct count over 2 }`). The `nftables` crate's set statement
    /// has no field for them, so the backend and the renderer attach them from here.
    pub dynset_stmts: Vec<(String, Statement<'static>)>,
    /// Which user rule each tagged kernel rule stands for: (chain, its index among the
    /// chain's rules) → the rule's tag (see [`rule_tag`]). For `status verbose`'s
    /// counters; not part of the ruleset.
    pub rule_tags: HashMap<(String, usize), String>,
    /// Which user rule each verdict-map element stands for: (map, the element's key as
    /// compact JSON, see [`key_text`]) → the rule's tag.
    pub element_tags: HashMap<(String, String), String>,
    /// Names of the maps whose values are verdicts. The `nftables` crate has no
    /// `verdict` map type (the objects carry a placeholder type) and writes `accept` and
    /// `drop` values as bare words; the backend fixes both when serializing.
    pub verdict_maps: Vec<String>,
}

impl Plan {
    /// Whether the two plans are the same but for map elements (which can then be
    /// changed in place). Compares without copying the elements.
    pub fn same_skeleton(&self, other: &Plan) -> bool {
        fn bare<'a>(m: &'a Map<'static>) -> impl PartialEq + 'a {
            (
                (&m.family, &m.table, &m.name, &m.handle, &m.set_type, &m.map),
                (
                    &m.policy,
                    &m.flags,
                    &m.timeout,
                    &m.gc_interval,
                    &m.size,
                    &m.comment,
                ),
            )
        }
        self.objects.len() == other.objects.len()
            && self
                .objects
                .iter()
                .zip(&other.objects)
                .all(|pair| match pair {
                    (NfListObject::Map(a), NfListObject::Map(b)) => bare(a) == bare(b),
                    (a, b) => a == b,
                })
    }

    /// A map's elements (empty if it has none).
    pub fn map_elements(&self, name: &str) -> &[Expression<'static>] {
        self.objects
            .iter()
            .find_map(|o| match o {
                NfListObject::Map(m) if m.name == name => m.elem.as_deref(),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// Names of the chains in the plan.
    pub fn chains(&self) -> Vec<&str> {
        self.objects
            .iter()
            .filter_map(|o| match o {
                NfListObject::Chain(c) => Some(c.name.as_ref()),
                _ => None,
            })
            .collect()
    }

    /// Number of rules per chain, in chain order.
    pub fn rule_counts(&self) -> Vec<(String, usize)> {
        self.chains()
            .into_iter()
            .map(|name| {
                let n = self
                    .objects
                    .iter()
                    .filter(|o| matches!(o, NfListObject::Rule(r) if r.chain == name))
                    .count();
                (name.to_string(), n)
            })
            .collect()
    }
}

/// The tag a user rule's kernel rule or map elements carry as their comment, so that
/// `status verbose` can add up their counters per rule: the rule's hash (whatever its
/// family and comment, so a comment edit keeps the counters), then the families the
/// kernel object serves (`.4`, `.6`, or `.46` for an element both copies share).
pub fn rule_tag(rule: &Rule, families: &str) -> String {
    use std::hash::{Hash, Hasher};
    // Every field but the family and the comment (named, so a new field is not
    // forgotten).
    let Rule {
        action,
        direction,
        iface,
        out_iface,
        log,
        family: _,
        proto,
        from,
        to,
        except,
        limit,
        comment: _,
    } = rule;
    let mut h = limits::Fnv1a::default();
    (
        action, direction, iface, out_iface, log, proto, from, to, except, limit,
    )
        .hash(&mut h);
    // As format!("{:012x}.{families}", the hash's low 48 bits), written by hand.
    let mut tag = String::with_capacity(13 + families.len());
    crate::model::push_hex(&mut tag, &h.finish().to_be_bytes()[2..]);
    tag.push('.');
    tag.push_str(families);
    tag
}

/// A map element's key as compact JSON, as the kernel's listing gives it back (the
/// lookup key of [`Plan::element_tags`]).
pub fn key_text(key: &Expression) -> String {
    // Written straight from the expression: its objects' fields come in the order a
    // JSON value (sorted keys) writes them (see the test).
    serde_json::to_string(key).unwrap_or_default()
}

/// The families part of a rule's own tag.
pub fn family_tag(rule: &Rule) -> &'static str {
    match rule.family {
        crate::model::Family::V4 => "4",
        crate::model::Family::V6 => "6",
    }
}

/// Compile a policy into the plan of rampart's table.
pub fn compile(policy: &Policy) -> Plan {
    compile_with(policy, &Custom::default())
}

/// Compile a policy and the config directory's custom rules.
pub fn compile_with(policy: &Policy, custom: &Custom) -> Plan {
    build(policy, custom, true)
}

/// The same plan without [`Plan::rule_tags`] and [`Plan::element_tags`], for a change
/// (which never reads counters): tagging is a fifth of a compile at 10k rules.
pub fn compile_untagged(policy: &Policy, custom: &Custom) -> Plan {
    build(policy, custom, false)
}

fn build(policy: &Policy, custom: &Custom, tagged: bool) -> Plan {
    let mut b = Builder {
        log: logging::Logging {
            level: policy.logging,
            group: policy.log_group,
        },
        untagged: !tagged,
        ..Builder::default()
    };
    b.objects.push(NfListObject::Table(Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }));
    let d = policy.defaults;
    b.base_chain(CHAIN_INPUT, NfHook::Input, d.incoming);
    b.base_chain(CHAIN_OUTPUT, NfHook::Output, d.outgoing);
    // No forward chain at all unless forwarded traffic is filtered: a drop in any base
    // chain is final, so even an accepting chain could only cost, never help.
    // Route rules filter forwarded traffic even while the routed default is disabled:
    // then what they do not decide is accepted.
    let routes = policy
        .rules
        .iter()
        .any(|r| r.direction == Direction::Forward);
    let custom_forward = Part::ALL.iter().any(|&p| custom.writes(p, CHAIN_FORWARD));
    let forward = d
        .routed
        .verdict()
        .or((routes || custom_forward).then_some(Verdict::Allow));
    if let Some(routed) = forward {
        b.base_chain(CHAIN_FORWARD, NfHook::Forward, routed);
    }
    b.chain(CHAIN_USER_INPUT);
    b.chain(CHAIN_USER_OUTPUT);
    if routes {
        b.chain(CHAIN_USER_FORWARD);
    }
    b.add_reject_chain();
    b.objects.extend(custom.objects().cloned());
    // A jump to a custom chain, where `part` writes one for `hook`.
    let enter = |b: &mut Builder, part: Part, hook: &str| {
        if custom.writes(part, hook) {
            b.rule(hook, vec![jump(&part.name(hook))]);
        }
    };

    b.audit(CHAIN_INPUT);
    b.input_before();
    enter(&mut b, Part::Before, CHAIN_INPUT);
    b.rule(CHAIN_INPUT, vec![jump(CHAIN_USER_INPUT)]);
    b.input_after(d.incoming);
    enter(&mut b, Part::After, CHAIN_INPUT);
    b.policy_tail(CHAIN_INPUT, d.incoming);

    b.audit(CHAIN_OUTPUT);
    b.output_before();
    enter(&mut b, Part::Before, CHAIN_OUTPUT);
    b.rule(CHAIN_OUTPUT, vec![jump(CHAIN_USER_OUTPUT)]);
    enter(&mut b, Part::After, CHAIN_OUTPUT);
    b.policy_tail(CHAIN_OUTPUT, d.outgoing);

    if let Some(routed) = forward {
        b.audit(CHAIN_FORWARD);
        b.forward_before();
        enter(&mut b, Part::Before, CHAIN_FORWARD);
        if routes {
            b.rule(CHAIN_FORWARD, vec![jump(CHAIN_USER_FORWARD)]);
        }
        enter(&mut b, Part::After, CHAIN_FORWARD);
        if d.routed.verdict().is_some() {
            b.policy_tail(CHAIN_FORWARD, routed);
        }
    }

    for (direction, chain) in [
        (Direction::In, CHAIN_USER_INPUT),
        (Direction::Out, CHAIN_USER_OUTPUT),
        (Direction::Forward, CHAIN_USER_FORWARD),
    ] {
        let rules: Vec<&Rule> = policy
            .rules
            .iter()
            .filter(|r| r.direction == direction)
            .collect();
        match direction {
            // Only when there are any (then the chain was made above).
            Direction::Forward if rules.is_empty() => {}
            Direction::Forward => b.route_rules(chain, &rules),
            _ => b.user_rules(chain, &rules),
        }
    }
    Plan {
        objects: b.objects,
        dynset_stmts: b.dynset_stmts,
        rule_tags: b.rule_tags,
        element_tags: b.element_tags,
        verdict_maps: b.verdict_maps,
    }
}

#[derive(Default)]
struct Builder {
    objects: Vec<NfListObject<'static>>,
    dynset_stmts: Vec<(String, Statement<'static>)>,
    verdict_maps: Vec<String>,
    /// Map runs so far, per chain (for map names).
    map_runs: HashMap<String, usize>,
    /// Mixed runs so far, per chain (for chain and map names).
    mixed_runs: HashMap<String, usize>,
    log: logging::Logging,
    /// Rules added so far, per chain (for [`Plan::rule_tags`]).
    rules_in: HashMap<String, usize>,
    rule_tags: HashMap<(String, usize), String>,
    element_tags: HashMap<(String, String), String>,
    /// Names of the chains made so far (limits look theirs up).
    chain_names: std::collections::HashSet<String>,
    /// No tags in the plan (see [`compile_untagged`]).
    untagged: bool,
}

impl Builder {
    fn chain(&mut self, name: &str) {
        self.chain_names.insert(name.to_string());
        self.objects.push(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            ..Chain::default()
        }));
    }

    fn base_chain(&mut self, name: &str, hook: NfHook, verdict: Verdict) {
        self.objects.push(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(PRIORITY_FILTER),
            policy: Some(match verdict {
                Verdict::Allow => NfChainPolicy::Accept,
                Verdict::Deny | Verdict::Reject => NfChainPolicy::Drop,
            }),
            ..Chain::default()
        }));
    }

    /// The tag of the kernel objects a user rule compiles to, unless the plan keeps none.
    fn tag(&self, rule: &Rule, families: &str) -> Option<String> {
        (!self.untagged).then(|| rule_tag(rule, families))
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.rule_tagged(chain, expr, None);
    }

    /// A rule, with the tag of the user rule it stands for (kept in the plan).
    fn rule_tagged(&mut self, chain: &str, expr: Vec<Statement<'static>>, tag: Option<String>) {
        let n = self.rules_in.entry(chain.to_string()).or_insert(0);
        if let Some(tag) = tag {
            self.rule_tags.insert((chain.to_string(), *n), tag);
        }
        *n += 1;
        self.objects.push(NfListObject::Rule(NftRule {
            family: FAMILY,
            table: TABLE.into(),
            chain: chain.to_string().into(),
            expr: expr.into(),
            ..NftRule::default()
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::Action;

    #[test]
    fn key_text_is_the_listing_text() {
        // Map keys of every shape: hosts, networks, port ranges, concatenations.
        let mut p = Policy::default();
        for (action, text) in [
            (Action::Allow, "proto tcp from 198.18.0.1 to any port 22"),
            (Action::Allow, "proto tcp from 198.18.0.0/24 to any port 23"),
            (
                Action::Allow,
                "proto tcp from 198.18.1.0/24 to any port 1000:2000",
            ),
            (Action::Allow, "80/tcp"),
            (Action::Allow, "5000:5010/udp"),
            (Action::Allow, "proto tcp from 2001:db8::1 to any port 22"),
            (
                Action::Allow,
                "proto tcp from 2001:db8:1::/48 to any port 24",
            ),
            (Action::Deny, "from 198.18.2.0/24"),
            (Action::Deny, "from 198.18.3.4"),
        ] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(action, &words).unwrap().rules);
        }
        let plan = compile(&p);
        let mut keys = 0;
        for obj in &plan.objects {
            let NfListObject::Map(m) = obj else { continue };
            for e in m.elem.as_deref().unwrap_or(&[]) {
                let Expression::List(kv) = e else { continue };
                let through_value = serde_json::to_value(&kv[0]).unwrap().to_string();
                assert_eq!(key_text(&kv[0]), through_value);
                keys += 1;
            }
        }
        let texts: Vec<&str> = plan.element_tags.keys().map(|(_, k)| k.as_str()).collect();
        for shape in ["prefix", "concat", "range"] {
            assert!(
                texts.iter().any(|t| t.contains(shape)),
                "{shape}: {texts:?}"
            );
        }
        assert!(keys >= 5, "{keys} keys");
    }

    #[test]
    fn default_policy_has_base_chains_and_no_user_rules() {
        let plan = compile(&Policy::default());
        assert_eq!(
            plan.chains(),
            vec![
                CHAIN_INPUT,
                CHAIN_OUTPUT,
                CHAIN_USER_INPUT,
                CHAIN_USER_OUTPUT,
                CHAIN_REJECT,
                CHAIN_BEFORE_ICMP,
                CHAIN_BEFORE_UDP,
            ]
        );
        let counts: std::collections::HashMap<_, _> = plan.rule_counts().into_iter().collect();
        assert_eq!(counts[CHAIN_USER_INPUT], 0);
    }

    #[test]
    fn rules_compile_to_map_elements_by_shape() {
        let mut p = Policy::default();
        for text in ["22/tcp", "proto udp from 198.18.0.5 to any port 5353"] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules
                .extend(parse_rule(Action::Allow, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        // One run holding both families: per family a host map and an interval map (the
        // last run has them even empty), and one map for `22/tcp`, whose IPv4 and IPv6
        // copies are one element.
        let counts: std::collections::HashMap<_, _> = plan.rule_counts().into_iter().collect();
        assert_eq!(counts[CHAIN_USER_INPUT], 5);
        let n = |name: &str| plan.map_elements(name).len();
        assert_eq!(n("rules_user_input_0_4h"), 1, "198.18.0.5 . udp . 5353");
        assert_eq!(n("rules_user_input_0_bp"), 1, "tcp . 22 (both families)");
        assert_eq!(n("rules_user_input_0_4i"), 0);
        assert_eq!(n("rules_user_input_0_6h"), 0);
        assert_eq!(plan.verdict_maps.len(), 5);
    }

    #[test]
    fn every_limit_has_state_of_its_own() {
        let mut p = Policy::default();
        for text in ["22/tcp", "80/tcp", "443/tcp", "8000:8010/tcp", "53/udp"] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules
                .extend(parse_rule(Action::Limit, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        let sets: Vec<String> = plan
            .objects
            .iter()
            .filter_map(|o| match o {
                NfListObject::Set(s) if s.name.starts_with(STATE_SET_PREFIX) => {
                    Some(s.name.to_string())
                }
                _ => None,
            })
            .collect();
        // Each of the 10 rules (5 per family) tracks keys and slots in sets of its own.
        assert_eq!(sets.len(), 20, "{sets:?}");
        let unique: std::collections::HashSet<&String> = sets.iter().collect();
        assert_eq!(unique.len(), sets.len());
    }

    #[test]
    fn an_untagged_plan_is_the_tagged_one_without_tags() {
        // Plain rules, map runs of every shape, a mixed run, limits, both families.
        let mut p = Policy::default();
        let mut add = |action, text: &str| {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(action, &words).unwrap().rules);
        };
        for n in 0..40 {
            add(
                Action::Allow,
                &format!("proto tcp from 198.18.0.{n} to any port 22"),
            );
            add(Action::Allow, &format!("{}/tcp", 1000 + n));
            add(Action::Deny, &format!("from 198.18.{}.0/24", 10 + n));
            add(
                Action::Allow,
                &format!("proto udp from 2001:db8::{n:x} to any port 53"),
            );
        }
        add(Action::Limit, "ssh");
        add(Action::Reject, "in on lo to any port 8080 proto tcp");
        for n in 0..20 {
            add(Action::Deny, &format!("from 198.19.{n}.0/24"));
            add(Action::Allow, &format!("{}/udp", 2000 + n));
        }
        let tagged = compile(&p);
        let untagged = compile_untagged(&p, &Custom::default());
        assert!(!tagged.rule_tags.is_empty() && !tagged.element_tags.is_empty());
        assert!(untagged.rule_tags.is_empty() && untagged.element_tags.is_empty());
        assert_eq!(untagged.objects, tagged.objects);
        assert_eq!(untagged.dynset_stmts, tagged.dynset_stmts);
        assert_eq!(untagged.verdict_maps, tagged.verdict_maps);
    }
}
