//! The `meshctl` binary: parse, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = meshctl::Cli::parse();
    match meshctl::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            // Nothing better to do if stderr is gone too.
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}
