//! Commands on the firewall as a whole: `enable`, `disable`, `reload`, `reset`,
//! `default`, `logging`.

use crate::apply::Mode;
use crate::compile::compile;
use crate::model::{LogLevel, Verdict};
use crate::render::plan_text;

use super::{usage, CliError, Ctx, Out};

impl Ctx<'_> {
    pub(super) fn enable(&self) -> Result<Out, CliError> {
        if !self.confirm("Command may disrupt existing ssh connections. Proceed with operation") {
            return Ok(vec![]);
        }
        let out = self.change(Mode::Full, |p, _| {
            p.enabled = true;
            Ok(vec![])
        })?;
        if self.dry_run {
            return Ok(out);
        }
        Ok(vec![
            "Firewall is active and enabled on system startup".into()
        ])
    }

    pub(super) fn disable(&self) -> Result<Out, CliError> {
        if self.dry_run {
            return Ok(vec![]);
        }
        self.change(Mode::Full, |p, _| {
            p.enabled = false;
            Ok(vec![
                "Firewall stopped and disabled on system startup".into()
            ])
        })
    }

    /// `reload`: apply the policy file again, whole (this is how hand edits are applied).
    pub(super) fn reload(&self) -> Result<Out, CliError> {
        if self.dry_run {
            let fw = self.open_read()?;
            if !fw.policy().enabled {
                return Ok(vec!["Firewall not enabled (skipping reload)".into()]);
            }
            return Ok(vec![plan_text(&compile(fw.policy()))]);
        }
        // Also when disabled: a table left loaded is then removed.
        self.change(Mode::Full, |p, _| {
            Ok(vec![if p.enabled {
                "Firewall reloaded".into()
            } else {
                "Firewall not enabled (skipping reload)".into()
            }])
        })
    }

    pub(super) fn reset(&self) -> Result<Out, CliError> {
        if !self.confirm("Resetting all rules to installed defaults. Proceed with operation") {
            return Ok(vec![]);
        }
        if self.dry_run {
            return Ok(vec![]);
        }
        let (policy, backup) = crate::apply::reset(&self.dir, self.backend)?;
        Ok(backup
            .map(|b| format!("Backing up '{}' to '{}'", policy.display(), b.display()))
            .into_iter()
            .collect())
    }

    pub(super) fn default(&self, verdict: &str, direction: Option<&str>) -> Result<Out, CliError> {
        let verdict = verdict.to_lowercase();
        let direction = direction.map(str::to_lowercase);
        let v = match verdict.as_str() {
            "allow" => Verdict::Allow,
            "deny" => Verdict::Deny,
            "reject" => Verdict::Reject,
            other => {
                return Err(usage(format!(
                    "Unsupported default policy '{other}': use allow, deny or reject"
                )))
            }
        };
        let dir = match direction.as_deref().unwrap_or("incoming") {
            "incoming" | "input" => "incoming",
            "outgoing" | "output" => "outgoing",
            "routed" | "forward" => "routed",
            other => {
                return Err(usage(format!(
                    "Unsupported direction '{other}': use incoming, outgoing or routed"
                )))
            }
        };
        self.change(Mode::Auto, |p, _| {
            match dir {
                "incoming" => p.defaults.incoming = v,
                "outgoing" => p.defaults.outgoing = v,
                _ => p.defaults.routed = v,
            }
            Ok(vec![
                format!("Default {dir} policy changed to '{}'", v.word()),
                "(be sure to update your rules accordingly)".into(),
            ])
        })
    }

    pub(super) fn logging(&self, level: &str) -> Result<Out, CliError> {
        let new = match level.to_lowercase().as_str() {
            "on" => None,
            "off" => Some(LogLevel::Off),
            "low" => Some(LogLevel::Low),
            "medium" => Some(LogLevel::Medium),
            "high" => Some(LogLevel::High),
            "full" => Some(LogLevel::Full),
            other => {
                return Err(usage(format!(
                    "Invalid log level '{other}': use on, off, low, medium, high or full"
                )))
            }
        };
        self.change(Mode::Auto, |p, _| {
            p.logging = match new {
                Some(l) => l,
                None if p.logging == LogLevel::Off => LogLevel::Low,
                None => p.logging,
            };
            Ok(vec![if p.logging == LogLevel::Off {
                "Logging disabled".into()
            } else {
                "Logging enabled".into()
            }])
        })
    }
}
