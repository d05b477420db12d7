//! Reaching into an agent's data dir from the host: its audit log, and
//! filling its (small) disk.

use super::*;

/// Where `file` in `node`'s data directory is seen from the host: through
/// the agent's root (`/proc/PID/root`), as the agent's image has no shell
/// and a small disk is a tmpfs. None: the agent is not running.
pub(super) async fn in_data_dir(
    net: &Testnet,
    node: &str,
    file: &str,
) -> Result<Option<std::path::PathBuf>, TestnetError> {
    let container = net.state().node(node)?.container.clone();
    let pid = net
        .docker
        .run(&["inspect", "--format", "{{.State.Pid}}", &container])
        .await?;
    let pid = pid.trim();
    if pid.is_empty() || pid == "0" {
        return Ok(None);
    }
    Ok(Some(std::path::PathBuf::from(format!(
        "/proc/{pid}/root{}/{file}",
        crate::agent::DATA_MOUNT
    ))))
}

/// `node`'s core audit log (empty if it has none or is not running).
pub(super) async fn read_audit_log(net: &Testnet, node: &str) -> Result<String, TestnetError> {
    let Some(path) = in_data_dir(net, node, AUDIT_LOG).await? else {
        return Ok(String::new());
    };
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(TestnetError::Task(format!(
            "cannot read {node}'s audit log {}: {e}",
            path.display()
        ))),
    }
}

/// Fills (`full`) or frees `node`'s small data disk: writes zeros to a
/// file in it until the tmpfs is full, or removes the file. `Ok(false)`:
/// the agent was not running.
pub(super) async fn fill_disk(net: &Testnet, node: &str, full: bool) -> Result<bool, TestnetError> {
    let Some(path) = in_data_dir(net, node, FILL_FILE).await? else {
        return Ok(false);
    };
    let done = tokio::task::spawn_blocking(move || {
        if full {
            fill(&path)
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    })
    .await
    .map_err(|e| TestnetError::Task(e.to_string()))?;
    match done {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!(node, error = %e, "chaos: cannot fill or free the data disk");
            Ok(false)
        }
    }
}

/// Writes zeros to `path` until the disk says it is full.
pub(super) fn fill(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => return Ok(()), // ENOSPC
            Err(e) => return Err(e),
        }
    }
}
