//! Command line: clap for the top level; rule words go to `grammar` unparsed.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::backend::{Backend, BackendError, NftBackend};
use crate::compile::compile;
use crate::grammar::{parse_rule, GrammarError};
use crate::model::{
    Action, AddOutcome, Family, InvalidPosition, LogLevel, Policy, Position, Verdict,
};
use crate::observe::{self, StatusView};
use crate::render::plan_text;
use crate::store::{Serialized, Source, Store, StoreError, DEFAULT_CONFIG_DIR};

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
    /// Re-apply the policy.
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
    Store(#[from] StoreError),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Usage(String),
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Output collected by a command (stdout lines).
type Out = Vec<String>;

/// Run one parsed command line. Prints to stdout; errors are returned for `main`.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx {
        dry_run: cli.dry_run,
        force: cli.force,
        dir: cli.config_dir.clone(),
        backend: NftBackend,
    };
    let out = match cli.command {
        Command::Version => vec![format!("rampart {}", env!("CARGO_PKG_VERSION"))],
        Command::Status { view } => ctx.status(view.as_deref())?,
        Command::Show { report } => ctx.show(&report)?,
        Command::Enable => ctx.enable()?,
        Command::Disable => ctx.disable()?,
        Command::Reload => ctx.reload()?,
        Command::Reset => ctx.reset()?,
        Command::Default { policy, direction } => ctx.default(&policy, direction.as_deref())?,
        Command::Logging { level } => ctx.logging(&level)?,
        Command::Allow(w) => ctx.add_rule(Action::Allow, &w.words, Position::Append)?,
        Command::Deny(w) => ctx.add_rule(Action::Deny, &w.words, Position::Append)?,
        Command::Reject(w) => ctx.add_rule(Action::Reject, &w.words, Position::Append)?,
        Command::Limit(w) => ctx.add_rule(Action::Limit, &w.words, Position::Append)?,
        Command::Insert(w) => ctx.insert(&w.words)?,
        Command::Prepend(w) => {
            let (action, rest) = split_action(&w.words)?;
            ctx.add_rule(action, rest, Position::Prepend)?
        }
        Command::Delete(w) => ctx.delete(&w.words)?,
    };
    let mut stdout = io::stdout().lock();
    for line in out {
        let _ = writeln!(stdout, "{line}");
    }
    Ok(())
}

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

struct Ctx {
    dry_run: bool,
    force: bool,
    dir: PathBuf,
    backend: NftBackend,
}

impl Ctx {
    /// Open (and lock) the config directory and load the policy. With `write` false (a
    /// dry run or a read) nothing is created; a missing directory is the default policy.
    fn open(&self, write: bool) -> Result<(Option<Store>, Policy), CliError> {
        let (store, policy, _) = self.open_source(write)?;
        Ok((store, policy))
    }

    /// [`Ctx::open`], keeping the bytes the policy came from (see [`Serialized::edit`]).
    fn open_source(&self, write: bool) -> Result<(Option<Store>, Policy, Source), CliError> {
        let store = Store::open(&self.dir, write)?;
        let (policy, source) = match &store {
            Some(s) => s.load_source()?,
            None => Default::default(),
        };
        Ok((store, policy, source))
    }

    /// Load the policy for reading only (no lock file is created).
    fn read_policy(&self) -> Result<Policy, CliError> {
        Ok(self.open(false)?.1)
    }

    /// Change the policy: apply to the kernel if enabled, then save. On a dry run,
    /// print the ruleset instead and change nothing.
    fn change<F>(&self, f: F) -> Result<Out, CliError>
    where
        F: FnOnce(&mut Policy, bool) -> Result<Out, CliError>,
    {
        let t0 = crate::backend::Timer::start();
        let (store, old, source) = self.open_source(!self.dry_run)?;
        t0.lap("load");
        if self.dry_run {
            let mut policy = old;
            let mut out = f(&mut policy, false)?;
            let mut text = vec![plan_text(&compile(&policy))];
            text.append(&mut out);
            return Ok(text);
        }
        let store = store.expect("store is opened for writing");
        // The edited copy lives outside the scope so that its threads can borrow it.
        let mut edited = None;
        let edited = &mut edited;
        std::thread::scope(|scope| -> Result<Out, CliError> {
            // The loaded policy's plan compiles while the command edits a copy.
            let before = old.enabled.then(|| scope.spawn(|| compile(&old)));
            let policy = edited.insert(old.clone());
            let live = policy.enabled;
            let out = f(policy, live)?;
            t0.lap("edit");
            if *policy == old {
                return Ok(out);
            }
            let t = crate::backend::Timer::start();
            // The new policy is serialized while it compiles and nft works; written after.
            let policy: &Policy = policy;
            let serialized = scope.spawn(|| Serialized::edit(&source, &old, policy));
            let after = policy.enabled.then(|| compile(policy));
            let before = before.map(|h| h.join().expect("compile does not panic"));
            t.lap("compile twice");
            let applied = match (&before, &after) {
                (Some(before), Some(after)) => self.backend.update(before, after),
                (None, Some(plan)) => self.backend.apply(plan),
                (_, None) => Ok(()),
            };
            let serialized = serialized.join().expect("serializing does not panic");
            let saved = applied.map_err(CliError::from).and_then(|()| {
                t.lap("applied");
                store.write(&serialized).map_err(|e| {
                    // Keep the kernel in step with what is on disk.
                    if let Some(before) = &before {
                        let _ = self.backend.apply(before);
                    }
                    CliError::from(e)
                })
            });
            t.lap("saved");
            // Freeing tens of thousands of expressions costs milliseconds; the process
            // ends soon after and the system takes the memory back at once.
            std::mem::forget((before, after));
            saved.map(|()| out)
        })
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

    fn status(&self, view: Option<&str>) -> Result<Out, CliError> {
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
        let policy = self.read_policy()?;
        let active = self.backend.is_loaded()?;
        let text = observe::status(&policy, active, view);
        Ok(vec![text.strip_suffix('\n').unwrap_or(&text).to_string()])
    }

    fn show(&self, report: &str) -> Result<Out, CliError> {
        match report {
            "added" => Ok(vec![observe::show_added(&self.read_policy()?)
                .trim_end()
                .to_string()]),
            "raw" => Ok(vec![self.backend.list_text()?.trim_end().to_string()]),
            other => Err(usage(format!(
                "Invalid report '{other}': use 'show added' or 'show raw'"
            ))),
        }
    }

    fn enable(&self) -> Result<Out, CliError> {
        if !self.confirm("Command may disrupt existing ssh connections. Proceed with operation") {
            return Ok(vec![]);
        }
        let (store, mut policy) = self.open(!self.dry_run)?;
        policy.enabled = true;
        if self.dry_run {
            return Ok(vec![plan_text(&compile(&policy))]);
        }
        self.backend.apply(&compile(&policy))?;
        store.expect("store is open").save(&policy)?;
        Ok(vec![
            "Firewall is active and enabled on system startup".into()
        ])
    }

    fn disable(&self) -> Result<Out, CliError> {
        let store = Store::open(&self.dir, !self.dry_run)?;
        if self.dry_run {
            return Ok(vec![]);
        }
        let store = store.expect("store is open");
        let mut policy = store.load()?;
        policy.enabled = false;
        self.backend.remove()?;
        store.save(&policy)?;
        Ok(vec![
            "Firewall stopped and disabled on system startup".into()
        ])
    }

    fn reload(&self) -> Result<Out, CliError> {
        // `reload` is how hand edits are applied: it also refreshes the policy cache.
        let store = Store::open(&self.dir, !self.dry_run)?;
        let policy = match (&store, self.dry_run) {
            (Some(s), false) => s.load_and_cache()?,
            (Some(s), true) => s.load()?,
            (None, _) => Policy::default(),
        };
        if !policy.enabled {
            return Ok(vec!["Firewall not enabled (skipping reload)".into()]);
        }
        if self.dry_run {
            return Ok(vec![plan_text(&compile(&policy))]);
        }
        let t = crate::backend::Timer::start();
        let plan = compile(&policy);
        t.lap("compile");
        self.backend.apply(&plan)?;
        Ok(vec!["Firewall reloaded".into()])
    }

    fn reset(&self) -> Result<Out, CliError> {
        if !self.confirm("Resetting all rules to installed defaults. Proceed with operation") {
            return Ok(vec![]);
        }
        if self.dry_run {
            return Ok(vec![]);
        }
        let store = Store::open(&self.dir, true)?.expect("store is open");
        let mut out = Vec::new();
        let path = store.policy_path();
        if path.exists() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let backup = path.with_extension(format!("toml.{stamp}"));
            std::fs::copy(&path, &backup).map_err(|source| StoreError::Write {
                path: backup.clone(),
                source,
            })?;
            out.push(format!(
                "Backing up '{}' to '{}'",
                path.display(),
                backup.display()
            ));
        }
        self.backend.remove()?;
        store.save(&Policy::default())?;
        Ok(out)
    }

    fn default(&self, verdict: &str, direction: Option<&str>) -> Result<Out, CliError> {
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
        self.change(|p, _| {
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

    fn logging(&self, level: &str) -> Result<Out, CliError> {
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
        self.change(|p, _| {
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

    fn insert(&self, words: &[String]) -> Result<Out, CliError> {
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
        self.add_rule(action, rest, Position::Insert(num as usize))
    }

    fn add_rule(
        &self,
        action: Action,
        words: &[String],
        position: Position,
    ) -> Result<Out, CliError> {
        let parsed = parse_rule(action, words)?;
        self.change(|p, live| {
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

    fn delete(&self, words: &[String]) -> Result<Out, CliError> {
        let Some(first) = words.first() else {
            return Err(usage("Wrong number of arguments"));
        };
        if let Ok(n) = first.parse::<usize>() {
            if words.len() != 1 {
                return Err(usage("Wrong number of arguments"));
            }
            let policy = self.read_policy()?;
            let Some(rule) = n.checked_sub(1).and_then(|i| policy.rules.get(i)) else {
                return Err(usage(format!("Could not find rule '{first}'")));
            };
            let shown = observe::rule_command(rule);
            let v6 = if rule.family == Family::V6 {
                " (v6)"
            } else {
                ""
            };
            if !self.force && !self.dry_run {
                println!("Deleting:\n {shown}");
            }
            if !self.confirm("Proceed with operation") {
                return Ok(vec![]);
            }
            return self.change(|p, live| {
                if p.remove_number(n).is_none() {
                    return Err(usage(format!("Could not find rule '{first}'")));
                }
                Ok(vec![
                    if live {
                        "Rule deleted"
                    } else {
                        "Rules updated"
                    }
                    .to_string()
                        + v6,
                ])
            });
        }
        let (action, rest) = split_action(words)?;
        let parsed = parse_rule(action, rest)?;
        self.change(|p, live| {
            let mut out = Vec::new();
            for rule in parsed.rules {
                let v6 = if rule.family == Family::V6 {
                    " (v6)"
                } else {
                    ""
                };
                let msg = if !p.remove_matching(&rule) {
                    "Could not delete non-existent rule"
                } else if live {
                    "Rule deleted"
                } else {
                    "Rules updated"
                };
                out.push(format!("{msg}{v6}"));
            }
            Ok(out)
        })
    }
}
