//! Images through Docker: whether the host has one, which it has (ids,
//! repo tags, repo digests), and pulling one with its progress (bollard's
//! create-image stream).

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{CreateImageOptions, ListImagesOptions};
use futures_util::StreamExt;
use mesh_protocol::image::{self, ImageRef, ListedImage, PullProgress, PullTracker};
use tokio::sync::watch;

use super::docker::DockerRuntime;
use super::{Credentials, PullError, RuntimeError};

impl DockerRuntime {
    pub(super) async fn image_present(&self, name: &str) -> Result<bool, RuntimeError> {
        let docker = self.client().await?;
        match docker.inspect_image(name).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.classify(name, e)),
        }
    }

    /// The host's tagged and untagged top-level images (not the
    /// intermediate layers of builds).
    pub(super) async fn images_held(&self) -> Result<Vec<ListedImage>, RuntimeError> {
        let docker = self.client().await?;
        let listed = docker
            .list_images(Some(ListImagesOptions {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify("images", e))?;
        Ok(listed
            .into_iter()
            .map(|i| ListedImage {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
            })
            .collect())
    }

    pub(super) async fn pull_image(
        &self,
        image: &ImageRef,
        auth: Option<Credentials>,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        let docker = self.client().await?;
        let options = CreateImageOptions {
            from_image: Some(image.from_image()),
            tag: Some(image.pull_tag()),
            ..Default::default()
        };
        let credentials = auth.map(|c| DockerCredentials {
            username: c.username,
            password: c.password,
            identitytoken: c.identity_token,
            serveraddress: Some(image.registry.clone()),
            ..Default::default()
        });
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut tracker = PullTracker::default();
        while let Some(message) = stream.next().await {
            match message {
                Ok(info) => {
                    let detail = info.progress_detail.unwrap_or_default();
                    tracker.observe(
                        info.status.as_deref().unwrap_or_default(),
                        info.id.as_deref(),
                        detail.current,
                        detail.total,
                    );
                    progress.send_replace(tracker.progress());
                }
                // The registry's answer, relayed by Docker.
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(image::classify(&error).into());
                }
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    return Err(image::classify(&message).into());
                }
                Err(e) => return Err(self.classify(&image.to_string(), e).into()),
            }
        }
        Ok(())
    }
}
