//! `mesh-testsvc MODE [ARGS] [--port P]`: the test service packed into the
//! `mesh-testsvc:latest` image. See [`mesh_testnet::testsvc`] for the modes.

use std::process::ExitCode;

use mesh_testnet::testsvc::args::{self, Parsed};
use mesh_testnet::testsvc::host::Identity;
use mesh_testnet::testsvc::{self, output};

/// Exit code for bad arguments.
const USAGE_EXIT_CODE: u8 = 2;

fn main() -> ExitCode {
    let command = match args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(command)) => command,
        Ok(Parsed::Help) => {
            output::out(format_args!("{}", args::USAGE));
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            output::err(format_args!("mesh-testsvc: {err}\n\n{}", args::USAGE));
            return ExitCode::from(USAGE_EXIT_CODE);
        }
    };
    match testsvc::run(&command, &Identity::from_environment()) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            output::err(format_args!("mesh-testsvc: {err}"));
            ExitCode::FAILURE
        }
    }
}
