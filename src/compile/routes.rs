//! Route rules (`route allow …`): the chain of forwarded traffic's user rules.
//!
//! A route rule matches the destination the connection was opened to, before any
//! NAT (`ct original ip daddr`, `ct original proto-dst`; see `rules::rule_matches`), so
//! that `route deny 8080/tcp` closes a port Docker publishes by DNAT.

use crate::model::{Action, Rule};

use super::Builder;

impl Builder {
    /// Route rules: plain rules in order (their destination is the connection's
    /// original one, which the maps' keys do not read).
    pub(super) fn route_rules(&mut self, chain: &str, rules: &[&Rule]) {
        for rule in rules {
            if rule.action == Action::Limit {
                self.limit_rule(rule, chain);
            } else {
                self.push_user_rule(chain, rule, true, super::family_tag(rule));
            }
        }
    }
}
