//! Application profiles in UFW's format: INI sections `[Name]` with `title=`,
//! `description=` and `ports=` (`|`-separated groups of `PORTS[/tcp|/udp]`, where PORTS
//! is a comma list of ports and `A:B` ranges; no protocol means TCP and UDP). Read from
//! rampart's own profile directory first, then UFW's (`/etc/ufw/applications.d`), so
//! the profiles Debian packages ship work as they are. A broken file or section is
//! reported (file and line) and skipped, never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{is_hazard, Ports, Proto};

/// UFW's directory of profiles.
pub const UFW_PROFILE_DIR: &str = "/etc/ufw/applications.d";
/// rampart's own profile directory, inside the config directory.
pub const PROFILE_SUBDIR: &str = "applications.d";
/// Longest profile name.
pub const MAX_PROFILE_NAME: usize = 64;

/// One application profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub title: String,
    pub description: String,
    /// (protocol, ports) groups; `Proto::Any` means TCP and UDP.
    pub groups: Vec<(Proto, Ports)>,
    /// The file it was read from.
    pub file: PathBuf,
}

impl Profile {
    /// The groups as UFW writes them (`80,443/tcp`, `51413`).
    pub fn group_texts(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|(proto, ports)| match proto {
                Proto::Any => ports.to_string(),
                p => format!("{ports}/{}", p.word()),
            })
            .collect()
    }
}

/// The profiles found, and what was wrong with the files that were skipped.
#[derive(Debug, Default, Clone)]
pub struct Profiles {
    pub by_name: BTreeMap<String, Profile>,
    /// `FILE:LINE: what was wrong` for each skipped section or file.
    pub problems: Vec<String>,
}

impl Profiles {
    /// Read every file of `dirs`, earlier directories first: a name already found is
    /// not replaced by a later directory's.
    pub fn load(dirs: &[PathBuf]) -> Profiles {
        let mut out = Profiles::default();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                match std::fs::read(&file) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => {
                            let (found, problems) = parse(&text, &file);
                            out.problems.extend(problems);
                            for p in found {
                                out.by_name.entry(p.name.clone()).or_insert(p);
                            }
                        }
                        Err(_) => out
                            .problems
                            .push(format!("{}: not UTF-8 text", file.display())),
                    },
                    Err(e) => out.problems.push(format!("{}: {e}", file.display())),
                }
            }
        }
        out
    }

    /// A profile by its exact name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }
}

/// Whether `name` can name a profile: not empty, at most [`MAX_PROFILE_NAME`] bytes,
/// not starting with a digit (it would read as a port), no control characters, quotes
/// or `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PROFILE_NAME
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name
            .chars()
            .any(|c| is_hazard(c) || matches!(c, '\'' | '"' | '/' | '[' | ']'))
        && name.trim() == name
}

/// A section being read: its name, the line of its header, its keys, its first problem.
type Section = (String, usize, BTreeMap<String, String>, Option<String>);

/// Parse one profile file; returns the good sections and one problem per bad one.
pub fn parse(text: &str, file: &Path) -> (Vec<Profile>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    // (name, line of the header, fields, first problem)
    let mut current: Option<Section> = None;
    let finish = |cur: Option<Section>, found: &mut Vec<Profile>, problems: &mut Vec<String>| {
        let Some((name, line, fields, problem)) = cur else {
            return;
        };
        let at = |l: usize, what: String| format!("{}:{l}: {what}", file.display());
        if let Some(p) = problem {
            problems.push(p);
            return;
        }
        let Some(ports) = fields.get("ports") else {
            problems.push(at(line, format!("profile '{name}' has no ports=")));
            return;
        };
        match parse_ports(ports) {
            Ok(groups) => found.push(Profile {
                name,
                title: fields.get("title").cloned().unwrap_or_default(),
                description: fields.get("description").cloned().unwrap_or_default(),
                groups,
                file: file.to_path_buf(),
            }),
            Err(why) => problems.push(at(line, format!("profile '{name}': {why}"))),
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |what: String| format!("{}:{n}: {what}", file.display());
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            finish(current.take(), &mut found, &mut problems);
            let problem = (!valid_name(name)).then(|| {
                at(format!(
                    "bad profile name '{}': at most {MAX_PROFILE_NAME} characters, not starting with a digit, no quotes, '/' or control characters",
                    super::inert(name)
                ))
            });
            current = Some((name.to_string(), n, BTreeMap::new(), problem));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            let p = at(format!("'{}' is not KEY=VALUE", super::inert(line)));
            match &mut current {
                Some(c) if c.3.is_none() => c.3 = Some(p),
                Some(_) => {}
                None => problems.push(p),
            }
            continue;
        };
        let Some(cur) = &mut current else {
            problems.push(at("a key before the first [profile] header".into()));
            continue;
        };
        let value = value.trim();
        if value.chars().any(is_hazard) && cur.3.is_none() {
            cur.3 = Some(at("control characters in a value".into()));
        }
        cur.2.insert(key.trim().to_lowercase(), value.to_string());
    }
    finish(current.take(), &mut found, &mut problems);
    (found, problems)
}

/// `ports=`: groups separated by `|`, each `PORTS[/tcp|/udp]`.
pub fn parse_ports(text: &str) -> Result<Vec<(Proto, Ports)>, String> {
    let mut groups = Vec::new();
    for group in text.split('|') {
        let group = group.trim();
        let (ports, proto) = match group.split_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => {
                return Err(format!(
                    "bad ports '{}': use tcp or udp",
                    super::inert(group)
                ))
            }
            None => (group, Proto::Any),
        };
        let ports: Ports = ports
            .parse()
            .map_err(|e| format!("bad ports '{}': {e}", super::inert(group)))?;
        if ports.is_multi() && proto == Proto::Any {
            return Err(format!(
                "bad ports '{group}': several ports need /tcp or /udp"
            ));
        }
        groups.push((proto, ports));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ufw_profiles_are_read_and_broken_ones_reported() {
        let text = "[OpenSSH]\ntitle=Secure shell server\ndescription=OpenSSH\nports=22/tcp\n\n\
                    [Nginx Full]\ntitle=Web Server\ndescription=x\nports=80,443/tcp\n\n\
                    [KTorrent]\ntitle=K\ndescription=K\nports=6881/tcp|4444/udp\n\n\
                    [Transmission]\nports=51413\n\n\
                    [Broken]\ntitle=b\nports=99999/tcp\n\n\
                    [NoPorts]\ntitle=n\n\n\
                    [2bad]\nports=1/tcp\n";
        let (found, problems) = parse(text, Path::new("apps"));
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["OpenSSH", "Nginx Full", "KTorrent", "Transmission"]);
        assert_eq!(found[1].group_texts(), ["80,443/tcp"]);
        assert_eq!(found[2].group_texts(), ["6881/tcp", "4444/udp"]);
        assert_eq!(found[3].groups[0].0, Proto::Any);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("apps:19: profile 'Broken'"),
            "{problems:?}"
        );
        assert!(problems[1].starts_with("apps:23: profile 'NoPorts' has no ports="));
        assert!(problems[2].starts_with("apps:26: bad profile name '2bad'"));
    }

    #[test]
    fn names_with_control_characters_are_refused() {
        assert!(valid_name("Nginx Full"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name("a\u{1b}[2J"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
