//! Reports: `status [verbose|numbered]` and `show added|raw`.

use crate::observe::{self, StatusView};

use super::{usage, CliError, Ctx, Out};

impl Ctx<'_> {
    /// `status`: what the kernel enforces. When that is not the policy file's (the
    /// file was edited by hand, or the table changed outside rampart), a warning says
    /// so and how to apply the file.
    pub(super) fn status(&self, view: Option<&str>) -> Result<Out, CliError> {
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
        let text = observe::status(&shown, active, view);
        Ok(vec![text.strip_suffix('\n').unwrap_or(&text).to_string()])
    }

    pub(super) fn show(&self, report: &str) -> Result<Out, CliError> {
        match report {
            "added" => {
                let fw = self.open_read()?;
                Ok(vec![observe::show_added(fw.policy())
                    .trim_end()
                    .to_string()])
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
                "Invalid report '{other}': use 'show added' or 'show raw'"
            ))),
        }
    }
}
