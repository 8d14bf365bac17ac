//! Reports: `status [verbose|numbered]` and `show added|raw`.

use crate::observe::{self, StatusView};
use crate::store::CounterTags;

use super::{listening, sections, usage, CliError, Ctx, Out};

/// The schema of `status --json`; the number changes when a field changes meaning or
/// goes away (new fields may come without a new number).
pub const STATUS_SCHEMA: &str = "rampart.status/1";
/// The schema of `show added --json`.
pub const RULES_SCHEMA: &str = "rampart.rules/1";

/// The rules as JSON: each its number, the command that re-creates it, and its fields
/// as the policy file holds them.
fn rules_json(policy: &crate::model::Policy) -> serde_json::Value {
    rules_json_counted(policy, None)
}

fn rules_json_counted(
    policy: &crate::model::Policy,
    counts: Option<&[Option<observe::Count>]>,
) -> serde_json::Value {
    serde_json::Value::Array(
        policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let mut v = serde_json::json!({
                    "number": i + 1,
                    "command": observe::rule_command(rule),
                    "rule": rule,
                });
                if let Some(c) = counts.and_then(|c| c.get(i).copied().flatten()) {
                    v["counter"] = serde_json::json!(c);
                }
                v
            })
            .collect(),
    )
}

/// Each user rule's count: the sum of the counters of the kernel rules and map
/// elements the policy's plan says stand for the rule (its tag, see
/// `compile::rule_tag`: a kernel rule by its place in its chain, an element by its
/// key).
pub(super) fn rule_counts(
    policy: &crate::model::Policy,
    plan: &crate::compile::Plan,
    counters: &crate::backend::Counters,
) -> Vec<Option<observe::Count>> {
    let rules = counters
        .rules
        .iter()
        .filter_map(|(at, c)| Some((plan.rule_tags.get(at)?.as_str(), *c)));
    let elements = counters
        .elements
        .iter()
        .filter_map(|(at, c)| Some((plan.element_tags.get(at)?.as_str(), *c)));
    counts_by_rule(&user_tags(policy), policy, rules.chain(elements))
}

/// Each user rule's tag without its families (see `compile::rule_tag`).
fn user_tags(policy: &crate::model::Policy) -> Vec<String> {
    policy
        .rules
        .iter()
        .map(|r| {
            let mut tag = crate::compile::rule_tag(r, "");
            tag.pop();
            tag
        })
        .collect()
}

/// Each user rule's count (its tag without families, [`user_tags`]) from the counters
/// of the kernel objects that stand for user rules, each with its object's tag.
fn counts_by_rule<'t>(
    tags: &[String],
    policy: &crate::model::Policy,
    counted: impl Iterator<Item = (&'t str, (u64, u64))>,
) -> Vec<Option<observe::Count>> {
    use std::collections::HashMap;
    let mut by_tag: HashMap<(&str, char), observe::Count> = HashMap::new();
    for (tag, (p, b)) in counted {
        let Some((hash, fams)) = tag.split_once('.') else {
            continue;
        };
        for f in fams.chars() {
            let c = by_tag.entry((hash, f)).or_default();
            c.packets += p;
            c.bytes += b;
            c.both_families |= fams.len() > 1;
        }
    }
    policy
        .rules
        .iter()
        .zip(tags)
        .map(|(r, hash)| {
            let fam = crate::compile::family_tag(r).chars().next().unwrap_or('4');
            by_tag.get(&(hash.as_str(), fam)).copied()
        })
        .collect()
}

/// Which user rule each counted object of a plan stands for: its rules' tags, and each
/// element's tag with its key's bytes, by map (from the plan's
/// [`crate::backend::element_index`]).
fn counter_tags(plan: &crate::compile::Plan) -> CounterTags {
    let mut rules: Vec<_> = plan
        .rule_tags
        .iter()
        .map(|((chain, n), tag)| (chain.clone(), *n, tag.clone()))
        .collect();
    rules.sort_unstable();
    let elements = crate::backend::element_index(plan)
        .into_iter()
        .map(|(map, keys)| {
            let tagged = keys
                .into_iter()
                .filter_map(|(bytes, text)| {
                    let tag = plan.element_tags.get(&(map.clone(), text))?;
                    Some((bytes, tag.clone()))
                })
                .collect();
            (map, tagged)
        })
        .collect();
    CounterTags { rules, elements }
}

/// Whether the kernel forwards IPv4 or IPv6 packets here (in this network namespace).
fn kernel_forwards() -> bool {
    [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ]
    .iter()
    .any(|p| std::fs::read_to_string(p).is_ok_and(|v| v.trim() != "0"))
}

impl Ctx<'_> {
    /// `status`: what the kernel enforces. When that is not the policy file's (the
    /// file was edited by hand, or the table changed outside rampart), a warning says
    /// so and how to apply the file.
    pub(super) fn status(&self, view: Option<&str>, json: bool) -> Result<Out, CliError> {
        let view = match view {
            None => StatusView::Plain,
            Some("verbose") => StatusView::Verbose,
            Some("numbered") => StatusView::Numbered,
            Some(other) => {
                return Err(usage(format!(
                    "Invalid status view '{other}': use 'status', 'status verbose' or 'status numbered'"
                )))
            }
        };
        let fw = self.open_read()?;
        if let Ok(Some(p)) = fw.rollback_point() {
            eprintln!(
                "WARN: a change is waiting for confirmation: {}",
                super::confirm::describe(&p)
            );
        }
        let active = fw.kernel().is_loaded();
        let path = fw.policy_path();
        // The id of the policy shown, when the kernel's stamp says it holds it.
        let mut held = None;
        let shown = if fw.in_sync() || (!active && !fw.policy().enabled) {
            held = fw.kernel().policy_id().filter(|_| active);
            fw.policy().clone()
        } else if let Some(enforced) = fw.enforced_other() {
            held = fw.kernel().policy_id();
            eprintln!(
                "WARN: {} was changed since it was applied; this is what the kernel enforces ('rampart reload' applies the file)",
                path.display()
            );
            enforced
        } else if active {
            eprintln!(
                "WARN: rampart's table in the kernel is not the one rampart loaded (changed outside rampart?); 'rampart reload' loads {}",
                path.display()
            );
            fw.policy().clone()
        } else {
            eprintln!(
                "WARN: {} says enabled, but its table is not loaded (flushed by another tool?); 'rampart reload' loads it",
                path.display()
            );
            fw.policy().clone()
        };
        // The counters, when the kernel holds what is shown (verbose and JSON views
        // only; none from a backend that cannot read them).
        let counts = (active && (json || view == StatusView::Verbose))
            .then(|| {
                let t = crate::backend::Timer::start();
                // Which user rule each counted kernel object stands for: kept from
                // the last time, or from the plan, which compiles while the kernel's
                // counters are read.
                let ((counted, mut plan, was_kept), (raw, (tags, ahead))) =
                    std::thread::scope(|s| {
                        let compiled = s.spawn(|| match held.and_then(|id| fw.counter_tags(id)) {
                            Some(counted) => (counted, None, true),
                            None => {
                                let plan = crate::compile::compile(&shown);
                                (counter_tags(&plan), Some(plan), false)
                            }
                        });
                        // And the rules' tags and the rows' text meanwhile (the rows for
                        // the text view).
                        let rows = s.spawn(|| {
                            let tags = user_tags(&shown);
                            (tags, (!json).then(|| observe::status_rows(&shown, true)))
                        });
                        let raw = self.backend.raw_counters();
                        t.lap("counters read");
                        let rows = rows.join().expect("rows do not panic");
                        let compiled = compiled.join().expect("compile does not panic");
                        (compiled, (raw, rows))
                    });
                t.lap(if was_kept { "tags read" } else { "compiled" });
                let counts = match &raw {
                    // Straight from the kernel's counters, without their text keys.
                    Some(raw) => {
                        let rules = counted.rules.iter().filter_map(|(chain, n, tag)| {
                            Some((tag.as_str(), raw.rule(chain, *n)?))
                        });
                        let elements = counted.elements.iter().flat_map(|(map, keys)| {
                            keys.iter().filter_map(move |(bytes, tag)| {
                                Some((tag.as_str(), raw.element(map, bytes)?))
                            })
                        });
                        // Tags just worked out are kept (for the next reading) while
                        // the counts are added up.
                        std::thread::scope(|s| {
                            if let Some(id) = held.filter(|_| !was_kept) {
                                s.spawn(|| fw.keep_counter_tags(id, &counted));
                            }
                            counts_by_rule(&tags, &shown, rules.chain(elements))
                        })
                    }
                    None => {
                        let plan = plan.get_or_insert_with(|| crate::compile::compile(&shown));
                        rule_counts(&shown, plan, &self.backend.counters(plan).ok()?)
                    }
                };
                t.lap("counts per rule");
                // The process ends soon after; the system takes the memory back.
                std::mem::forget((counted, raw, plan));
                Some((counts, ahead))
            })
            .flatten();
        let (counts, ahead) = match counts {
            Some((counts, ahead)) => (Some(counts), ahead),
            None => (None, None),
        };
        if json {
            let doc = serde_json::json!({
                "schema": STATUS_SCHEMA,
                "active": active && shown.enabled,
                "enabled": fw.policy().enabled,
                "in_sync": fw.in_sync(),
                "logging": shown.logging,
                "log_group": shown.log_group,
                "defaults": shown.defaults,
                "rules": rules_json_counted(&shown, counts.as_deref()),
            });
            return Ok(vec![doc.to_string()]);
        }
        // Only the verbose view shows the routed default.
        let forwarding = view != StatusView::Verbose || kernel_forwards();
        let text =
            observe::status_counted(&shown, active, view, forwarding, counts.as_deref(), ahead);
        Ok(vec![text.strip_suffix('\n').unwrap_or(&text).to_string()])
    }

    pub(super) fn show(&self, report: &str, json: bool) -> Result<Out, CliError> {
        if json && report != "added" {
            return Err(usage("--json is for 'status' and 'show added'"));
        }
        match report {
            "added" if json => {
                let fw = self.open_read()?;
                let doc = serde_json::json!({
                    "schema": RULES_SCHEMA,
                    "rules": rules_json(fw.policy()),
                });
                Ok(vec![doc.to_string()])
            }
            "added" => {
                let fw = self.open_read()?;
                Ok(vec![observe::show_added(fw.policy())
                    .trim_end()
                    .to_string()])
            }
            name if sections::REPORTS.contains(&name) => {
                let fw = self.open_read()?;
                let plan = fw.plan(fw.policy())?;
                let text = sections::report(&plan, name).unwrap_or_default();
                Ok(vec![text.trim_end().to_string()])
            }
            "listening" => {
                let fw = self.open_read()?;
                Ok(listening::report(fw.policy()))
            }
            "raw" => {
                let text = self.backend.list_text()?;
                Ok(vec![if text.is_empty() {
                    "(rampart's table is not loaded)".to_string()
                } else {
                    text.trim_end().to_string()
                }])
            }
            other => Err(usage(format!(
                "Invalid report '{other}': use 'show added', 'show listening', 'show raw', 'show builtins', 'show before-rules', 'show user-rules', 'show after-rules' or 'show logging-rules'"
            ))),
        }
    }
}
