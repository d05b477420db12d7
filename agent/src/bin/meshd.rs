//! `meshd`: parses flags, sets up logging, runs the agent until SIGINT or
//! SIGTERM, and maps errors to an exit code.

use std::process::ExitCode;

use clap::Parser;
use mesh_agent::config::LogFormat;
use mesh_agent::runtime::docker::DockerRuntime;
use mesh_agent::{Args, Config};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format.unwrap_or_default());
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.cleanup {
        return cleanup(&config, args.all_nodes).await;
    }
    let (before, after) = mesh_agent::limits::raise_open_files();
    tracing::info!(?before, ?after, "open-file limit");
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    match mesh_agent::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines on stdout, filtered by `MESH_LOG` (default `info`): text,
/// coloured only on a terminal (a file or a pipe gets no escape codes), or
/// one JSON object per line.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

async fn cleanup(config: &Config, all_nodes: bool) -> ExitCode {
    let result = match DockerRuntime::from_env() {
        Ok(rt) => {
            let this = (&config.node_id, config.mesh.cluster_id.as_str());
            mesh_agent::agent::cleanup(&rt, (!all_nodes).then_some(this)).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => {
            println!("removed {n} container(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshd: cleanup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signals(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down; running task containers are left to be adopted on restart");
    shutdown.cancel();
}
