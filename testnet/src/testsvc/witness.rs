//! `witness`: a batch task that tells a witness server, over one TCP
//! connection, when its work starts and when it ends. The connection stays
//! open for the whole work, so a witness sees the work's interval even when
//! the container is killed before it can say `end`: the connection closes
//! with it. The chaos run (`mesh_testnet::chaos`) counts what containers did
//! from these lines, not from what the agents say.
//!
//! Lines: `start TASK_ID ATTEMPT HOSTNAME NODE CPUS`, then `end TASK_ID
//! ATTEMPT CODE`. An empty field is sent as `-`.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

/// How long connecting to the witness may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Exit code when the witness cannot be told (the work did not count).
pub const UNWITNESSED_EXIT_CODE: u8 = 4;

/// What one run reports: the task's id and attempt, the node and the cores
/// (`MESH_CPUS`) from the agent's environment, and the container's
/// hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run<'a> {
    pub task_id: &'a str,
    pub attempt: &'a str,
    pub hostname: &'a str,
    pub node: &'a str,
    pub cpus: &'a str,
}

/// A field as one word: `-` when empty.
fn word(field: &str) -> &str {
    if field.is_empty() { "-" } else { field }
}

/// The exit code of a run: 1 (a planned failure) while `attempt` is at most
/// `fail_attempts`, else 0. An attempt that is not a number counts as the
/// first.
pub fn planned_code(attempt: &str, fail_attempts: u32) -> u8 {
    let attempt: u32 = attempt.parse().unwrap_or(1);
    u8::from(attempt <= fail_attempts)
}

/// The `start` line.
pub fn start_line(run: &Run<'_>) -> String {
    format!(
        "start {} {} {} {} {}\n",
        word(run.task_id),
        word(run.attempt),
        word(run.hostname),
        word(run.node),
        word(run.cpus)
    )
}

/// The `end` line.
pub fn end_line(run: &Run<'_>, code: u8) -> String {
    format!("end {} {} {code}\n", word(run.task_id), word(run.attempt))
}

/// Connects to the witness at `addr`, says `start`, works for `work`, says
/// `end` and returns the exit code ([`UNWITNESSED_EXIT_CODE`] if the witness
/// could not be told either line).
pub fn witness(addr: SocketAddr, work: Duration, fail_attempts: u32, run: &Run<'_>) -> u8 {
    match report(addr, work, fail_attempts, run) {
        Ok(code) => code,
        Err(e) => {
            crate::testsvc::output::err(format_args!("witness {addr}: {e}"));
            UNWITNESSED_EXIT_CODE
        }
    }
}

fn report(addr: SocketAddr, work: Duration, fail_attempts: u32, run: &Run<'_>) -> io::Result<u8> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.write_all(start_line(run).as_bytes())?;
    crate::testsvc::output::out(format_args!("working {}s", work.as_secs_f64()));
    thread::sleep(work);
    let code = planned_code(run.attempt, fail_attempts);
    stream.write_all(end_line(run, code).as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use super::*;

    const RUN: Run<'static> = Run {
        task_id: "t-1",
        attempt: "2",
        hostname: "box",
        node: "n2",
        cpus: "2,3",
    };

    #[test]
    fn attempts_up_to_the_planned_failures_fail() {
        assert_eq!(planned_code("1", 0), 0);
        assert_eq!(planned_code("1", 1), 1);
        assert_eq!(planned_code("2", 1), 0);
        assert_eq!(planned_code("", 1), 1);
    }

    #[test]
    fn empty_fields_are_dashes() {
        let run = Run {
            node: "",
            cpus: "",
            ..RUN
        };
        assert_eq!(start_line(&run), "start t-1 2 box - -\n");
    }

    #[test]
    fn the_witness_hears_start_then_end_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = thread::spawn(move || witness(addr, Duration::from_millis(20), 1, &RUN));
        let (conn, _) = listener.accept().unwrap();
        let lines: Vec<String> = BufReader::new(conn).lines().map(Result::unwrap).collect();
        assert_eq!(lines, ["start t-1 2 box n2 2,3", "end t-1 2 0"]);
        assert_eq!(worker.join().unwrap(), 0);
    }

    #[test]
    fn no_witness_is_a_failure_of_its_own() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is gone: nothing accepts there now.
        assert_eq!(
            witness(addr, Duration::ZERO, 0, &RUN),
            UNWITNESSED_EXIT_CODE
        );
    }
}
