//! Command line: clap for the top level; rule words go to `grammar` unparsed. One file
//! per group of commands: `rules` (allow, deny, reject, limit, insert, prepend, delete),
//! `state` (enable, disable, reload, reset, default, logging), `report` (status, show).
//! Every change goes through `apply`.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::apply::{ApplyError, Firewall, Mode};
use crate::backend::{Backend, BackendError, NftBackend};
use crate::compile::compile;
use crate::grammar::GrammarError;
use crate::model::Action;
use crate::model::Policy;
use crate::render::plan_text;
use crate::store::{StoreError, DEFAULT_CONFIG_DIR};

mod report;
mod rules;
mod state;

/// rampart: an uncomplicated host firewall (UFW's command language, nftables underneath).
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, disable_version_flag = false)]
pub struct Cli {
    /// Show what would change (the nft ruleset) without changing anything.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(short, long, global = true)]
    pub force: bool,
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
    Enable,
    /// Unload the firewall and disable it at boot.
    Disable,
    /// Apply the policy file again (also after editing it by hand).
    Reload,
    /// Disable the firewall and reset the policy to the defaults (keeps a backup).
    Reset,
    /// Show the firewall status: `status [verbose|numbered]`.
    Status {
        /// verbose or numbered
        view: Option<String>,
    },
    /// Show a report: `added` (the rule commands) or `raw` (the kernel table).
    Show {
        /// added | raw
        report: String,
    },
    /// Set a default policy: `default allow|deny|reject [incoming|outgoing|routed]`.
    Default {
        /// allow | deny | reject
        policy: String,
        /// incoming (default) | outgoing | routed
        direction: Option<String>,
    },
    /// Set the logging level: `logging on|off|low|medium|high|full`.
    Logging {
        /// on | off | low | medium | high | full
        level: String,
    },
    /// Add an allow rule.
    Allow(Words),
    /// Add a deny rule.
    Deny(Words),
    /// Add a reject rule.
    Reject(Words),
    /// Add a limit rule.
    Limit(Words),
    /// Insert a rule at a position: `insert N allow|deny|reject|limit RULE`.
    Insert(Words),
    /// Insert a rule first among the rules of its family.
    Prepend(Words),
    /// Delete a rule: `delete N` or `delete allow|deny|reject|limit RULE`.
    Delete(Words),
    /// Print the version.
    Version,
}

/// The unparsed words of a rule.
#[derive(Debug, clap::Args)]
pub struct Words {
    /// Rule words (UFW syntax).
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
    Usage(String),
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
    let out = run_with(cli, &NftBackend)?;
    let mut stdout = io::stdout().lock();
    for line in out {
        let _ = writeln!(stdout, "{line}");
    }
    Ok(())
}

/// Run one parsed command line against `backend`; returns what it prints.
pub fn run_with(cli: Cli, backend: &dyn Backend) -> Result<Out, CliError> {
    let ctx = Ctx {
        dry_run: cli.dry_run,
        force: cli.force,
        dir: cli.config_dir.clone(),
        backend,
    };
    Ok(match cli.command {
        Command::Version => vec![format!("rampart {}", env!("CARGO_PKG_VERSION"))],
        Command::Status { view } => ctx.status(view.as_deref())?,
        Command::Show { report } => ctx.show(&report)?,
        Command::Enable => ctx.enable()?,
        Command::Disable => ctx.disable()?,
        Command::Reload => ctx.reload()?,
        Command::Reset => ctx.reset()?,
        Command::Default { policy, direction } => ctx.default(&policy, direction.as_deref())?,
        Command::Logging { level } => ctx.logging(&level)?,
        Command::Allow(w) => ctx.add(Action::Allow, &w.words)?,
        Command::Deny(w) => ctx.add(Action::Deny, &w.words)?,
        Command::Reject(w) => ctx.add(Action::Reject, &w.words)?,
        Command::Limit(w) => ctx.add(Action::Limit, &w.words)?,
        Command::Insert(w) => ctx.insert(&w.words)?,
        Command::Prepend(w) => ctx.prepend(&w.words)?,
        Command::Delete(w) => ctx.delete(&w.words)?,
    })
}

struct Ctx<'b> {
    dry_run: bool,
    force: bool,
    dir: PathBuf,
    backend: &'b dyn Backend,
}

impl Ctx<'_> {
    /// Open the firewall to change it: exclusive lock; notes on stderr what finishing
    /// an interrupted change did.
    fn open_write(&self) -> Result<Firewall<'_>, CliError> {
        let fw = Firewall::open_write(&self.dir, self.backend)?;
        note_recovery(&fw);
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
        if self.dry_run {
            let fw = Firewall::open_peek(&self.dir, self.backend)?;
            let mut policy = fw.policy().clone();
            let mut out = f(&mut policy, false)?;
            let mut text = vec![plan_text(&compile(&policy))];
            text.append(&mut out);
            return Ok(text);
        }
        self.open_write()?.edit(mode, f)
    }

    /// Ask unless forced. A refusal prints `Aborted` (on the prompt's line) and is
    /// not an error, as in UFW.
    fn confirm(&self, question: &str) -> bool {
        if self.force || self.dry_run {
            return true;
        }
        print!("{question} (y|n)? ");
        let _ = io::stdout().flush();
        let mut answer = String::new();
        let _ = io::stdin().lock().read_line(&mut answer);
        let yes = matches!(answer.trim().to_lowercase().as_str(), "y" | "yes");
        if !yes {
            println!("Aborted");
        }
        yes
    }
}

fn note_recovery(fw: &Firewall) {
    if let Some(note) = fw.recovered {
        eprintln!("rampart: {note}");
    }
}
