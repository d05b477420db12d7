//! Resource quantities a task asks for, validated at the boundary.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most cores one task may ask for; far beyond any single host we expect.
pub const MAX_CORES: u32 = 4096;
/// Docker refuses memory limits below 6 MiB.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;
/// Docker takes a memory limit as a signed 64-bit number of bytes.
pub const MAX_MEMORY: u64 = i64::MAX as u64;

/// A number of physical cores, at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct CoreCount(NonZeroU32);

/// A resource ask that cannot be honoured as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("cores must be between 1 and {MAX_CORES}, got {0}")]
    Cores(u32),
    #[error("memory {0:?} is not a size: use bytes or a number with k, m, g (e.g. 512M)")]
    MemorySyntax(String),
    #[error("memory {0:?} is below Docker's minimum of 6M")]
    MemoryTooSmall(String),
    #[error("memory {0:?} is above Docker's maximum of 8E (2^63 - 1 bytes)")]
    MemoryTooLarge(String),
}

impl CoreCount {
    pub fn new(n: u32) -> Result<Self, ResourceError> {
        match NonZeroU32::new(n) {
            Some(nz) if n <= MAX_CORES => Ok(Self(nz)),
            _ => Err(ResourceError::Cores(n)),
        }
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for CoreCount {
    type Error = ResourceError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<CoreCount> for u32 {
    fn from(c: CoreCount) -> u32 {
        c.get()
    }
}

impl fmt::Display for CoreCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A memory limit in bytes, at least Docker's minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MemoryBytes(u64);

impl MemoryBytes {
    pub fn new(bytes: u64) -> Result<Self, ResourceError> {
        if bytes < MIN_MEMORY {
            return Err(ResourceError::MemoryTooSmall(bytes.to_string()));
        }
        if bytes > MAX_MEMORY {
            return Err(ResourceError::MemoryTooLarge(bytes.to_string()));
        }
        Ok(Self(bytes))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for MemoryBytes {
    type Error = ResourceError;
    fn try_from(n: u64) -> Result<Self, Self::Error> {
        Self::new(n)
    }
}

impl From<MemoryBytes> for u64 {
    fn from(m: MemoryBytes) -> u64 {
        m.0
    }
}

impl FromStr for MemoryBytes {
    type Err = ResourceError;

    /// Parses `1048576`, `512k`, `512M`, `2G`, `1.5g` (powers of 1024; a
    /// trailing `b`/`B` or `i`, as in `512MiB`, is accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ResourceError::MemorySyntax(s.to_owned());
        let t = s.trim();
        let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
        let t = t.strip_suffix('i').unwrap_or(t);
        let (num, mult) = match t.chars().last() {
            Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
            Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
            Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
            _ => (t, 1),
        };
        let value: f64 = num.trim().parse().map_err(|_| syntax())?;
        if !value.is_finite() || value < 0.0 || value * mult as f64 > u64::MAX as f64 / 2.0 {
            return Err(syntax());
        }
        let bytes = (value * mult as f64) as u64;
        if bytes < MIN_MEMORY {
            return Err(ResourceError::MemoryTooSmall(s.to_owned()));
        }
        if bytes > MAX_MEMORY {
            return Err(ResourceError::MemoryTooLarge(s.to_owned()));
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for MemoryBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b % (1 << 30) == 0 {
            write!(f, "{}G", b >> 30)
        } else if b % (1 << 20) == 0 {
            write!(f, "{}M", b >> 20)
        } else {
            write!(f, "{b}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_bounds() {
        assert!(CoreCount::new(0).is_err());
        assert_eq!(CoreCount::new(3).unwrap().get(), 3);
        assert!(CoreCount::new(MAX_CORES + 1).is_err());
    }

    #[test]
    fn memory_parses_units() {
        assert_eq!("512M".parse::<MemoryBytes>().unwrap().get(), 512 << 20);
        assert_eq!("1g".parse::<MemoryBytes>().unwrap().get(), 1 << 30);
        assert_eq!("1.5GiB".parse::<MemoryBytes>().unwrap().get(), 3 << 29);
        assert_eq!("8388608".parse::<MemoryBytes>().unwrap().get(), 8 << 20);
        assert!(matches!(
            "1k".parse::<MemoryBytes>(),
            Err(ResourceError::MemoryTooSmall(_))
        ));
        assert!(matches!(
            "lots".parse::<MemoryBytes>(),
            Err(ResourceError::MemorySyntax(_))
        ));
        assert!(matches!(
            "-5M".parse::<MemoryBytes>(),
            Err(ResourceError::MemorySyntax(_))
        ));
        assert_eq!("512M".parse::<MemoryBytes>().unwrap().to_string(), "512M");
    }

    /// Docker's limit is an i64: a larger one (from a peer, or the disk)
    /// is refused rather than turned negative.
    #[test]
    fn memory_fits_docker() {
        assert!(matches!(
            MemoryBytes::new(u64::MAX),
            Err(ResourceError::MemoryTooLarge(_))
        ));
        assert!(serde_json::from_str::<MemoryBytes>(&u64::MAX.to_string()).is_err());
        assert_eq!(MemoryBytes::new(MAX_MEMORY).unwrap().get(), MAX_MEMORY);
        assert!("8388608T".parse::<MemoryBytes>().is_err());
    }
}
