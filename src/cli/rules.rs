//! Rule commands: `allow|deny|reject|limit RULE`, `insert N …`, `prepend …`, `delete …`.

use crate::apply::Mode;
use crate::grammar::{parse_rule, ParsedRule};
use crate::model::{Action, AddOutcome, Family, InvalidPosition, Position, Rule};
use crate::observe;

use super::{usage, CliError, Ctx, Out};

/// The action word that starts `insert N ACTION …`, `prepend ACTION …`, `delete ACTION …`.
fn split_action(words: &[String]) -> Result<(Action, &[String]), CliError> {
    let Some(first) = words.first() else {
        return Err(usage("Wrong number of arguments"));
    };
    let action = match first.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "reject" => Action::Reject,
        "limit" => Action::Limit,
        other => return Err(usage(format!("Invalid token '{other}'"))),
    };
    Ok((action, &words[1..]))
}

/// ` (v6)` for an IPv6 rule's message.
fn v6_suffix(rule: &Rule) -> &'static str {
    if rule.family == Family::V6 {
        " (v6)"
    } else {
        ""
    }
}

/// How a command's rule words are read: [`parse_rule`], or
/// [`crate::grammar::parse_route_rule`] for `route …`.
type Parse = fn(Action, &[String]) -> Result<ParsedRule, crate::grammar::GrammarError>;

impl Ctx<'_> {
    /// `allow|deny|reject|limit RULE`.
    pub(super) fn add(&self, action: Action, words: &[String]) -> Result<Out, CliError> {
        self.add_parsed(parse_rule(action, words)?, Position::Append)
    }

    /// `prepend ACTION RULE`.
    pub(super) fn prepend(&self, words: &[String]) -> Result<Out, CliError> {
        self.prepend_with(words, parse_rule)
    }

    fn prepend_with(&self, words: &[String], parse: Parse) -> Result<Out, CliError> {
        let (action, rest) = split_action(words)?;
        self.add_parsed(parse(action, rest)?, Position::Prepend)
    }

    /// `insert N ACTION RULE`.
    pub(super) fn insert(&self, words: &[String]) -> Result<Out, CliError> {
        self.insert_with(words, parse_rule)
    }

    fn insert_with(&self, words: &[String], parse: Parse) -> Result<Out, CliError> {
        let Some(n) = words.first() else {
            return Err(usage("Wrong number of arguments"));
        };
        let num: i64 = n
            .parse()
            .map_err(|_| usage(format!("Insert position '{n}' is not a valid position")))?;
        if num < 1 {
            return Err(usage(format!("Cannot insert rule at position '{n}'")));
        }
        let (action, rest) = split_action(&words[1..])?;
        self.add_parsed(parse(action, rest)?, Position::Insert(num as usize))
    }

    /// `route allow|deny|reject|limit RULE`, `route insert N …`, `route prepend …`,
    /// `route delete RULE`: rules for traffic this host forwards. (`route delete N` is
    /// refused as UFW refuses it: `delete N` deletes any rule by number.)
    pub(super) fn route(&self, words: &[String]) -> Result<Out, CliError> {
        let route = crate::grammar::parse_route_rule;
        match words.first().map(String::as_str) {
            None => Err(usage("Wrong number of arguments")),
            Some("delete") if words.len() == 2 && words[1].parse::<u64>().is_ok() => Err(usage(
                "'route delete NUM' unsupported. Use 'delete NUM' instead.",
            )),
            Some("delete") => self.delete_with(&words[1..], route),
            Some("insert") => self.insert_with(&words[1..], route),
            Some("prepend") => self.prepend_with(&words[1..], route),
            Some(_) => {
                let (action, rule) = split_action(words)?;
                self.add_parsed(route(action, rule)?, Position::Append)
            }
        }
    }

    fn add_parsed(&self, parsed: ParsedRule, position: Position) -> Result<Out, CliError> {
        self.change(Mode::Auto, |p, live| {
            let mut out = Vec::new();
            if parsed.normalized {
                eprintln!("WARN: Rule changed after normalization");
            }
            let families: Vec<Family> = parsed.rules.iter().map(|r| r.family).collect();
            let added = parsed.rules.clone();
            let outcomes = p
                .add_all(parsed.rules, position)
                .map_err(|InvalidPosition(n)| usage(format!("Invalid position '{n}'")))?;
            for rule in &added {
                let Some(n) = p.rules.iter().position(|r| r == rule).map(|i| i + 1) else {
                    continue;
                };
                if let Some(m) = p.shadowed_by(n) {
                    eprintln!(
                        "WARN: Rule {n} ({}) is shadowed by rule {m} ({}) above it: it can never match",
                        observe::rule_command(rule),
                        observe::rule_command(&p.rules[m - 1])
                    );
                }
            }
            for (family, outcome) in families.into_iter().zip(outcomes) {
                let v6 = if family == Family::V6 { " (v6)" } else { "" };
                let msg = match outcome {
                    AddOutcome::Skipped if matches!(position, Position::Append) => {
                        "Skipping adding existing rule"
                    }
                    AddOutcome::Skipped => "Skipping inserting existing rule",
                    _ if !live => "Rules updated",
                    AddOutcome::Added => "Rule added",
                    AddOutcome::Inserted => "Rule inserted",
                    AddOutcome::Updated => "Rule updated",
                };
                out.push(format!("{msg}{v6}"));
            }
            Ok(out)
        })
    }

    /// `delete N` or `delete ACTION RULE`.
    pub(super) fn delete(&self, words: &[String]) -> Result<Out, CliError> {
        self.delete_with(words, parse_rule)
    }

    fn delete_with(&self, words: &[String], parse: Parse) -> Result<Out, CliError> {
        let Some(first) = words.first() else {
            return Err(usage("Wrong number of arguments"));
        };
        if let Ok(n) = first.parse::<usize>() {
            if words.len() != 1 {
                return Err(usage("Wrong number of arguments"));
            }
            return self.delete_number(n, first);
        }
        let (action, rest) = split_action(words)?;
        let parsed = parse(action, rest)?;
        self.change(Mode::Auto, |p, live| {
            let mut out = Vec::new();
            for rule in parsed.rules {
                let msg = if !p.remove_matching(&rule) {
                    "Could not delete non-existent rule"
                } else if live {
                    "Rule deleted"
                } else {
                    "Rules updated"
                };
                out.push(format!("{msg}{}", v6_suffix(&rule)));
            }
            Ok(out)
        })
    }

    /// `delete N`: the rule is shown and confirmed under the lock, so the rule deleted
    /// is the rule confirmed.
    fn delete_number(&self, n: usize, typed: &str) -> Result<Out, CliError> {
        self.change(Mode::Auto, |p, live| {
            let Some(rule) = n.checked_sub(1).and_then(|i| p.rules.get(i)).cloned() else {
                return Err(usage(format!("Could not find rule '{typed}'")));
            };
            if !self.force && !self.dry_run {
                println!("Deleting:\n {}", observe::rule_command(&rule));
            }
            self.confirm("Proceed with operation")?;
            p.remove_number(n);
            let msg = if live {
                "Rule deleted"
            } else {
                "Rules updated"
            };
            Ok(vec![format!("{msg}{}", v6_suffix(&rule))])
        })
    }
}
