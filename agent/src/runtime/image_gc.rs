//! What image GC asks of the runtime beyond running containers: how a
//! removal can be refused.

/// Why an image was not removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveImageError {
    /// The runtime refused: a container (perhaps not ours) uses the image,
    /// or it is referenced in a way a plain removal may not undo. Not
    /// forced: the image stays.
    #[error("Docker refused to remove the image: {0}")]
    Conflict(String),
    #[error(transparent)]
    Runtime(#[from] super::RuntimeError),
}
