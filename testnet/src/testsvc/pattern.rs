//! The deterministic byte pattern `source` writes: byte `i` is
//! `(i * 31 + 7) % 251`, so a client can check every byte without a copy.

/// The pattern repeats every `PERIOD` bytes (251 is prime and 31 is invertible
/// modulo it, so one period holds 251 distinct values).
pub const PERIOD: u64 = 251;

/// Byte `i` of the pattern, for any `i` (no overflow: reduced first).
pub fn byte_at(i: u64) -> u8 {
    // (i % 251) * 31 + 7 < 251 * 31 + 7, and the result is < 251, so it fits a u8.
    ((i % PERIOD * 31 + 7) % PERIOD) as u8
}

/// A buffer of whole periods starting at index 0: writing it repeatedly (and a
/// prefix of it last) produces the pattern from byte 0 on.
pub fn chunk(periods: usize) -> Vec<u8> {
    (0..PERIOD * periods as u64).map(byte_at).collect()
}

/// Whether `bytes` is the pattern starting at byte 0.
pub fn is_pattern(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .zip(0u64..)
        .all(|(&byte, i)| byte == byte_at(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        assert_eq!(byte_at(0), 7);
        assert_eq!(byte_at(1), 38);
        assert_eq!(byte_at(8), (8 * 31 + 7) % 251);
        assert_eq!(byte_at(9), ((9 * 31 + 7) % 251) as u8);
    }

    #[test]
    fn repeats_every_period_even_for_huge_indices() {
        for i in [0, 1, 250, 1_000_000, u64::MAX - PERIOD] {
            assert_eq!(byte_at(i), byte_at(i + PERIOD));
        }
        let expected = ((u64::MAX % PERIOD) * 31 + 7) % PERIOD;
        assert_eq!(u64::from(byte_at(u64::MAX)), expected);
    }

    #[test]
    fn chunk_is_whole_periods_of_the_pattern() {
        let chunk = chunk(3);
        assert_eq!(chunk.len(), 753);
        assert!(is_pattern(&chunk));
        let twice = [chunk.as_slice(), chunk.as_slice()].concat();
        assert!(is_pattern(&twice));
        assert!(!is_pattern(&[7, 38, 0]));
    }
}
