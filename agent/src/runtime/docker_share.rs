//! Images as tarballs through Docker, for sharing them between peers: an
//! image's id, `docker save` (bollard's `export_image`) and `docker load`
//! (bollard's `import_image_stream`), both streamed, and tagging a loaded
//! image with the name a task asked for.

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{ImportImageOptions, TagImageOptions};
use futures_util::StreamExt;
use mesh_protocol::image::ImageRef;
use mesh_protocol::rpc::HeldImage;

use super::docker::DockerRuntime;
use super::{RuntimeError, TarStream};

/// What `docker load` says of each image it loaded, before the name or id.
const LOADED_ID: &str = "Loaded image ID:";
const LOADED_NAME: &str = "Loaded image:";

impl DockerRuntime {
    pub(super) async fn held_image(&self, name: &str) -> Result<Option<HeldImage>, RuntimeError> {
        let docker = self.client().await?;
        match docker.inspect_image(name).await {
            Ok(i) => Ok(i.id.map(|id| HeldImage {
                id,
                size: i.size.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.classify(name, e)),
        }
    }

    pub(super) fn save_image(&self, id: &str) -> TarStream {
        let Some(docker) = self.connected() else {
            let err = std::io::Error::other(format!(
                "not connected to Docker at {}",
                self.endpoint_name()
            ));
            return futures_util::stream::iter([Err(err)]).boxed();
        };
        docker
            .export_image(id)
            .map(|r| r.map_err(std::io::Error::other))
            .boxed()
    }

    pub(super) async fn load_image(&self, tar: TarStream) -> Result<Vec<String>, RuntimeError> {
        let docker = self.client().await?;
        let options = ImportImageOptions {
            quiet: true,
            ..Default::default()
        };
        let mut answers = docker.import_image_stream(options, tar, None);
        let mut said = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(info) => said.extend(info.stream),
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(RuntimeError::Rejected(format!("docker load: {error}")));
                }
                Err(e) => {
                    return Err(match self.classify("docker load", e) {
                        RuntimeError::NotFound(m) => RuntimeError::Rejected(m),
                        other => other,
                    });
                }
            }
        }
        let mut ids = Vec::new();
        for line in said.iter().flat_map(|s| s.lines()) {
            if let Some(id) = line.strip_prefix(LOADED_ID) {
                ids.push(id.trim().to_owned());
            } else if let Some(name) = line.strip_prefix(LOADED_NAME) {
                // A tarball that carried a name: what id it has now.
                if let Some(held) = self.held_image(name.trim()).await? {
                    ids.push(held.id);
                }
            }
        }
        Ok(ids)
    }

    pub(super) async fn tag_image(&self, id: &str, name: &ImageRef) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = TagImageOptions {
            repo: Some(name.from_image()),
            tag: Some(name.pull_tag()),
        };
        docker
            .tag_image(id, Some(options))
            .await
            .map_err(|e| self.classify(id, e))
    }
}
