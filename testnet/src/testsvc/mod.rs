//! `mesh-testsvc`, a stand-in for a user's service: servers (`echo`, `http`,
//! `sink`, `source`), programs that sleep, exit, crash, print, burn CPU or
//! count runs on a shared volume or report to a witness, and `slow-start` in front of any of them.
//!
//! Standard library only: `scripts/images` links it fully static into a
//! FROM-scratch image, and binding takes numeric addresses so it never needs
//! DNS. Keep it that way (no dependencies here, no host-name lookups).

pub mod args;
pub mod fnv;
pub mod host;
pub mod output;
pub mod pattern;
pub mod witness;

mod conn;
mod error;
mod http;
mod programs;
mod server;
mod streams;

use std::io;
use std::thread;

pub use error::TestsvcError;
pub use server::{LogFn, bind, serve};

use args::{Command, Mode};
use host::Identity;

/// Exit code of `crash`.
pub const CRASH_EXIT_CODE: u8 = 3;

/// Runs `command` and returns the process exit code. Server modes never
/// return unless the port cannot be bound.
pub fn run(command: &Command, identity: &Identity) -> Result<u8, TestsvcError> {
    run_mode(&command.mode, command.port, identity)
}

fn run_mode(mode: &Mode, port: u16, identity: &Identity) -> Result<u8, TestsvcError> {
    match mode {
        Mode::Serve(server_mode) => {
            let listener = bind(port)?;
            let addr = listener
                .local_addr()
                .map_or_else(|_| format!("port {port}"), |a| a.to_string());
            output::out(format_args!("{} listening on {addr}", server_mode.name()));
            serve(&listener, *server_mode, &identity.hostname, output::out)
        }
        Mode::Sleep(duration) => {
            // Output failures (closed stdout) must not change the exit code.
            let _ = programs::sleep(*duration, &mut io::stdout());
            Ok(0)
        }
        Mode::Exit(code) => {
            output::out(format_args!("exiting with {code}"));
            Ok(*code)
        }
        Mode::Crash => {
            output::err(format_args!("crashing on start"));
            Ok(CRASH_EXIT_CODE)
        }
        Mode::Print(count) => {
            let _ = programs::print_lines(
                *count,
                programs::PRINT_PAUSE,
                &mut io::stdout(),
                &mut io::stderr(),
            );
            Ok(0)
        }
        Mode::Burn(duration) => {
            programs::burn(*duration);
            Ok(0)
        }
        Mode::Count(path) => {
            programs::append_line(path, &identity.count_line()).map_err(|source| {
                TestsvcError::AppendCount {
                    path: path.clone(),
                    source,
                }
            })?;
            Ok(0)
        }
        Mode::Witness {
            addr,
            work,
            fail_attempts,
        } => {
            let run = witness::Run {
                task_id: &identity.task_id,
                attempt: &identity.task_attempt,
                hostname: &identity.hostname,
                node: &identity.node,
                cpus: &identity.cpus,
            };
            Ok(witness::witness(*addr, *work, *fail_attempts, &run))
        }
        Mode::SlowStart { delay, then } => {
            output::out(format_args!("slow-start: waiting {}s", delay.as_secs_f64()));
            thread::sleep(*delay);
            run_mode(then, port, identity)
        }
    }
}
