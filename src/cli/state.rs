//! Commands on the firewall as a whole: `enable`, `disable`, `reload`, `reset`,
//! `default`, `logging`.

use crate::apply::Mode;
use crate::model::{LogLevel, Verdict};
use crate::render::plan_text;

use super::{usage, CliError, Ctx, Out};

/// The systemd unit that loads the firewall at boot (`dist/rampart.service`).
pub const UNIT: &str = "rampart.service";
/// What exists when systemd is the init system (as `sd_booted()` checks).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// Why the boot unit was not enabled or disabled.
enum BootUnit {
    /// Not a systemd system.
    NoSystemd,
    /// systemctl failed; its words.
    Failed(String),
}

/// `systemctl enable|disable rampart.service`, where systemd runs.
fn boot_unit(verb: &str) -> Result<(), BootUnit> {
    if !std::path::Path::new(SYSTEMD_RUNNING).is_dir() {
        return Err(BootUnit::NoSystemd);
    }
    let out = std::process::Command::new("systemctl")
        .args(["--quiet", verb, UNIT])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| BootUnit::Failed(format!("cannot run systemctl: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(BootUnit::Failed(format!(
        "systemctl {verb} {UNIT}: {}",
        err.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    )))
}

/// Whether an sshd is among this process's parents (how UFW decides to ask).
fn in_ssh_session() -> bool {
    let mut pid = std::process::id();
    // /proc/PID/stat: "PID (COMM) STATE PPID …"; COMM may hold spaces and parentheses.
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            return false;
        };
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        if comm.starts_with("sshd") {
            return true;
        }
        match tail.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(ppid) if ppid > 1 => pid = ppid,
            _ => return false,
        }
    }
    false
}

/// Whether the policy drops or refuses forwarded traffic that no rule allows.
fn blocks_forwarding(p: &crate::model::Policy) -> bool {
    matches!(
        p.defaults.routed.verdict(),
        Some(Verdict::Deny | Verdict::Reject)
    )
}

impl Ctx<'_> {
    /// Say which other tables route traffic that rampart's routed default now drops.
    fn warn_forwarding(&self) {
        if let Ok(tables) = self.backend.others_forwarding() {
            if !tables.is_empty() {
                eprintln!(
                    "WARN: table {} also handles forwarded traffic (Docker, libvirt?): rampart's routed default now drops what those tables accept; 'rampart default allow routed' lets them decide",
                    tables.join(", table ")
                );
            }
        }
    }

    pub(super) fn enable(&self) -> Result<Out, CliError> {
        // As UFW: asked only inside an SSH session (sshd among the parent processes).
        if in_ssh_session() {
            self.confirm("Command may disrupt existing ssh connections. Proceed with operation")?;
        }
        let mut filters_forwarding = false;
        let out = self.change(Mode::Full, |p, _| {
            p.enabled = true;
            filters_forwarding = blocks_forwarding(p);
            Ok(vec![])
        })?;
        if self.dry_run {
            return Ok(out);
        }
        if filters_forwarding {
            self.warn_forwarding();
        }
        Ok(vec![match boot_unit("enable") {
            Ok(()) => "Firewall is active and enabled on system startup".into(),
            Err(BootUnit::NoSystemd) => "Firewall is active (not enabled on system startup: no systemd here; load it at boot with 'rampart boot')".into(),
            Err(BootUnit::Failed(why)) => {
                eprintln!("WARN: not enabled on system startup: {why}");
                "Firewall is active".into()
            }
        }])
    }

    pub(super) fn disable(&self) -> Result<Out, CliError> {
        if self.dry_run {
            return Ok(vec![]);
        }
        self.change(Mode::Full, |p, _| {
            p.enabled = false;
            Ok(vec![])
        })?;
        Ok(vec![match boot_unit("disable") {
            Ok(()) => "Firewall stopped and disabled on system startup".into(),
            Err(BootUnit::NoSystemd) => "Firewall stopped".into(),
            Err(BootUnit::Failed(why)) => {
                eprintln!("WARN: still enabled on system startup (it loads nothing while disabled): {why}");
                "Firewall stopped".into()
            }
        }])
    }

    /// `boot`: see [`crate::apply::boot`]. A change made with `--confirm` that was
    /// never confirmed is rolled back first: its waiting process did not survive the
    /// reboot, and a reboot is how a locked-out admin gets back in.
    pub(super) fn boot(&self) -> Result<Out, CliError> {
        let waiting = self.dir.join(crate::store::ROLLBACK_FILE).exists();
        let rolled = match waiting {
            true => crate::apply::Firewall::open_write(&self.dir, self.backend)
                .and_then(|fw| fw.roll_back(None)),
            false => Ok(None),
        };
        match rolled {
            Ok(Some(p)) => eprintln!(
                "rampart: '{}' was never confirmed: rolled back",
                crate::model::inert(&p.command)
            ),
            Ok(None) => {}
            // The policy file may not load: boot has its own answer to that.
            Err(e) => eprintln!("WARN: {e}"),
        }
        Ok(vec![match crate::apply::boot(&self.dir, self.backend)? {
            crate::apply::Boot::Loaded => "Firewall loaded".into(),
            crate::apply::Boot::Disabled => "Firewall not enabled (nothing loaded)".into(),
        }])
    }

    /// `unload`: remove the table, keep the policy.
    pub(super) fn unload(&self) -> Result<Out, CliError> {
        crate::apply::unload(&self.dir, self.backend)?;
        Ok(vec!["Firewall unloaded (the policy is unchanged)".into()])
    }

    /// `reload`: apply the policy file again, whole (this is how hand edits are applied).
    pub(super) fn reload(&self) -> Result<Out, CliError> {
        if self.dry_run {
            let fw = self.open_read()?;
            if !fw.policy().enabled {
                return Ok(vec!["Firewall not enabled (skipping reload)".into()]);
            }
            return Ok(vec![plan_text(&fw.plan(fw.policy())?)]);
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
        self.confirm("Resetting all rules to installed defaults. Proceed with operation")?;
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
        let mut filters_forwarding = false;
        let out = self.change(Mode::Auto, |p, _| {
            match dir {
                "incoming" => p.defaults.incoming = v,
                "outgoing" => p.defaults.outgoing = v,
                _ => p.defaults.routed = v.into(),
            }
            filters_forwarding = dir == "routed" && p.enabled && blocks_forwarding(p);
            Ok(vec![
                format!("Default {dir} policy changed to '{}'", v.word()),
                "(be sure to update your rules accordingly)".into(),
            ])
        })?;
        if filters_forwarding && !self.dry_run {
            self.warn_forwarding();
        }
        Ok(out)
    }

    pub(super) fn logging(&self, words: &[String]) -> Result<Out, CliError> {
        if words[0].eq_ignore_ascii_case("to") {
            return self.log_to(&words[1..]);
        }
        let [level] = words else {
            return Err(usage(
                "Wrong number of arguments: use 'logging LEVEL' or 'logging to kernel|nflog N'",
            ));
        };
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

    /// `logging to kernel` / `logging to nflog N`.
    fn log_to(&self, words: &[String]) -> Result<Out, CliError> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let group = match words[..] {
            ["kernel"] => None,
            ["nflog", n] => Some(n.parse::<u16>().map_err(|_| {
                usage(format!(
                    "Invalid nflog group '{n}': use a number from 0 to 65535"
                ))
            })?),
            _ => {
                return Err(usage(
                    "Invalid log target: use 'logging to kernel' or 'logging to nflog N'",
                ))
            }
        };
        self.change(Mode::Auto, |p, _| {
            p.log_group = group;
            Ok(vec![match group {
                None => "Logging to the kernel log".into(),
                Some(n) => format!("Logging to nflog group {n}"),
            }])
        })
    }
}
