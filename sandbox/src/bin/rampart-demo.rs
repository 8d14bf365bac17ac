//! `rampart-demo [RAMPART]`: the demo, with the rampart binary given or the one beside
//! this program.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let bin = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name("rampart"),
            Err(e) => {
                eprintln!("ERROR: cannot find the rampart binary: {e}");
                return ExitCode::from(1);
            }
        },
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
