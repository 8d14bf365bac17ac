//! Command line: clap for the top level; rule words go to `grammar` unparsed. One file
//! per group of commands: `rules` (allow, deny, reject, limit, insert, prepend, delete),
//! `state` (enable, disable, reload, reset, default, logging), `report` (status, show).
//! Every change goes through `apply`.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::apply::{ApplyError, BootError, Firewall, Mode};
use crate::backend::{Backend, BackendError, NftBackend};
use crate::compile::compile;
use crate::grammar::GrammarError;
use crate::model::Action;
use crate::model::Policy;
use crate::render::plan_text;
use crate::store::{StoreError, DEFAULT_CONFIG_DIR};

mod app;
mod check;
mod confirm;
mod declare;
mod guard;
mod help;
mod limits;
mod listening;
mod report;
mod rules;
mod sections;
mod state;
mod top;

pub use confirm::{MAX_CONFIRM_SECONDS, ROLLBACK_LOG};

/// rampart: an uncomplicated host firewall (UFW's command language, nftables underneath).
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, disable_version_flag = false)]
pub struct Cli {
    /// Show what would change (the nft ruleset) without changing anything.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Do not ask for confirmation, and go on even if the change would lock out the
    /// SSH session it is typed in.
    #[arg(short, long, global = true)]
    pub force: bool,
    /// Roll the change back after SECONDS unless `rampart confirm` runs first (for
    /// commands that change the firewall).
    #[arg(long, global = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONFIRM_SECONDS)))]
    pub confirm: Option<u32>,
    /// Where the policy is kept.
    #[arg(long, global = true, env = "RAMPART_CONFIG_DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the firewall and enable it at boot.
    #[command(after_help = help::ENABLE)]
    Enable,
    /// Unload the firewall and disable it at boot.
    #[command(after_help = help::DISABLE)]
    Disable,
    /// Apply the policy file again (also after editing it by hand).
    #[command(after_help = help::RELOAD)]
    Reload,
    /// Disable the firewall and reset the policy to the defaults (keeps a backup).
    #[command(after_help = help::RESET)]
    Reset,
    /// Load the policy if it is enabled, nothing otherwise; no questions (the boot
    /// unit's start and reload). A policy file that does not load: the last policy
    /// rampart wrote is loaded instead, and the exit status says it failed.
    #[command(after_help = help::BOOT)]
    Boot,
    /// Remove rampart's table from the kernel, leaving the policy as it is (the boot
    /// unit's stop).
    #[command(after_help = help::UNLOAD)]
    Unload,
    /// Show the firewall status: `status [verbose|numbered]`.
    #[command(after_help = help::STATUS)]
    Status {
        /// verbose or numbered
        view: Option<String>,
        /// Print JSON (schema `rampart.status/1`, see README "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Show a report: `added` (the rule commands), `listening` (the listening sockets
    /// and the rules that decide new connections to them), `raw` (the kernel table), or
    /// a part of the ruleset: `builtins`, `before-rules`, `user-rules`, `after-rules`,
    /// `logging-rules`.
    #[command(after_help = help::SHOW)]
    Show {
        /// added | listening | raw | builtins | before-rules | user-rules | after-rules |
        /// logging-rules
        report: String,
        /// Print JSON (`show added --json`: schema `rampart.rules/1`).
        #[arg(long)]
        json: bool,
    },
    /// Set a default policy: `default allow|deny|reject [incoming|outgoing|routed]`.
    #[command(after_help = help::DEFAULT)]
    Default {
        /// allow | deny | reject
        policy: String,
        /// incoming (default) | outgoing | routed
        direction: Option<String>,
    },
    /// Set the logging level, or where log records go.
    ///
    /// `logging on|off|low|medium|high|full` sets the level, as UFW's. Records go to the
    /// kernel log (`logging to kernel`, the default) or to an nflog group that a logger
    /// such as ulogd2 reads (`logging to nflog N`, N from 0 to 65535): a network namespace
    /// other than the host's own writes nothing to the kernel log.
    #[command(
        after_help = "Examples:\n  rampart logging medium\n  rampart logging to nflog 5\n  rampart logging to kernel"
    )]
    Logging {
        /// on | off | low | medium | high | full, or: to kernel | to nflog N
        #[arg(required = true, num_args = 1..=3)]
        words: Vec<String>,
    },
    /// Add an allow rule.
    #[command(after_help = help::ALLOW)]
    Allow(Words),
    /// Add a deny rule.
    #[command(after_help = help::DENY)]
    Deny(Words),
    /// Add a reject rule.
    #[command(after_help = help::REJECT)]
    Reject(Words),
    /// Add a limit rule.
    #[command(after_help = help::LIMIT)]
    Limit(Words),
    /// Insert a rule at a position: `insert N allow|deny|reject|limit RULE`.
    #[command(after_help = help::INSERT)]
    Insert(Words),
    /// Insert a rule first among the rules of its family.
    #[command(after_help = help::PREPEND)]
    Prepend(Words),
    /// Delete a rule: `delete N` or `delete allow|deny|reject|limit RULE`.
    #[command(after_help = help::DELETE)]
    Delete(Words),
    /// A rule for forwarded traffic: `route allow|deny|reject|limit [in on IF] [out on
    /// IF] RULE`, `route insert N …`, `route prepend …`, `route delete RULE` (by number: `delete N`).
    #[command(after_help = help::ROUTE)]
    Route(Words),
    /// Application profiles: `app list`, `app info NAME|all`, `app update NAME`.
    #[command(after_help = help::APP)]
    App(Words),
    /// Keep the change made with `--confirm` (cancels its rollback).
    #[command(after_help = help::CONFIRM)]
    Confirm,
    /// Roll the change made with `--confirm` back now.
    #[command(after_help = help::ROLLBACK)]
    Rollback,
    /// Wait for a `--confirm` deadline and roll back (started by `--confirm`).
    #[command(hide = true)]
    RollbackWait {
        /// The rollback point's token.
        token: String,
    },
    /// Make the policy exactly a file's (configuration management).
    ///
    /// FILE is a policy in the format of the config directory's policy.toml (`-`: read
    /// it from standard input). The change is applied atomically, as one change (limit
    /// state of unchanged limits is kept); applying the same file again changes
    /// nothing, not even in the kernel. A file without `enabled` leaves the firewall
    /// enabled or disabled as it is. What changes is printed as rule commands.
    #[command(
        after_help = "Exit status with --check: 0 no difference, 1 a difference (printed), 2 or more an error.\n\nExamples:\n  rampart apply /srv/fleet/web.toml\n  rampart apply --check - < web.toml\n  rampart --confirm 60 apply web.toml"
    )]
    Apply {
        /// Print the difference only, and exit 1 if there is one: change nothing.
        #[arg(long)]
        check: bool,
        /// The policy file (`-`: standard input).
        file: String,
    },
    /// Import an existing UFW set-up: `import ufw [DIR]`.
    ///
    /// Reads the rules of DIR/user.rules and DIR/user6.rules (limit, log, comment,
    /// interface, route and app rules too), the default policies of /etc/default/ufw
    /// (--defaults), and the logging level and enabled state of DIR/ufw.conf, and makes
    /// them the policy, as one change. What is not translated is reported with its file
    /// and line: lines added to UFW's before and after rules or by hand to its user
    /// rules, the kernel settings of its sysctl.conf, and start scripts it runs. With
    /// --dry-run, the policy is printed and nothing changes.
    #[command(
        after_help = "Examples:\n  rampart --dry-run import ufw\n  rampart import ufw\n  rampart import ufw /srv/old-host/etc/ufw --defaults /srv/old-host/etc/default/ufw"
    )]
    Import {
        /// What to import from: ufw.
        from: String,
        /// UFW's config directory.
        #[arg(default_value = crate::import::UFW_DIR)]
        dir: PathBuf,
        /// UFW's defaults file.
        #[arg(long, default_value = crate::import::UFW_DEFAULTS)]
        defaults: PathBuf,
    },
    /// Find what is wrong with the policy: rules that can never match (and the rule
    /// above that decides for them), a limit that decides what a later deny was meant
    /// for (UFW's surprise), redundant rules, rules for interfaces this host does not
    /// have, IPv4 rules whose IPv6 twin is missing, and what is open to any source.
    /// Exit status 1 when an error is found.
    #[command(after_help = help::CHECK)]
    Check {
        /// Print the findings as JSON (schema rampart.check/1).
        #[arg(long)]
        json: bool,
    },
    /// What each limit is doing now: the connections it refused since the table was
    /// applied, the sources using its rate window (and when a slot comes back) or the
    /// connections they hold open; `--reset KEY` forgets a source (an unban).
    #[command(after_help = help::LIMITS)]
    Limits {
        /// Print it as JSON (schema rampart.limits/1).
        #[arg(long)]
        json: bool,
        /// Forget what every limit holds of this source address (or `any`).
        #[arg(long, value_name = "KEY")]
        reset: Option<String>,
    },
    /// A live view, refreshed every second, of the busiest rules and the limits
    /// refusing most (packets per second, a sparkline of the last minute); `q` quits.
    /// Not on a terminal, or with --once: one plain-text snapshot of the totals.
    #[command(after_help = help::TOP)]
    Top {
        /// Print one plain-text snapshot and exit.
        #[arg(long)]
        once: bool,
    },
    /// Print the version.
    #[command(after_help = help::VERSION)]
    Version,
}

impl Command {
    /// Whether the command changes the firewall (what `--confirm` is for).
    fn changes(&self) -> bool {
        !matches!(
            self,
            Command::Status { .. }
                | Command::Show { .. }
                | Command::Version
                | Command::Boot
                | Command::Unload
                | Command::Confirm
                | Command::Rollback
                | Command::RollbackWait { .. }
                | Command::Apply { check: true, .. }
                | Command::Check { .. }
                | Command::Top { .. }
                | Command::Limits { .. }
        ) && !matches!(self, Command::App(w) if w.words.first().map(String::as_str) != Some("update"))
    }
}

/// The example command lines of a command's help text (the indented lines after its
/// `Examples:`), for the man page and the tests.
pub fn help_examples(text: &str) -> Vec<String> {
    text.split("Examples:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .map_while(|l| l.strip_prefix("  "))
        .map(String::from)
        .collect()
}

/// The unparsed words of a rule.
#[derive(Debug, clap::Args)]
pub struct Words {
    /// Rule words (see below).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub words: Vec<String>,
}

/// Errors a command reports to the user, one line each.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Grammar(#[from] GrammarError),
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("{0}")]
    Boot(#[from] BootError),
    #[error("{0}")]
    Usage(String),
    /// The user said no (`Aborted` is printed with the prompt), or no answer could come.
    #[error("{0}")]
    Declined(String),
    /// An import that cannot be done (the file and line say why); nothing changed.
    #[error("{0}; nothing was changed")]
    Import(String),
    /// `apply --check` found a difference: these lines go to stdout, exit status 1.
    #[error("")]
    Differs(Vec<String>),
}

/// Exit statuses (README "Exit status").
pub mod exit {
    /// A bad command line or rule.
    pub const USAGE: u8 = 1;
    /// `apply --check`: the file's policy differs from the one in force.
    pub const DIFFERS: u8 = 1;
    /// The config directory or policy file: unreadable, invalid, unsafe, locked, unwritable.
    pub const CONFIG: u8 = 2;
    /// The kernel: nft missing, refusing, failing, timing out.
    pub const KERNEL: u8 = 3;
    /// A question was answered no, or could not be answered; or the change would
    /// lock out the SSH session it is typed in.
    pub const DECLINED: u8 = 4;
}

impl CliError {
    fn from_apply(e: &ApplyError) -> u8 {
        match e {
            ApplyError::Store(_) | ApplyError::Commit { .. } | ApplyError::Custom(_) => {
                exit::CONFIG
            }
            ApplyError::Backend(_) | ApplyError::Kernel { .. } => exit::KERNEL,
        }
    }

    /// The exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Grammar(_) | CliError::Usage(_) => exit::USAGE,
            CliError::Declined(_) => exit::DECLINED,
            CliError::Differs(_) => exit::DIFFERS,
            CliError::Import(_) => exit::CONFIG,
            CliError::Apply(e) => CliError::from_apply(e),
            CliError::Boot(BootError::BadPolicy { .. } | BootError::BadCustom(_)) => exit::CONFIG,
            CliError::Boot(BootError::Apply(e)) => CliError::from_apply(e),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> CliError {
        CliError::Apply(e.into())
    }
}

impl From<BackendError> for CliError {
    fn from(e: BackendError) -> CliError {
        CliError::Apply(e.into())
    }
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Output collected by a command (stdout lines).
type Out = Vec<String>;

/// Run one parsed command line against the kernel. Prints to stdout; errors are
/// returned for `main`.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let out = match run_with(cli, &NftBackend) {
        Err(CliError::Differs(lines)) => {
            let mut stdout = io::stdout().lock();
            for line in &lines {
                let _ = writeln!(stdout, "{line}");
            }
            return Err(CliError::Differs(lines));
        }
        other => other?,
    };
    let mut stdout = io::stdout().lock();
    for line in out {
        let _ = writeln!(stdout, "{line}");
    }
    Ok(())
}

/// Run one parsed command line against `backend`; returns what it prints.
pub fn run_with(cli: Cli, backend: &dyn Backend) -> Result<Out, CliError> {
    // Profiles: the config directory's own first, then UFW's.
    crate::grammar::use_profile_dirs(vec![
        cli.config_dir.join(crate::model::profiles::PROFILE_SUBDIR),
        std::path::PathBuf::from(crate::model::profiles::UFW_PROFILE_DIR),
    ]);
    let mut ctx = Ctx {
        dry_run: cli.dry_run,
        force: cli.force,
        dir: cli.config_dir.clone(),
        backend,
        own_rollback: None,
    };
    let Some(seconds) = cli.confirm else {
        return ctx.dispatch(cli.command);
    };
    if !cli.command.changes() {
        return Err(usage(
            "--confirm is for commands that change the firewall (enable, allow, delete, default, …)",
        ));
    }
    if cli.dry_run {
        return Err(usage(
            "--confirm and --dry-run do not go together: a dry run changes nothing",
        ));
    }
    let point = ctx.save_rollback(seconds, &typed_command())?;
    ctx.own_rollback = Some(point.token.clone());
    match ctx.dispatch(cli.command) {
        Ok(mut out) => {
            out.extend(ctx.start_waiter(&point)?);
            Ok(out)
        }
        Err(e) => {
            ctx.drop_rollback();
            Err(e)
        }
    }
}

/// The command as typed, without the program name and the global options (for
/// messages).
fn typed_command() -> String {
    let mut words = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--confirm" | "--config-dir" => {
                args.next();
            }
            "--force" | "-f" | "--dry-run" => {}
            _ if a.starts_with("--confirm=") || a.starts_with("--config-dir=") => {}
            _ => words.push(a),
        }
    }
    words.join(" ")
}

impl Ctx<'_> {
    fn dispatch(&self, command: Command) -> Result<Out, CliError> {
        let ctx = self;
        Ok(match command {
            Command::Version => vec![format!("rampart {}", env!("CARGO_PKG_VERSION"))],
            Command::Status { view, json } => ctx.status(view.as_deref(), json)?,
            Command::Apply { check, file } => ctx.apply(&file, check)?,
            Command::Check { json } => ctx.check(json)?,
            Command::Top { once } => ctx.top(once)?,
            Command::Limits { json, reset } => ctx.limits(json, reset.as_deref())?,
            Command::Import {
                from,
                dir,
                defaults,
            } => ctx.import(&from, &dir, &defaults)?,
            Command::Show { report, json } => ctx.show(&report, json)?,
            Command::Enable => ctx.enable()?,
            Command::Disable => ctx.disable()?,
            Command::Reload => ctx.reload()?,
            Command::Reset => ctx.reset()?,
            Command::Boot => ctx.boot()?,
            Command::Unload => ctx.unload()?,
            Command::Default { policy, direction } => ctx.default(&policy, direction.as_deref())?,
            Command::Logging { words } => ctx.logging(&words)?,
            Command::Allow(w) => ctx.add(Action::Allow, &w.words)?,
            Command::Deny(w) => ctx.add(Action::Deny, &w.words)?,
            Command::Reject(w) => ctx.add(Action::Reject, &w.words)?,
            Command::Limit(w) => ctx.add(Action::Limit, &w.words)?,
            Command::Insert(w) => ctx.insert(&w.words)?,
            Command::Prepend(w) => ctx.prepend(&w.words)?,
            Command::Delete(w) => ctx.delete(&w.words)?,
            Command::App(w) => ctx.app(&w.words)?,
            Command::Route(w) => ctx.route(&w.words)?,
            Command::Confirm => ctx.confirm_change()?,
            Command::Rollback => ctx.rollback()?,
            Command::RollbackWait { token } => ctx.rollback_wait(&token)?,
        })
    }
}

struct Ctx<'b> {
    dry_run: bool,
    force: bool,
    dir: PathBuf,
    backend: &'b dyn Backend,
    /// The token of the rollback point this command saved (`--confirm`).
    own_rollback: Option<String>,
}

impl Ctx<'_> {
    /// Open the firewall to change it: exclusive lock; notes on stderr what finishing
    /// an interrupted change did.
    fn open_write(&self) -> Result<Firewall<'_>, CliError> {
        let fw = Firewall::open_write(&self.dir, self.backend)?;
        note_recovery(&fw);
        Ok(fw)
    }

    /// [`Ctx::open_write`] for a change: warns when a change made with `--confirm`
    /// waits (this one rolls back with it).
    fn open_change(&self) -> Result<Firewall<'_>, CliError> {
        let fw = self.open_write()?;
        let point = fw.rollback_point().ok().flatten();
        if let Some(p) = point.filter(|p| self.own_rollback.as_ref() != Some(&p.token)) {
            eprintln!(
                "WARN: a change is waiting for confirmation: {}; this change rolls back with it",
                confirm::describe(&p)
            );
        }
        Ok(fw)
    }

    /// Open the firewall to read it (shared lock).
    fn open_read(&self) -> Result<Firewall<'_>, CliError> {
        let fw = Firewall::open_read(&self.dir, self.backend)?;
        note_recovery(&fw);
        Ok(fw)
    }

    /// Change the policy with `f` (given the policy and whether the firewall is live)
    /// and apply it. A dry run prints the resulting ruleset and changes nothing (its
    /// messages are UFW's "Rules updated").
    fn change<F>(&self, mode: Mode, f: F) -> Result<Out, CliError>
    where
        F: FnOnce(&mut Policy, bool) -> Result<Out, CliError>,
    {
        // The lockout guard: the changed policy must still admit this SSH session's
        // next connection (a dry run only warns).
        let session = guard::Session::find();
        let f = |p: &mut Policy, live: bool| {
            let out = f(p, live)?;
            if let Some(s) = &session {
                if let Some(why) = guard::refusal(p, s) {
                    let text = guard::message(s, &why);
                    if self.dry_run {
                        eprintln!("WARN: {text}");
                    } else if !self.force {
                        return Err(CliError::Declined(text));
                    }
                }
            }
            Ok(out)
        };
        if self.dry_run {
            let fw = Firewall::open_peek(&self.dir, self.backend)?;
            let mut policy = fw.policy().clone();
            let mut out = f(&mut policy, false)?;
            let plan = if policy.enabled {
                fw.plan(&policy)?
            } else {
                compile(&policy)
            };
            let mut text = vec![plan_text(&plan)];
            text.append(&mut out);
            return Ok(text);
        }
        self.open_change()?.edit(mode, f)
    }

    /// Ask unless forced. A refusal prints `Aborted`, as in UFW, and is
    /// [`CliError::Declined`]; so is a question no answer can come to (stdin closed).
    fn confirm(&self, question: &str) -> Result<(), CliError> {
        if self.force || self.dry_run {
            return Ok(());
        }
        print!("{question} (y|n)? ");
        let _ = io::stdout().flush();
        let mut answer = String::new();
        let read = io::stdin().lock().read_line(&mut answer);
        if !matches!(read, Ok(n) if n > 0) {
            println!();
            return Err(CliError::Declined(
                "no answer could come (stdin is closed): run with --force to go on without asking"
                    .into(),
            ));
        }
        if matches!(answer.trim().to_lowercase().as_str(), "y" | "yes") {
            Ok(())
        } else {
            println!("Aborted");
            Err(CliError::Declined(String::new()))
        }
    }
}

fn note_recovery(fw: &Firewall) {
    if let Some(note) = fw.recovered {
        eprintln!("rampart: {note}");
    }
}
