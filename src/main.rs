use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use rampart::cli::{exit, run, Cli};
use rampart::model::inert;

// A compile at 10k rules makes tens of thousands of small allocations in a process
// that lives for milliseconds: mimalloc serves them with fewer page faults than glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rampart::backend::mark_process_start();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(exit::USAGE);
            }
            // One line: clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("ERROR: {} (see 'rampart --help')", inert(first));
            return ExitCode::from(exit::USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A plain refusal has said `Aborted` already.
            let text = e.to_string();
            if !text.is_empty() {
                eprintln!("ERROR: {}", inert(&text));
            }
            ExitCode::from(e.exit_code())
        }
    }
}
