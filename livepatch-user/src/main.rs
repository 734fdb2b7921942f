use std::process::ExitCode;

use livepatch_user::{commands, exit_code, memory};

fn main() -> ExitCode {
    memory::return_freed_memory_promptly();
    let cli = match commands::parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // One line naming the cause: the chain, not a backtrace.
            commands::output::note(&format!("{error:#}"));
            exit_code::ERROR.into()
        }
    }
}
