//! Images through Docker for image GC: the images on the host with their
//! sizes and how many containers use each, and removing one reference.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use mesh_protocol::image::HostImage;

use super::RuntimeError;
use super::docker::DockerRuntime;
use super::image_gc::RemoveImageError;

/// Docker's spelling of "no tag" in older API versions.
fn real(name: &&String) -> bool {
    !name.starts_with("<none>")
}

impl DockerRuntime {
    pub(super) async fn list_image_usage(&self) -> Result<Vec<HostImage>, RuntimeError> {
        let docker = self.client().await?;
        let images = docker
            .list_images(Some(ListImagesOptions::default()))
            .await
            .map_err(|e| self.classify("image list", e))?;
        // Counted here rather than trusting `Containers`, which Docker
        // computes only for `system df` (-1 otherwise).
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify("container list", e))?;
        let mut users: HashMap<String, u32> = HashMap::new();
        for c in containers {
            if let Some(id) = c.image_id {
                *users.entry(id).or_default() += 1;
            }
        }
        Ok(images
            .into_iter()
            .map(|i| HostImage {
                containers: users.get(&i.id).copied().unwrap_or(0),
                tags: i.repo_tags.iter().filter(real).cloned().collect(),
                digests: i.repo_digests.iter().filter(real).cloned().collect(),
                size: u64::try_from(i.size).unwrap_or(0),
                id: i.id,
            })
            .collect())
    }

    pub(super) async fn delete_image(&self, reference: &str) -> Result<(), RemoveImageError> {
        let docker = self.client().await?;
        // Never forced: Docker then refuses to remove an image a container
        // (running or stopped) was created from.
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match docker.remove_image(reference, Some(options), None).await {
            Ok(_) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Err(RemoveImageError::Conflict(message)),
            Err(e) => Err(self.classify(reference, e).into()),
        }
    }
}
