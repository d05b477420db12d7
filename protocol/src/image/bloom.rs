//! A Bloom filter small enough to gossip: a set of byte strings that may
//! answer "present" for a string never inserted (a false positive, at about
//! [`TARGET_FP_PERCENT`]% while it holds no more than it was sized for) but
//! never "absent" for one that was.
//!
//! Sizing: `m = ceil(n * -ln p / ln² 2)` bits for `n` keys at rate `p`
//! (9.59 bits a key at 1%), rounded up to whole bytes and capped at
//! [`MAX_BYTES`]; `k = round(m / n * ln 2)` hashes (7 at 1%), at least 1 and
//! at most [`MAX_HASHES`]. Past the cap (about 1250 keys) the rate rises
//! instead of the size: 2500 keys give about 10%.
//!
//! Hashing is part of the wire format (every node must set and test the same
//! bits): a key's 64-bit FNV-1a (`load::fnv1a` of the key as one part:
//! the key's bytes, then the byte `0xff`) gives
//! `h1 = mix(h)` and `h2 = mix(h ^ 0x9e3779b97f4a7c15) | 1` with `mix`
//! splitmix64's finaliser; hash `i` sets bit `(h1 + i * h2) mod m`
//! (wrapping u64 arithmetic), bit `j` being bit `j % 8` (least significant
//! first) of byte `j / 8`.

use crate::load::fnv1a;

/// The false-positive rate a filter is sized for, in percent.
pub const TARGET_FP_PERCENT: f64 = 1.0;
/// Largest filter, in bytes (12,000 bits): its gossip value stays under
/// 2 KiB in base64.
pub const MAX_BYTES: usize = 1_500;
/// Most hashes a filter may use (a peer's filter asking more is refused:
/// each is work on every lookup).
pub const MAX_HASHES: u8 = 16;

/// Why bytes from a peer are not a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BloomError {
    #[error("a filter of {0} bytes (at most {MAX_BYTES})")]
    TooLarge(usize),
    #[error("a filter with {0} hashes (1 to {MAX_HASHES})")]
    Hashes(u8),
}

/// The two hashes of a key, computed once and tested against any filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    h1: u64,
    h2: u64,
}

impl Probe {
    pub fn of(key: &[u8]) -> Probe {
        let h = fnv1a(&[key]);
        Probe {
            h1: mix(h),
            h2: mix(h ^ 0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    /// The bit hash `i` names in a filter of `m` bits (`m` > 0).
    fn bit(&self, i: u8, m: u64) -> u64 {
        self.h1.wrapping_add(u64::from(i).wrapping_mul(self.h2)) % m
    }
}

/// splitmix64's finaliser: spreads FNV-1a's weak low bits over the word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// See the module documentation. An empty bit array holds nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    hashes: u8,
    bits: Vec<u8>,
}

impl Default for Bloom {
    fn default() -> Self {
        Bloom::for_keys(0)
    }
}

impl Bloom {
    /// An empty filter sized for `n` keys (see the module documentation).
    pub fn for_keys(n: usize) -> Bloom {
        // ln² 2, and -ln p for the target rate.
        let per_key = -(TARGET_FP_PERCENT / 100.0).ln() / (std::f64::consts::LN_2.powi(2));
        let wanted_bits = (n as f64 * per_key).ceil() as usize;
        let bytes = wanted_bits.div_ceil(8).min(MAX_BYTES);
        let m = (bytes * 8) as f64;
        let hashes = if n == 0 {
            (per_key * std::f64::consts::LN_2).round()
        } else {
            (m / n as f64 * std::f64::consts::LN_2).round()
        };
        Bloom {
            // Clamped to 1..=16 first, so the cast keeps it.
            hashes: hashes.clamp(1.0, f64::from(MAX_HASHES)) as u8,
            bits: vec![0; bytes],
        }
    }

    /// A filter from its parts as a peer sent them, checked.
    pub fn from_parts(hashes: u8, bits: Vec<u8>) -> Result<Bloom, BloomError> {
        if bits.len() > MAX_BYTES {
            return Err(BloomError::TooLarge(bits.len()));
        }
        if !(1..=MAX_HASHES).contains(&hashes) {
            return Err(BloomError::Hashes(hashes));
        }
        Ok(Bloom { hashes, bits })
    }

    pub fn hashes(&self) -> u8 {
        self.hashes
    }

    /// The bit array, as gossiped.
    pub fn bytes(&self) -> &[u8] {
        &self.bits
    }

    fn m(&self) -> u64 {
        self.bits.len() as u64 * 8
    }

    /// Adds a key. A filter of no bits stays empty (it was sized for none).
    pub fn insert(&mut self, probe: &Probe) {
        let m = self.m();
        if m == 0 {
            return;
        }
        for i in 0..self.hashes {
            let j = probe.bit(i, m);
            // j < m = 8 * len, so j / 8 < len.
            self.bits[(j / 8) as usize] |= 1 << (j % 8);
        }
    }

    /// Whether the key may have been inserted (never false for one that was).
    pub fn contains(&self, probe: &Probe) -> bool {
        let m = self.m();
        m > 0
            && (0..self.hashes).all(|i| {
                let j = probe.bit(i, m);
                self.bits[(j / 8) as usize] & (1 << (j % 8)) != 0
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn filled(keys: impl Iterator<Item = String> + Clone) -> Bloom {
        let mut b = Bloom::for_keys(keys.clone().count());
        for k in keys {
            b.insert(&Probe::of(k.as_bytes()));
        }
        b
    }

    /// Share of `trials` absent keys the filter claims, in percent.
    fn fp_percent(b: &Bloom, trials: u32) -> f64 {
        let hits = (0..trials)
            .filter(|i| b.contains(&Probe::of(format!("absent-{i}").as_bytes())))
            .count();
        hits as f64 * 100.0 / f64::from(trials)
    }

    #[test]
    fn sized_for_the_target_rate_and_capped() {
        assert_eq!(Bloom::for_keys(0).bytes().len(), 0);
        let b = Bloom::for_keys(300);
        // 300 keys at 1%: 2876 bits, 360 bytes, 7 hashes.
        assert_eq!((b.bytes().len(), b.hashes()), (360, 7));
        let big = Bloom::for_keys(100_000);
        assert_eq!(big.bytes().len(), MAX_BYTES);
        assert_eq!(big.hashes(), 1, "a crowded filter uses fewer hashes");
    }

    #[test]
    fn false_positives_stay_near_the_target() {
        for n in [10, 300, 1_200] {
            let b = filled((0..n).map(|i| format!("present-{i}")));
            let fp = fp_percent(&b, 20_000);
            assert!(fp < 2.0 * TARGET_FP_PERCENT, "{n} keys: {fp}%");
        }
        // Past the cap the rate rises, but the filter still says something.
        let crowded = filled((0..2_500).map(|i| format!("present-{i}")));
        let fp = fp_percent(&crowded, 20_000);
        assert!(fp < 15.0, "{fp}%");
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let b = Bloom::default();
        assert!(!b.contains(&Probe::of(b"anything")));
        let mut none = Bloom::for_keys(0);
        none.insert(&Probe::of(b"x"));
        assert!(
            !none.contains(&Probe::of(b"x")),
            "sized for none, holds none"
        );
    }

    #[test]
    fn a_peers_parts_are_checked() {
        assert_eq!(
            Bloom::from_parts(7, vec![0; MAX_BYTES + 1]),
            Err(BloomError::TooLarge(MAX_BYTES + 1))
        );
        assert_eq!(Bloom::from_parts(0, vec![0; 8]), Err(BloomError::Hashes(0)));
        assert_eq!(
            Bloom::from_parts(17, vec![0; 8]),
            Err(BloomError::Hashes(17))
        );
        let b = filled(["a".to_string()].into_iter());
        let again = Bloom::from_parts(b.hashes(), b.bytes().to_vec()).unwrap();
        assert_eq!(again, b);
    }

    #[test]
    fn the_bits_are_the_wire_format() {
        // Pinned: a change here breaks lookups across agent versions.
        let mut b = Bloom::from_parts(3, vec![0; 4]).unwrap();
        b.insert(&Probe::of(b"docker.io/library/busybox:latest"));
        assert_eq!(b.bytes(), PINNED_BITS);
    }

    const PINNED_BITS: &[u8] = &[0, 1, 2, 4];

    proptest! {
        /// What was inserted is always found, whatever the filter's size.
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..400),
                              sized_for in 0usize..3_000) {
            let mut b = Bloom::for_keys(sized_for.max(1));
            for k in &keys {
                b.insert(&Probe::of(k));
            }
            for k in &keys {
                prop_assert!(b.contains(&Probe::of(k)));
            }
        }

        /// Any parts a peer may send are a filter or an error, and lookups
        /// in an accepted one never panic.
        #[test]
        fn any_parts_are_safe(hashes: u8, bits in proptest::collection::vec(any::<u8>(), 0..64),
                              key in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(b) = Bloom::from_parts(hashes, bits) {
                let _ = b.contains(&Probe::of(&key));
            }
        }
    }
}
