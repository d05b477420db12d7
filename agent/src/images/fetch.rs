//! Getting an image from a peer that holds it: its tarball streamed from
//! the peer into `docker load` (never held whole in memory), the bytes
//! received shown as the pull's progress, the loaded image's id checked
//! against the one the peer announced, then tagged with the name asked.
//! Peers asked first may be waited for while one of them gets the image
//! (`first::next_step`), so that many nodes needing one new image make
//! one registry download between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::NodeId;
use mesh_protocol::image::first::{self, Next};
use mesh_protocol::image::share::verify_loaded;
use mesh_protocol::image::{ImageRef, PullProgress};
use tokio::sync::watch;
use tracing::{info, warn};

use super::peers::{Holder, ImagePeers};
use crate::runtime::ContainerRuntime;

/// Most holders tried for one image before giving up on peers.
pub const MAX_TRIES: usize = 3;

/// Brings `name` from the first holder that sends it whole and right;
/// returns that node, or why none did. With `wait`, a peer that is getting
/// the image may be waited for (`wait` is set once bytes come); without,
/// only peers that hold it now are tried.
pub async fn from_peers<R: ContainerRuntime>(
    runtime: &R,
    peers: &dyn ImagePeers,
    name: &ImageRef,
    progress: &watch::Sender<PullProgress>,
    wait: Option<&AtomicBool>,
) -> Result<NodeId, String> {
    let image = name.to_string();
    let me = peers.me();
    let started = tokio::time::Instant::now();
    let holders = loop {
        let asked = peers.ask(&image).await;
        let waited = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let held = !asked.holders.is_empty();
        let next = match wait {
            Some(_) => first::next_step(&me, &image, held, &asked.getting, waited),
            None if held => Next::Fetch,
            None => Next::Registry,
        };
        match next {
            Next::Fetch => break asked.holders,
            Next::Registry if waited == 0 => return Err("no live peer holds it".into()),
            Next::Registry => {
                return Err(format!(
                    "no peer had it after waiting {} s for one getting it",
                    waited / 1000
                ));
            }
            Next::Wait => {
                if waited == 0 {
                    let getting: Vec<&str> =
                        asked.getting.iter().map(|g| g.node.as_str()).collect();
                    info!(%image, ?getting, "waiting for a peer that is getting the image");
                }
                tokio::time::sleep(Duration::from_millis(first::POLL_MS)).await;
            }
        }
    };
    if let Some(downloading) = wait {
        downloading.store(true, Ordering::Relaxed);
    }
    let mut why = Vec::new();
    for holder in holders.iter().take(MAX_TRIES) {
        info!(image = %name, peer = %holder.node, id = %holder.image.id, "fetching from a peer");
        match from_peer(runtime, peers, holder, name, progress).await {
            Ok(()) => return Ok(holder.node.clone()),
            Err(e) => {
                warn!(image = %name, peer = %holder.node, error = %e, "fetch from a peer failed");
                why.push(format!("{}: {e}", holder.node));
            }
        }
    }
    Err(why.join("; "))
}

async fn from_peer<R: ContainerRuntime>(
    runtime: &R,
    peers: &dyn ImagePeers,
    holder: &Holder,
    name: &ImageRef,
    progress: &watch::Sender<PullProgress>,
) -> Result<(), String> {
    let (size, tar) = peers.fetch(holder).await.map_err(|e| e.to_string())?;
    let shown = |done: u64, finished: bool| PullProgress {
        layers_done: u32::from(finished),
        layers: 1,
        bytes_done: done,
        // The engine's size is of the unpacked image; the tarball may be
        // a little larger.
        bytes: size.max(done),
    };
    progress.send_replace(shown(0, false));
    let (counted, mut received) = watch::channel(0u64);
    let tar = tar
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                counted.send_modify(|n| *n += c.len() as u64);
            }
        })
        .boxed();
    let load = runtime.load(tar);
    tokio::pin!(load);
    let loaded = loop {
        tokio::select! {
            loaded = &mut load => break loaded,
            Ok(()) = received.changed() => {
                let n = *received.borrow_and_update();
                progress.send_replace(shown(n, false));
            }
        }
    };
    let loaded = loaded.map_err(|e| e.to_string())?;
    verify_loaded(&holder.image.id, &loaded).map_err(|e| e.to_string())?;
    runtime
        .tag(&holder.image.id, name)
        .await
        .map_err(|e| e.to_string())?;
    progress.send_replace(shown(*received.borrow(), true));
    Ok(())
}
