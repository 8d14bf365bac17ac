//! `rampart-demo [RAMPART]`: the demo, with the rampart binary given or the one beside
//! this program.

use std::process::ExitCode;

fn main() -> ExitCode {
    let bin = match rampart_sandbox::rampart_bin() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("ERROR: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(why) = rampart_sandbox::kernel_unavailable() {
        eprintln!("ERROR: the demo cannot run: {why}");
        return ExitCode::from(1);
    }
    match rampart_sandbox::demo::run(&bin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: demo failed: {e:#}");
            ExitCode::from(1)
        }
    }
}
