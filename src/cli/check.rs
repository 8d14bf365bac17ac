//! `rampart check [--json]`: the findings of `model::check` for the policy file.

use crate::model::check::{check, Level};

use super::{CliError, Ctx, Out};

/// The schema name of `check --json`.
pub const CHECK_SCHEMA: &str = "rampart.check/1";

/// The interfaces of this host (of the network namespace it runs in).
fn interfaces() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Ctx<'_> {
    /// `check`: exit status 1 when an error-level finding is made.
    pub(super) fn check(&self, json: bool) -> Result<Out, CliError> {
        let fw = self.open_read()?;
        let policy = fw.policy();
        let findings = check(policy, &interfaces());
        let count = |l: Level| findings.iter().filter(|f| f.level == l).count();
        let (errors, warnings) = (count(Level::Error), count(Level::Warning));
        let out: Out = if json {
            vec![serde_json::json!({
                "schema": CHECK_SCHEMA,
                "rules": policy.rules.len(),
                "errors": errors,
                "warnings": warnings,
                "findings": findings,
            })
            .to_string()]
        } else {
            let mut lines: Out = findings
                .iter()
                .map(|f| {
                    let word = match f.level {
                        Level::Error => "error",
                        Level::Warning => "warning",
                        Level::Info => "info",
                    };
                    format!("{word}: {}", f.message)
                })
                .collect();
            lines.push(format!(
                "{} rules checked: {errors} error{}, {warnings} warning{}",
                policy.rules.len(),
                if errors == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" },
            ));
            lines
        };
        if errors > 0 {
            Err(CliError::Differs(out))
        } else {
            Ok(out)
        }
    }
}
