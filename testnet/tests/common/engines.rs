//! What an agent's own Docker engine holds and did (`own_docker` testnets).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use mesh_testnet::docker::Docker;

/// Whether the engine holds `image`.
pub async fn has_image(docker: &Docker, image: &str) -> Result<bool> {
    match docker
        .run(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How many image events of kind `event` (`pull`, `load`, …) the engine
/// has seen since it started.
pub async fn image_events(docker: &Docker, event: &str) -> Result<usize> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let until = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let filter = format!("event={event}");
    let events = docker
        .run(&[
            "events",
            "--since",
            "0",
            "--until",
            until.as_str(),
            "--filter",
            "type=image",
            "--filter",
            filter.as_str(),
            "--format",
            "{{.Actor.ID}}",
        ])
        .await?;
    Ok(events.lines().filter(|l| !l.trim().is_empty()).count())
}
