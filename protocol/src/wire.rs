//! Binary encoding for everything that crosses a process boundary other than
//! the HTTP API: the on-disk store now, agent-to-agent messages later.
//! postcard (compact, serde-based, maintained); bincode is unmaintained
//! (RUSTSEC-2025-0141).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message we encode or accept: a bound against garbage and floods.
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let bytes = postcard::to_stdvec(value)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    Ok(postcard::from_bytes(bytes)?)
}
