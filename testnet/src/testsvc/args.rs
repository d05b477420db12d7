//! Command line of `mesh-testsvc`: parsed once into a [`Command`] that can only
//! hold valid modes.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Port the servers bind when `--port` is not given.
pub const DEFAULT_PORT: u16 = 8080;

/// Printed on `--help` (stdout) and on bad arguments (stderr).
pub const USAGE: &str = "\
usage: mesh-testsvc MODE [ARGS] [--port P]

Servers (bind 0.0.0.0:P, default port 8080, one thread per connection):
  echo                     echo every byte back; keeps half-close
  http                     answer every HTTP/1.1 request with 200 `hello from HOSTNAME`
  sink                     discard input; on EOF reply `<bytes> <fnv1a64 hex>` and close
  source N                 write N pattern bytes (byte i = (i*31+7)%251) and close
  slow-start SECONDS [MODE [ARGS]]
                           wait SECONDS, then run MODE (default echo)

Programs:
  sleep SECONDS            print `sleeping SECONDS`, sleep, print `done`, exit 0
  exit N                   print `exiting with N` and exit with code N (0-255)
  crash                    print `crashing on start` to stderr and exit 3
  print N                  print N lines alternately to stdout (`out i`) and stderr (`err i`)
  burn SECONDS             spin one CPU for SECONDS, exit 0
  count FILE               append `HOSTNAME $MESH_TASK_ID $MESH_TASK_INDEX` to FILE, exit 0
  witness IP:PORT SECONDS [FAIL_ATTEMPTS]
                           connect to a witness, send `start $MESH_TASK_ID $MESH_TASK_ATTEMPT
                           HOSTNAME`, keep the connection open for SECONDS, send `end ID ATTEMPT
                           CODE` and exit CODE: 1 while the attempt is at most FAIL_ATTEMPTS
                           (default 0), else 0; 4 if the witness cannot be reached

SECONDS may be fractional (0.5).";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// `-h`, `--help` or `help`: print [`USAGE`] and exit 0.
    Help,
    /// Run a mode.
    Run(Command),
}

/// A mode and the port servers bind.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub port: u16,
    pub mode: Mode,
}

/// One behaviour of the test service.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Bind the port and serve connections.
    Serve(ServerMode),
    /// Sleep, then exit 0.
    Sleep(Duration),
    /// Exit with this code.
    Exit(u8),
    /// Exit 3 at once, like a service that crashes on start.
    Crash,
    /// Print this many lines, alternating between stdout and stderr.
    Print(u64),
    /// Spin one CPU for this long.
    Burn(Duration),
    /// Append one identifying line to this file.
    Count(PathBuf),
    /// Tell a witness when the work starts and ends (see
    /// [`crate::testsvc::witness`]).
    Witness {
        addr: SocketAddr,
        work: Duration,
        fail_attempts: u32,
    },
    /// Wait, then run the inner mode (which may itself be any mode).
    SlowStart { delay: Duration, then: Box<Mode> },
}

/// How a server answers each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    Echo,
    Http,
    Sink,
    /// Write this many pattern bytes, then close.
    Source(u64),
}

impl ServerMode {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Http => "http",
            Self::Sink => "sink",
            Self::Source(_) => "source",
        }
    }
}

/// Why the command line was rejected. The binary prints it with [`USAGE`] and
/// exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgsError {
    MissingMode,
    UnknownMode(String),
    MissingValue { what: &'static str },
    BadValue { what: &'static str, value: String },
    UnexpectedArgument(String),
    NotUtf8,
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingMode => write!(f, "no MODE given"),
            Self::UnknownMode(mode) => write!(f, "unknown mode `{mode}`"),
            Self::MissingValue { what } => write!(f, "missing {what}"),
            Self::BadValue { what, value } => write!(f, "`{value}` is not a valid {what}"),
            Self::UnexpectedArgument(arg) => write!(f, "unexpected argument `{arg}`"),
            Self::NotUtf8 => write!(f, "an argument is not valid UTF-8"),
        }
    }
}

impl std::error::Error for ArgsError {}

/// Parses the arguments after the program name.
///
/// `--port P` (or `--port=P`) may appear anywhere; everything else is the mode
/// and its arguments, in order.
pub fn parse<I, S>(args: I) -> Result<Parsed, ArgsError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut port = DEFAULT_PORT;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.as_ref().to_str().ok_or(ArgsError::NotUtf8)?;
        match arg {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--port" => {
                let value = args.next().ok_or(ArgsError::MissingValue {
                    what: "port after --port",
                })?;
                port = parse_port(value.as_ref().to_str().ok_or(ArgsError::NotUtf8)?)?;
            }
            _ => match arg.strip_prefix("--port=") {
                Some(value) => port = parse_port(value)?,
                None => positional.push(arg.to_owned()),
            },
        }
    }
    if positional.first().map(String::as_str) == Some("help") {
        return Ok(Parsed::Help);
    }
    let mut words = positional.iter().map(String::as_str);
    let mode = parse_mode(&mut words)?.ok_or(ArgsError::MissingMode)?;
    if let Some(extra) = words.next() {
        return Err(ArgsError::UnexpectedArgument(extra.to_owned()));
    }
    Ok(Parsed::Run(Command { port, mode }))
}

/// Parses one mode and its arguments from `words`; `None` if there are no words.
fn parse_mode<'a>(words: &mut impl Iterator<Item = &'a str>) -> Result<Option<Mode>, ArgsError> {
    let Some(name) = words.next() else {
        return Ok(None);
    };
    let mode = match name {
        "echo" => Mode::Serve(ServerMode::Echo),
        "http" => Mode::Serve(ServerMode::Http),
        "sink" => Mode::Serve(ServerMode::Sink),
        "source" => Mode::Serve(ServerMode::Source(parse_count(
            words.next(),
            "byte count N",
        )?)),
        "sleep" => Mode::Sleep(parse_seconds(words.next())?),
        "exit" => Mode::Exit(parse_exit_code(words.next())?),
        "crash" => Mode::Crash,
        "print" => Mode::Print(parse_count(words.next(), "line count N")?),
        "burn" => Mode::Burn(parse_seconds(words.next())?),
        "count" => {
            let file = words
                .next()
                .ok_or(ArgsError::MissingValue { what: "FILE" })?;
            Mode::Count(PathBuf::from(file))
        }
        "witness" => {
            let addr = words.next().ok_or(ArgsError::MissingValue {
                what: "witness IP:PORT",
            })?;
            let addr = addr.parse().map_err(|_| ArgsError::BadValue {
                what: "witness IP:PORT",
                value: addr.to_owned(),
            })?;
            let work = parse_seconds(words.next())?;
            let fail_attempts = match words.next() {
                Some(n) => n.parse().map_err(|_| ArgsError::BadValue {
                    what: "FAIL_ATTEMPTS",
                    value: n.to_owned(),
                })?,
                None => 0,
            };
            Mode::Witness {
                addr,
                work,
                fail_attempts,
            }
        }
        "slow-start" => {
            let delay = parse_seconds(words.next())?;
            let then = parse_mode(words)?.unwrap_or(Mode::Serve(ServerMode::Echo));
            Mode::SlowStart {
                delay,
                then: Box::new(then),
            }
        }
        other => return Err(ArgsError::UnknownMode(other.to_owned())),
    };
    Ok(Some(mode))
}

fn parse_port(value: &str) -> Result<u16, ArgsError> {
    value.parse().map_err(|_| ArgsError::BadValue {
        what: "port (0-65535)",
        value: value.to_owned(),
    })
}

fn parse_count(value: Option<&str>, what: &'static str) -> Result<u64, ArgsError> {
    let value = value.ok_or(ArgsError::MissingValue { what })?;
    value.parse().map_err(|_| ArgsError::BadValue {
        what,
        value: value.to_owned(),
    })
}

fn parse_exit_code(value: Option<&str>) -> Result<u8, ArgsError> {
    const WHAT: &str = "exit code N (0-255)";
    let value = value.ok_or(ArgsError::MissingValue { what: WHAT })?;
    value.parse().map_err(|_| ArgsError::BadValue {
        what: WHAT,
        value: value.to_owned(),
    })
}

/// Parses non-negative, finite, possibly fractional seconds.
fn parse_seconds(value: Option<&str>) -> Result<Duration, ArgsError> {
    const WHAT: &str = "number of SECONDS";
    let value = value.ok_or(ArgsError::MissingValue { what: WHAT })?;
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| ArgsError::BadValue {
            what: WHAT,
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Command {
        match parse(args) {
            Ok(Parsed::Run(command)) => command,
            other => panic!("{args:?} parsed to {other:?}"),
        }
    }

    fn mode(args: &[&str]) -> Mode {
        run(args).mode
    }

    #[test]
    fn server_modes_use_default_port() {
        assert_eq!(
            run(&["echo"]),
            Command {
                port: DEFAULT_PORT,
                mode: Mode::Serve(ServerMode::Echo)
            }
        );
        assert_eq!(mode(&["http"]), Mode::Serve(ServerMode::Http));
        assert_eq!(mode(&["sink"]), Mode::Serve(ServerMode::Sink));
        assert_eq!(
            mode(&["source", "1000"]),
            Mode::Serve(ServerMode::Source(1000))
        );
    }

    #[test]
    fn port_can_appear_anywhere() {
        assert_eq!(run(&["--port", "9000", "echo"]).port, 9000);
        assert_eq!(
            run(&["source", "5", "--port", "0"]),
            Command {
                port: 0,
                mode: Mode::Serve(ServerMode::Source(5))
            }
        );
        assert_eq!(run(&["http", "--port=81"]).port, 81);
    }

    #[test]
    fn programs_parse_their_values() {
        assert_eq!(mode(&["sleep", "1"]), Mode::Sleep(Duration::from_secs(1)));
        assert_eq!(
            mode(&["sleep", "0.25"]),
            Mode::Sleep(Duration::from_millis(250))
        );
        assert_eq!(mode(&["exit", "4"]), Mode::Exit(4));
        assert_eq!(mode(&["exit", "255"]), Mode::Exit(255));
        assert_eq!(mode(&["crash"]), Mode::Crash);
        assert_eq!(mode(&["print", "3"]), Mode::Print(3));
        assert_eq!(
            mode(&["burn", "1.5"]),
            Mode::Burn(Duration::from_millis(1500))
        );
        assert_eq!(
            mode(&["count", "/data/c"]),
            Mode::Count(PathBuf::from("/data/c"))
        );
    }

    #[test]
    fn slow_start_defaults_to_echo_and_takes_any_mode() {
        assert_eq!(
            mode(&["slow-start", "2"]),
            Mode::SlowStart {
                delay: Duration::from_secs(2),
                then: Box::new(Mode::Serve(ServerMode::Echo)),
            }
        );
        assert_eq!(
            mode(&["slow-start", "0.5", "source", "7", "--port", "1"]),
            Mode::SlowStart {
                delay: Duration::from_millis(500),
                then: Box::new(Mode::Serve(ServerMode::Source(7))),
            }
        );
        assert_eq!(
            mode(&["slow-start", "1", "exit", "9"]),
            Mode::SlowStart {
                delay: Duration::from_secs(1),
                then: Box::new(Mode::Exit(9)),
            }
        );
    }

    #[test]
    fn witness_takes_an_address_the_work_and_failing_attempts() {
        assert_eq!(
            mode(&["witness", "10.1.0.1:9000", "2.5"]),
            Mode::Witness {
                addr: "10.1.0.1:9000".parse().unwrap(),
                work: Duration::from_millis(2500),
                fail_attempts: 0,
            }
        );
        assert_eq!(
            mode(&["witness", "10.1.0.1:9000", "1", "2"]),
            Mode::Witness {
                addr: "10.1.0.1:9000".parse().unwrap(),
                work: Duration::from_secs(1),
                fail_attempts: 2,
            }
        );
        for args in [&["witness"][..], &["witness", "10.1.0.1:9000"][..]] {
            assert!(
                matches!(parse(args), Err(ArgsError::MissingValue { .. })),
                "{args:?}"
            );
        }
        for args in [
            &["witness", "mesh:9000", "1"][..],
            &["witness", "10.1.0.1:9000", "1", "-1"][..],
        ] {
            assert!(
                matches!(parse(args), Err(ArgsError::BadValue { .. })),
                "{args:?}"
            );
        }
    }

    #[test]
    fn help_is_not_an_error() {
        assert_eq!(parse(["--help"]), Ok(Parsed::Help));
        assert_eq!(parse(["echo", "-h"]), Ok(Parsed::Help));
        assert_eq!(parse(["help"]), Ok(Parsed::Help));
    }

    #[test]
    fn bad_arguments_are_rejected() {
        let empty: [&str; 0] = [];
        assert_eq!(parse(empty), Err(ArgsError::MissingMode));
        assert_eq!(parse(["--port", "1"]), Err(ArgsError::MissingMode));
        assert_eq!(parse(["fly"]), Err(ArgsError::UnknownMode("fly".into())));
        for args in [
            &["echo", "--port"][..],
            &["source"][..],
            &["burn"][..],
            &["count"][..],
        ] {
            assert!(
                matches!(parse(args), Err(ArgsError::MissingValue { .. })),
                "{args:?}"
            );
        }
        for args in [
            &["echo", "--port", "70000"][..],
            &["source", "-1"][..],
            &["exit", "256"][..],
            &["sleep", "-1"][..],
            &["sleep", "NaN"][..],
            &["sleep", "inf"][..],
        ] {
            assert!(
                matches!(parse(args), Err(ArgsError::BadValue { .. })),
                "{args:?}"
            );
        }
        assert!(matches!(
            parse(["slow-start", "1", "fly"]),
            Err(ArgsError::UnknownMode(_))
        ));
        assert_eq!(
            parse(["echo", "extra"]),
            Err(ArgsError::UnexpectedArgument("extra".into()))
        );
        assert_eq!(
            parse(["crash", "now"]),
            Err(ArgsError::UnexpectedArgument("now".into()))
        );
    }

    #[test]
    fn non_utf8_argument_is_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let bad = OsStr::from_bytes(b"\xff");
        assert_eq!(parse([OsStr::new("count"), bad]), Err(ArgsError::NotUtf8));
    }
}
