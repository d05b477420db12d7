//! A set of CPU (or NUMA node) OS indices, in the list format Docker and the
//! kernel use: `0-3,8,10-11`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Ordered set of OS indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CpuSet(BTreeSet<u32>);

/// A cpuset list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpu list {0:?}: expected comma-separated indices or ranges such as 0-3,8")]
pub struct CpuSetParseError(String);

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, index: u32) {
        self.0.insert(index);
    }

    pub fn contains(&self, index: u32) -> bool {
        self.0.contains(&index)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn is_disjoint(&self, other: &CpuSet) -> bool {
        self.0.is_disjoint(&other.0)
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut iter = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = iter.next() {
            let mut end = start;
            // `checked_add`: an index of u32::MAX (a peer's allocation)
            // ends the range rather than overflowing.
            while let Some(next) = end.checked_add(1).filter(|n| iter.peek() == Some(n)) {
                end = next;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CpuSetParseError(s.to_owned());
        let mut set = CpuSet::new();
        let s = s.trim();
        if s.is_empty() {
            return Ok(set);
        }
        for part in s.split(',') {
            let part = part.trim();
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.trim().parse().map_err(|_| err())?;
                    let b: u32 = b.trim().parse().map_err(|_| err())?;
                    if a > b || b - a > 65_536 {
                        return Err(err());
                    }
                    set.0.extend(a..=b);
                }
                None => set.insert(part.parse().map_err(|_| err())?),
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_ranges() {
        let set: CpuSet = [0, 1, 2, 3, 8, 10, 11].into_iter().collect();
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert_eq!(CpuSet::new().to_string(), "");
    }

    #[test]
    fn rejects_garbage() {
        assert!("x".parse::<CpuSet>().is_err());
        assert!("3-1".parse::<CpuSet>().is_err());
        assert!("1,,2".parse::<CpuSet>().is_err());
    }

    #[test]
    fn the_highest_index_formats() {
        let set: CpuSet = [u32::MAX - 1, u32::MAX].into_iter().collect();
        assert_eq!(set.to_string(), "4294967294-4294967295");
        assert_eq!(set.to_string().parse::<CpuSet>(), Ok(set));
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(v in proptest::collection::btree_set(0u32..512, 0..64)) {
            let set: CpuSet = v.into_iter().collect();
            let back: CpuSet = set.to_string().parse().unwrap();
            prop_assert_eq!(set, back);
        }
    }
}
