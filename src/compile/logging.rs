//! Logging with UFW's meaning: what falls through to a default policy, new connections
//! and invalid packets (the audit of `medium` and above), rules marked `log` or
//! `log-all`, and what a limit refuses. Records go to the kernel log, or to an nflog
//! group (`logging to nflog N`).

use nftables::stmt::{self, Statement};

use crate::model::{Action, LogLevel, Rule, RuleLog, Verdict};

use super::nft::*;
use super::{Builder, CHAIN_INPUT, LOG_PREFIX};

/// Where and how much is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Logging {
    pub(super) level: LogLevel,
    /// The nflog group, if records go there instead of the kernel log.
    pub(super) group: Option<u16>,
}

impl Logging {
    /// `[limit rate 3/minute burst 10] log prefix "[RAMPART WORD] " [group N]`
    fn record(self, word: &str, limited: bool) -> Vec<Statement<'static>> {
        let mut r = Vec::new();
        if limited {
            r.push(log_limit());
        }
        r.push(Statement::Log(Some(stmt::Log {
            prefix: Some(format!("[{LOG_PREFIX} {word}] ").into()),
            group: self.group.map(u32::from),
            snaplen: None,
            queue_threshold: None,
            level: None,
            flags: None,
        })));
        r
    }

    /// Below `high`, UFW rate-limits its log rules (3 per minute, burst 10).
    fn limited(self) -> bool {
        self.level < LogLevel::High
    }
}

impl Builder {
    /// At the top of a base chain, `medium` and above: `[RAMPART AUDIT]` for each new
    /// connection (rate-limited), `high` for every packet (rate-limited), `full` for every
    /// packet.
    pub(super) fn audit(&mut self, chain: &str) {
        let mut r = Vec::new();
        match self.log.level {
            LogLevel::Off | LogLevel::Low => return,
            LogLevel::Medium => r.push(m_in(ct("state"), s("new"))),
            LogLevel::High | LogLevel::Full => {}
        }
        r.extend(self.log.record("AUDIT", self.log.level < LogLevel::Full));
        self.rule(chain, r);
    }

    /// Before input drops invalid packets, `medium` and above: `[RAMPART AUDIT INVALID]`.
    pub(super) fn audit_invalid(&mut self) {
        if self.log.level < LogLevel::Medium {
            return;
        }
        let mut r = vec![m_in(ct("state"), s("invalid"))];
        r.extend(self.log.record("AUDIT INVALID", self.log.limited()));
        self.rule(CHAIN_INPUT, r);
    }

    /// What falls through to a base chain's default: `[RAMPART BLOCK]` when it refuses
    /// (`low` and above), `[RAMPART ALLOW]` when it accepts (`medium` and above).
    pub(super) fn policy_log(&mut self, chain: &str, default: Verdict) {
        let (word, from) = match default {
            Verdict::Allow => ("ALLOW", LogLevel::Medium),
            Verdict::Deny | Verdict::Reject => ("BLOCK", LogLevel::Low),
        };
        if self.log.level >= from {
            let r = self.log.record(word, self.log.limited());
            self.rule(chain, r);
        }
    }

    /// The log rule of a user rule marked `log` (its new connections) or `log-all` (every
    /// packet), rate-limited as UFW's; none when the rule does not log or logging is off.
    /// The prefix is the rule's: `ALLOW`, `LIMIT`, or `BLOCK` for deny and reject.
    pub(super) fn rule_log(
        &self,
        rule: &Rule,
        matches: &[Statement<'static>],
    ) -> Option<Vec<Statement<'static>>> {
        if rule.log == RuleLog::None || self.log.level == LogLevel::Off {
            return None;
        }
        let mut r = matches.to_vec();
        if rule.log == RuleLog::Log {
            r.push(m_in(ct("state"), s("new")));
        }
        let word = match rule.action {
            Action::Allow => "ALLOW",
            Action::Limit => "LIMIT",
            Action::Deny | Action::Reject => "BLOCK",
        };
        r.extend(self.log.record(word, true));
        Some(r)
    }

    /// What a limit refuses: `[RAMPART LIMIT BLOCK]`, 3 per minute with UFW's burst of
    /// 5 for it, unless logging is off.
    pub(super) fn limit_log(&self) -> Option<Vec<Statement<'static>>> {
        (self.log.level != LogLevel::Off).then(|| {
            let mut r = self.log.record("LIMIT BLOCK", false);
            r.insert(0, log_limit_burst(super::LIMIT_LOG_BURST));
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::model::Policy;
    use nftables::schema::NfListObject;

    /// The prefixes of the log statements of a chain, with whether each is rate-limited.
    fn logs(p: &Policy, chain: &str) -> Vec<(String, bool)> {
        compile(p)
            .objects
            .iter()
            .filter_map(|o| match o {
                NfListObject::Rule(r) if r.chain == chain => {
                    let limited = r.expr.iter().any(|s| matches!(s, Statement::Limit(_)));
                    r.expr.iter().find_map(|s| match s {
                        Statement::Log(Some(l)) => {
                            Some((l.prefix.as_deref().unwrap_or("").to_string(), limited))
                        }
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_level_logs_what_ufws_does() {
        let mut p = Policy::default();
        let at = |p: &mut Policy, level| {
            p.logging = level;
            (logs(p, "input"), logs(p, "output"))
        };
        let (i, o) = at(&mut p, LogLevel::Off);
        assert!(i.is_empty() && o.is_empty());
        let (i, o) = at(&mut p, LogLevel::Low);
        assert_eq!(i, [("[RAMPART BLOCK] ".into(), true)]);
        assert!(o.is_empty(), "outgoing is allowed: nothing at low");
        let (i, o) = at(&mut p, LogLevel::Medium);
        assert_eq!(
            i,
            [
                ("[RAMPART AUDIT] ".into(), true),
                ("[RAMPART AUDIT INVALID] ".into(), true),
                ("[RAMPART BLOCK] ".into(), true)
            ]
        );
        assert_eq!(
            o,
            [
                ("[RAMPART AUDIT] ".into(), true),
                ("[RAMPART ALLOW] ".into(), true)
            ]
        );
        let (i, _) = at(&mut p, LogLevel::High);
        assert_eq!(
            i,
            [
                ("[RAMPART AUDIT] ".into(), true),
                ("[RAMPART AUDIT INVALID] ".into(), false),
                ("[RAMPART BLOCK] ".into(), false)
            ]
        );
        let (i, _) = at(&mut p, LogLevel::Full);
        assert!(i.iter().all(|(_, limited)| !limited), "{i:?}");
    }

    #[test]
    fn rules_marked_log_use_ufws_words_and_log_all_every_packet() {
        use crate::grammar::parse_rule;
        let mut p = Policy::default();
        for (action, text) in [
            (Action::Allow, "log 22/tcp"),
            (Action::Deny, "log 23/tcp"),
            (Action::Reject, "log-all 24/tcp"),
            (Action::Limit, "log 25/tcp"),
        ] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(action, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        let mut seen = Vec::new();
        for o in &plan.objects {
            let NfListObject::Rule(r) = o else { continue };
            if r.chain != "user_input" {
                continue;
            }
            if let Some(Statement::Log(Some(l))) = r.expr.last() {
                let text = crate::render::statements(&plan, &r.expr);
                let new_only = text.contains("ct state new");
                seen.push((l.prefix.as_deref().unwrap_or("").to_string(), new_only));
            }
        }
        let want = [
            ("[RAMPART ALLOW] ", true),
            ("[RAMPART BLOCK] ", true),
            ("[RAMPART BLOCK] ", false),
            ("[RAMPART LIMIT] ", true),
        ]
        .map(|(p, n)| (p.to_string(), n));
        // IPv4's four rules, then IPv6's.
        assert_eq!(seen, [want.clone(), want].concat());
        p.logging = LogLevel::Off;
        assert!(logs(&p, "user_input").is_empty(), "off silences them");
    }
}
