//! The serving side of images shared between peers: answers `HasImage`
//! calls (held here, being got here, or neither) and streams `docker save` of an image a peer asks for by id. Only
//! peers whose certificate names a node may ask; only an existing image,
//! named by its full id, is ever exported; at most [`MAX_EXPORTS`] exports
//! run at once (a peer past that is told to go elsewhere).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mesh_protocol::image::ImageRef;
use mesh_protocol::image::share::is_image_id;
use mesh_protocol::rpc::{
    ErrorKind, ImageAsk, ImageReply, MAX_IMAGE_NAME, RemoteError, Request, Response, Topic,
};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Pulls;
use crate::mesh::Mesh;
use crate::mesh::handlers::{Caller, Reply};
use crate::mesh::rpc::{read_frame, write_frame};
use crate::runtime::ContainerRuntime;

/// Most exports this node runs at once: each reads the engine's disk and
/// fills the uplink, and tasks run here too.
pub const MAX_EXPORTS: usize = 2;
/// How long a peer may take to say which image it wants.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an export may stall (Docker not producing, or the peer not
/// reading) before it is abandoned.
const STALL: Duration = Duration::from_secs(60);

/// Registers this node's answers to `HasImage` (from its engine and its
/// `pulls` under way) and its image streams.
pub fn register<R: ContainerRuntime>(mesh: &Mesh, pulls: Pulls<R>) {
    let runtime = pulls.runtime();
    mesh.handle_calls(
        Topic::Images,
        Arc::new(move |caller, request| {
            let pulls = pulls.clone();
            Box::pin(async move {
                let getting = |image: &str| pulls.getting(image);
                Reply::One(has_image(&*pulls.runtime(), &getting, caller, request).await)
            })
        }),
    );
    let exports = Arc::new(Semaphore::new(MAX_EXPORTS));
    mesh.handle_images(Arc::new(move |caller, send, recv| {
        Box::pin(send_image(
            runtime.clone(),
            exports.clone(),
            caller,
            send,
            recv,
        ))
    }));
}

/// Answers `HasImage`: the image's id and size if held here, else whether
/// it is being got here (`getting`, by the name as [`ImageRef`] prints it).
pub async fn has_image<R: ContainerRuntime>(
    rt: &R,
    getting: &(dyn Fn(&str) -> Option<bool> + Sync),
    caller: Caller,
    request: Request,
) -> Response {
    let Request::HasImage(name) = request else {
        return failed(ErrorKind::Invalid, "not an image call");
    };
    if caller.is_none() {
        return failed(
            ErrorKind::Unauthenticated,
            "images are shared with mesh members only",
        );
    }
    if name.len() > MAX_IMAGE_NAME || !(is_image_id(&name) || ImageRef::parse(&name).is_ok()) {
        return failed(ErrorKind::Invalid, "not an image name or id");
    }
    match rt.image_id(&name).await {
        Ok(None) => {
            let pulling = ImageRef::parse(&name)
                .ok()
                .and_then(|r| getting(&r.to_string()));
            match pulling {
                Some(downloading) => Response::ImagePulling { downloading },
                None => Response::HasImage(None),
            }
        }
        Ok(held) => Response::HasImage(held),
        Err(e) => failed(ErrorKind::Unavailable, e.to_string()),
    }
}

fn failed(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Failed(RemoteError::new(kind, message))
}

/// Serves one image stream (its kind byte read): the ask, the answer,
/// then the tarball; a failure mid-way resets the stream, so the peer's
/// load fails instead of taking a cut tarball for whole.
async fn send_image<R: ContainerRuntime>(
    rt: Arc<R>,
    exports: Arc<Semaphore>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(caller) = caller else {
        warn!("refused an image stream from a peer whose certificate names no node");
        let _ = send.reset(1u32.into());
        return;
    };
    let ask = match tokio::time::timeout(ASK_TIMEOUT, read_frame::<ImageAsk>(&mut recv)).await {
        Ok(Ok(Some(ask))) => ask,
        _ => {
            warn!(peer = %caller, "refused a malformed image ask");
            let _ = send.reset(1u32.into());
            return;
        }
    };
    let (reply, permit) = decide(&*rt, &exports, &ask).await;
    if write_frame(&mut send, &reply).await.is_err() {
        return;
    }
    let (Some(_permit), ImageReply::Ready { size }) = (permit, reply) else {
        debug!(peer = %caller, image = %ask.id, "image not sent");
        let _ = send.finish();
        return;
    };
    info!(peer = %caller, image = %ask.id, size, "sending an image to a peer");
    let mut tar = rt.save(&ask.id);
    let mut sent = 0u64;
    loop {
        let chunk = match tokio::time::timeout(STALL, tar.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                warn!(peer = %caller, image = %ask.id, error = %e, "docker save failed");
                let _ = send.reset(1u32.into());
                return;
            }
            Err(_) => {
                warn!(peer = %caller, image = %ask.id, "docker save stalled");
                let _ = send.reset(1u32.into());
                return;
            }
        };
        sent += chunk.len() as u64;
        match tokio::time::timeout(STALL, send.write_chunk(chunk)).await {
            Ok(Ok(())) => {}
            _ => {
                warn!(peer = %caller, image = %ask.id, sent, "the peer stopped reading the image");
                let _ = send.reset(1u32.into());
                return;
            }
        }
    }
    let _ = send.finish();
    info!(peer = %caller, image = %ask.id, bytes = sent, "sent an image to a peer");
}

/// The answer to an ask, and the export slot when it is `Ready`.
async fn decide<R: ContainerRuntime>(
    rt: &R,
    exports: &Arc<Semaphore>,
    ask: &ImageAsk,
) -> (ImageReply, Option<tokio::sync::OwnedSemaphorePermit>) {
    if !is_image_id(&ask.id) {
        return (ImageReply::Refused("not an image id".into()), None);
    }
    let size = match rt.image_id(&ask.id).await {
        Ok(Some(held)) => held.size,
        Ok(None) => return (ImageReply::Refused("not held here".into()), None),
        Err(e) => return (ImageReply::Refused(e.to_string()), None),
    };
    match exports.clone().try_acquire_owned() {
        Ok(permit) => (ImageReply::Ready { size }, Some(permit)),
        Err(_) => (
            ImageReply::Busy(format!("{MAX_EXPORTS} images are being sent from here")),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::memory::MemoryRuntime;
    use mesh_protocol::NodeId;

    fn member() -> Caller {
        Some(NodeId::new("peer").unwrap())
    }

    #[tokio::test]
    async fn has_image_answers_members_only_and_only_for_image_names() {
        let rt = MemoryRuntime::new();
        let none = |_: &str| None;
        let ask = |name: &str| Request::HasImage(name.into());
        let held = has_image(&rt, &none, member(), ask("mesh-testsvc:latest")).await;
        assert!(matches!(held, Response::HasImage(Some(_))), "{held:?}");
        let absent = has_image(&rt, &none, member(), ask("registry.test/app:1")).await;
        assert_eq!(absent, Response::HasImage(None));
        let stranger = has_image(&rt, &none, None, ask("mesh-testsvc:latest")).await;
        assert!(
            matches!(&stranger, Response::Failed(e) if e.kind == ErrorKind::Unauthenticated),
            "{stranger:?}"
        );
        for bad in ["", "a b", &"x".repeat(MAX_IMAGE_NAME + 1)] {
            let r = has_image(&rt, &none, member(), ask(bad)).await;
            assert!(
                matches!(&r, Response::Failed(e) if e.kind == ErrorKind::Invalid),
                "{bad:?}: {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_image_being_got_here_is_said_to_be_and_how() {
        let rt = MemoryRuntime::new();
        let ask = |name: &str| Request::HasImage(name.into());
        // Asked by a name that prints otherwise: the pulls' key is the
        // printed one.
        let getting = |image: &str| match image {
            "registry.test/app:1" => Some(true),
            "registry.test/app:2" => Some(false),
            _ => None,
        };
        for (name, want) in [
            (
                "registry.test/app:1",
                Response::ImagePulling { downloading: true },
            ),
            (
                "registry.test/app:2",
                Response::ImagePulling { downloading: false },
            ),
            ("registry.test/app:3", Response::HasImage(None)),
        ] {
            assert_eq!(has_image(&rt, &getting, member(), ask(name)).await, want);
        }
        // Held wins over being got (a pull with policy always).
        let never = |_: &str| Some(true);
        let held = has_image(&rt, &never, member(), ask("mesh-testsvc:latest")).await;
        assert!(matches!(held, Response::HasImage(Some(_))), "{held:?}");
    }

    #[tokio::test]
    async fn exports_are_of_held_ids_only_and_bounded() {
        let rt = MemoryRuntime::new();
        let exports = Arc::new(Semaphore::new(MAX_EXPORTS));
        let ask = |id: &str| ImageAsk { id: id.into() };
        let (r, _) = decide(&rt, &exports, &ask("mesh-testsvc:latest")).await;
        assert!(matches!(r, ImageReply::Refused(_)), "a name is not an id");
        let unknown = format!("sha256:{}", "1".repeat(64));
        let (r, _) = decide(&rt, &exports, &ask(&unknown)).await;
        assert!(matches!(r, ImageReply::Refused(_)), "not held: {r:?}");
        let id = rt
            .image_id("mesh-testsvc:latest")
            .await
            .unwrap()
            .unwrap()
            .id;
        let mut held = Vec::new();
        for _ in 0..MAX_EXPORTS {
            let (r, permit) = decide(&rt, &exports, &ask(&id)).await;
            assert!(matches!(r, ImageReply::Ready { .. }), "{r:?}");
            held.push(permit.unwrap());
        }
        let (r, permit) = decide(&rt, &exports, &ask(&id)).await;
        assert!(
            matches!(r, ImageReply::Busy(_)) && permit.is_none(),
            "{r:?}"
        );
        held.pop();
        let (r, _) = decide(&rt, &exports, &ask(&id)).await;
        assert!(matches!(r, ImageReply::Ready { .. }), "a slot freed: {r:?}");
    }
}
