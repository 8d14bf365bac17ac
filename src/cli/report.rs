//! Reports: `status [verbose|numbered]` and `show added|raw`.

use crate::observe::{self, StatusView};

use super::{listening, sections, usage, CliError, Ctx, Out};

/// The schema of `status --json`; the number changes when a field changes meaning or
/// goes away (new fields may come without a new number).
pub const STATUS_SCHEMA: &str = "rampart.status/1";
/// The schema of `show added --json`.
pub const RULES_SCHEMA: &str = "rampart.rules/1";

/// The rules as JSON: each its number, the command that re-creates it, and its fields
/// as the policy file holds them.
fn rules_json(policy: &crate::model::Policy) -> serde_json::Value {
    serde_json::Value::Array(
        policy
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                serde_json::json!({
                    "number": i + 1,
                    "command": observe::rule_command(rule),
                    "rule": rule,
                })
            })
            .collect(),
    )
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
        let shown = if fw.in_sync() || (!active && !fw.policy().enabled) {
            fw.policy().clone()
        } else if let Some(enforced) = fw.enforced_other() {
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
        if json {
            let doc = serde_json::json!({
                "schema": STATUS_SCHEMA,
                "active": active && shown.enabled,
                "enabled": fw.policy().enabled,
                "in_sync": fw.in_sync(),
                "logging": shown.logging,
                "log_group": shown.log_group,
                "defaults": shown.defaults,
                "rules": rules_json(&shown),
            });
            return Ok(vec![doc.to_string()]);
        }
        // Only the verbose view shows the routed default.
        let forwarding = view != StatusView::Verbose || kernel_forwards();
        let text = observe::status_here(&shown, active, view, forwarding);
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
