//! `rampart-pkg-assets DIR`: write rampart's man page (`rampart.8`, with an EXAMPLES
//! section gathered from every command's help) and its bash, zsh and fish
//! completions into DIR, from the same clap definition the program parses with.

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

/// The example lines of a command's after-help text.
fn examples(cmd: &clap::Command) -> Vec<String> {
    cmd.get_after_help()
        .map(|t| rampart::cli::help_examples(&t.to_string()))
        .unwrap_or_default()
}

/// Escape a line for roff: backslashes, and a leading dot or quote.
fn roff(line: &str) -> String {
    let l = line.replace('\\', "\\e").replace('-', "\\-");
    if l.starts_with('.') || l.starts_with('\'') {
        format!("\\&{l}")
    } else {
        l
    }
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/pkg".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut cmd = rampart::cli::Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    writeln!(page, ".SH EXAMPLES")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let ex = examples(sub);
        if ex.is_empty() {
            continue;
        }
        writeln!(page, ".TP\n\\fB{}\\fR", sub.get_name())?;
        writeln!(page, ".nf")?;
        for e in ex {
            writeln!(page, "{}", roff(&e))?;
        }
        writeln!(page, ".fi")?;
    }
    writeln!(page, ".SH FILES")?;
    writeln!(
        page,
        ".TP\n/etc/rampart/policy.toml\nthe policy\n.TP\n/etc/rampart/applications.d\nrampart's application profiles (then /etc/ufw/applications.d)\n.TP\n/etc/rampart/before.nft, /etc/rampart/after.nft\ncustom rules, in nft's language"
    )?;
    man.render_version_section(&mut page)?;
    std::fs::write(dir.join("rampart.8"), page)?;
    for (shell, name) in [
        (Shell::Bash, "rampart.bash"),
        (Shell::Zsh, "_rampart"),
        (Shell::Fish, "rampart.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, "rampart", &mut out);
        std::fs::write(dir.join(name), out)?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}
