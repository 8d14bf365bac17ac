//! `app list|info|update`: UFW's application profiles.

use crate::apply::Mode;
use crate::grammar::profiles;
use crate::model::profiles::Profile;
use crate::model::{inert, NewProfiles, Ports, Proto};

use super::{usage, CliError, Ctx, Out};

/// Report the profile files that were skipped (file and line), once per command.
fn warn_problems() {
    for p in &profiles().problems {
        eprintln!("WARN: skipped a profile: {p}");
    }
}

fn find(name: &str) -> Result<&'static Profile, CliError> {
    profiles().get(name).ok_or_else(|| {
        usage(format!(
            "Could not find a profile matching '{}'",
            inert(name)
        ))
    })
}

/// UFW's `app info` text of one profile.
fn info(p: &Profile) -> Vec<String> {
    let ports = p.group_texts();
    let mut out = vec![
        format!("Profile: {}", p.name),
        format!("Title: {}", p.title),
        format!("Description: {}", p.description),
        String::new(),
        // As UFW: `Ports:` for more than one entry or a list (`80,443/tcp`).
        if ports.len() > 1 || ports.first().is_some_and(|g| g.contains(',')) {
            "Ports:"
        } else {
            "Port:"
        }
        .to_string(),
    ];
    out.extend(ports.iter().map(|g| format!("  {g}")));
    out
}

impl Ctx<'_> {
    pub(super) fn app(&self, words: &[String]) -> Result<Out, CliError> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["list"] => {
                warn_problems();
                let mut out = vec!["Available applications:".to_string()];
                out.extend(profiles().by_name.keys().map(|n| format!("  {n}")));
                Ok(out)
            }
            ["info", "all"] => {
                warn_problems();
                let mut out = Vec::new();
                for (i, p) in profiles().by_name.values().enumerate() {
                    if i > 0 {
                        out.push(String::new());
                        out.push("--".into());
                        out.push(String::new());
                    }
                    out.extend(info(p));
                }
                Ok(out)
            }
            ["info", name] => {
                warn_problems();
                Ok(info(find(name)?))
            }
            ["update", name] => self.app_update(name),
            ["update", "--add-new", name] => self.app_add_new(name),
            ["default", word] => self.app_default(word),
            _ => Err(usage(
                "use 'app list', 'app info NAME|all', 'app update [--add-new] NAME' or 'app default allow|deny|reject|skip'",
            )),
        }
    }

    /// `app default allow|deny|reject|skip`: what `app update --add-new` adds.
    fn app_default(&self, word: &str) -> Result<Out, CliError> {
        let policy = match word {
            "allow" => NewProfiles::Allow,
            "deny" => NewProfiles::Deny,
            "reject" => NewProfiles::Reject,
            "skip" => NewProfiles::Skip,
            other => {
                return Err(usage(format!(
                    "Unsupported policy '{}': use allow, deny, reject or skip",
                    inert(other)
                )))
            }
        };
        self.change(Mode::Auto, |p, _| {
            p.new_profiles = policy;
            Ok(Vec::new())
        })?;
        Ok(vec![format!(
            "Default application policy changed to '{}'",
            policy.word()
        )])
    }

    /// `app update --add-new NAME`: the profile's rules follow it, and a profile that no
    /// rule names gets a rule of the `app default` action (none for skip).
    fn app_add_new(&self, name: &str) -> Result<Out, CliError> {
        let profile = find(name)?;
        let fw = self.open_read()?;
        let named = fw.policy().rules.iter().any(|r| r.names_app(name));
        let action = fw.policy().new_profiles.action();
        drop(fw);
        if named {
            return self.app_update(name);
        }
        let Some(action) = action else {
            return Ok(vec![format!(
                "Skipped adding rules for profile '{}' (default application policy: skip)",
                profile.name
            )]);
        };
        let words = vec![profile.name.clone()];
        self.add(action, &words)
    }

    /// `app update NAME`: the rules naming the profile take its ports again.
    fn app_update(&self, name: &str) -> Result<Out, CliError> {
        warn_problems();
        let profile = find(name)?;
        let (mut live, mut found) = (false, false);
        self.change(Mode::Auto, |p, enabled| {
            live = enabled;
            let mut rules = Vec::with_capacity(p.rules.len());
            let mut done: Vec<crate::model::Rule> = Vec::new();
            for rule in p.rules.drain(..) {
                if !rule.names_app(name) {
                    rules.push(rule);
                    continue;
                }
                // One rule per group of the profile's ports, where the first group's was.
                let mut key = rule.clone();
                for end in [&mut key.from, &mut key.to] {
                    end.ports = None;
                }
                key.proto = Proto::Any;
                if done.contains(&key) {
                    continue;
                }
                done.push(key);
                for (proto, ports) in &profile.groups {
                    let mut r = rule.clone();
                    r.proto = *proto;
                    let set = |e: &mut crate::model::Endpoint, ports: &Ports| {
                        if e.app.as_deref() == Some(name) {
                            e.ports = Some(ports.clone());
                        }
                    };
                    set(&mut r.from, ports);
                    set(&mut r.to, ports);
                    rules.push(r);
                }
            }
            p.rules = rules;
            // Each rule naming the profile left its key in `done`.
            found = !done.is_empty();
            Ok(Vec::new())
        })?;
        // As UFW: nothing to say when no rule names the profile, and the reload said
        // when the firewall is active (the change is in the kernel).
        if !found {
            return Ok(Vec::new());
        }
        let mut out = vec![format!("Rules updated for profile '{}'", profile.name)];
        if live {
            out.push("Firewall reloaded".into());
        }
        Ok(out)
    }
}
