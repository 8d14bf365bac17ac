//! `show builtins|before-rules|user-rules|after-rules|logging-rules`: parts of the
//! ruleset the policy compiles to, as nft text (UFW's reports of the same names; in
//! rampart UFW's before, after and logging rules are in the base chains, around the
//! jump to the user chains).

use nftables::schema::NfListObject;
use nftables::stmt::Statement;

use crate::compile::{
    Part, Plan, CHAIN_BEFORE_ICMP, CHAIN_BEFORE_UDP, CHAIN_FORWARD, CHAIN_INPUT, CHAIN_OUTPUT,
    CHAIN_REJECT, LIMIT_CHAIN_PREFIX, STATE_SET_PREFIX,
};
use crate::render::plan_text;

/// The reports this module makes.
pub const REPORTS: &[&str] = &[
    "builtins",
    "before-rules",
    "user-rules",
    "after-rules",
    "logging-rules",
];

fn base(name: &str) -> bool {
    [CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_FORWARD].contains(&name)
}

/// The user chains' names start so (`user_input`, `user_output`, `user_forward`).
const USER_PREFIX: &str = "user_";

fn user(name: &str) -> bool {
    name.starts_with(USER_PREFIX) || name.starts_with(LIMIT_CHAIN_PREFIX)
}

/// Whether a rule jumps to a user chain (the point between before and after rules).
fn enters_user(stmts: &[Statement]) -> bool {
    stmts.iter().any(|s| match s {
        Statement::Jump(t) | Statement::Goto(t) => t.target.starts_with(USER_PREFIX),
        _ => false,
    })
}

fn logs(stmts: &[Statement]) -> bool {
    stmts.iter().any(|s| matches!(s, Statement::Log(_)))
}

/// The custom chains of `before.nft` (`custom_before_…`) or `after.nft`.
fn custom(name: &str, part: Part) -> bool {
    name.starts_with(&part.name(""))
}

/// The nft text of report `name` for a compiled plan (None: not one of [`REPORTS`]).
pub fn report(plan: &Plan, name: &str) -> Option<String> {
    if !REPORTS.contains(&name) {
        return None;
    }
    // Which chains' rules are kept, and which rules of them.
    let mut after_user = std::collections::HashMap::new();
    let keep_rule = |chain: &str, stmts: &[Statement], seen_user: bool| -> bool {
        match name {
            "builtins" => base(chain),
            "before-rules" => {
                [CHAIN_BEFORE_ICMP, CHAIN_BEFORE_UDP, CHAIN_REJECT].contains(&chain)
                    || custom(chain, Part::Before)
                    || (base(chain) && !seen_user && !enters_user(stmts))
            }
            "user-rules" => user(chain),
            "after-rules" => {
                custom(chain, Part::After) || (base(chain) && seen_user && !logs(stmts))
            }
            "logging-rules" => logs(stmts),
            _ => false,
        }
    };
    let mut objects = Vec::new();
    let mut chains = std::collections::HashSet::new();
    for obj in &plan.objects {
        if let NfListObject::Rule(r) = obj {
            let seen = *after_user.get(r.chain.as_ref()).unwrap_or(&false);
            if keep_rule(&r.chain, &r.expr, seen) {
                chains.insert(r.chain.to_string());
                objects.push(obj.clone());
            }
            if enters_user(&r.expr) {
                after_user.insert(r.chain.to_string(), true);
            }
        }
    }
    let mut declared: Vec<NfListObject<'static>> = plan
        .objects
        .iter()
        .filter(|o| match o {
            NfListObject::Chain(c) => chains.contains(c.name.as_ref()),
            NfListObject::Map(m) => {
                (name == "user-rules" && m.name.starts_with("rules_"))
                    || (name == "before-rules" && custom(&m.name, Part::Before))
                    || (name == "after-rules" && custom(&m.name, Part::After))
            }
            NfListObject::Set(s) => {
                (name == "user-rules" && s.name.starts_with(STATE_SET_PREFIX))
                    || (name == "before-rules" && custom(&s.name, Part::Before))
                    || (name == "after-rules" && custom(&s.name, Part::After))
            }
            _ => false,
        })
        .cloned()
        .collect();
    declared.extend(objects);
    let part = Plan {
        objects: declared,
        dynset_stmts: plan.dynset_stmts.clone(),
        verdict_maps: plan.verdict_maps.clone(),
        ..Plan::default()
    };
    Some(plan_text(&part))
}
