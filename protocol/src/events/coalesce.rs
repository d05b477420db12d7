//! Events that may come in floods (a container per connection, refused
//! connections) are told at most once per window for each kind and
//! subject: the first at once, the rest counted and told together when the
//! window is over.

use std::collections::HashMap;

use super::EventKind;

/// Most (kind, subject) pairs followed at once; past it, the quiet ones
/// are forgotten (a flood of distinct subjects is then told as it comes).
const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone)]
struct Held {
    since_ms: u64,
    count: u64,
    reason: String,
}

/// Which of a flood's events to tell now.
#[derive(Debug, Clone, Default)]
pub struct Coalescer {
    held: HashMap<(EventKind, String), Held>,
}

impl Coalescer {
    /// An event `kind` of `subject` at `now_ms`: what to tell now, if
    /// anything, as (reason); the others of the window are counted.
    pub fn offer(
        &mut self,
        now_ms: u64,
        window_ms: u64,
        kind: EventKind,
        subject: &str,
        reason: String,
    ) -> Option<String> {
        if self.held.len() >= MAX_KEYS {
            self.held.retain(|_, h| h.count > 0);
        }
        let key = (kind, subject.to_owned());
        match self.held.get_mut(&key) {
            Some(h) if now_ms.saturating_sub(h.since_ms) < window_ms => {
                h.count += 1;
                h.reason = reason;
                None
            }
            Some(h) => {
                let told = if h.count > 0 {
                    format!(
                        "{reason} (and {} more in the {} s before)",
                        h.count,
                        window_ms / 1000
                    )
                } else {
                    reason
                };
                *h = Held {
                    since_ms: now_ms,
                    count: 0,
                    reason: String::new(),
                };
                Some(told)
            }
            None => {
                self.held.insert(
                    key,
                    Held {
                        since_ms: now_ms,
                        count: 0,
                        reason: String::new(),
                    },
                );
                Some(reason)
            }
        }
    }

    /// The counts whose window is over, to tell now as (kind, subject,
    /// reason); quiet pairs are forgotten.
    pub fn due(&mut self, now_ms: u64, window_ms: u64) -> Vec<(EventKind, String, String)> {
        let mut out = Vec::new();
        self.held.retain(|(kind, subject), h| {
            if now_ms.saturating_sub(h.since_ms) < window_ms {
                return true;
            }
            if h.count == 0 {
                return false;
            }
            out.push((
                *kind,
                subject.clone(),
                format!(
                    "{} more in {} s, the last: {}",
                    h.count,
                    window_ms / 1000,
                    h.reason
                ),
            ));
            h.since_ms = now_ms;
            h.count = 0;
            true
        });
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: EventKind = EventKind::ConnectionRefused;

    #[test]
    fn the_first_is_told_the_rest_counted_then_told_once() {
        let mut c = Coalescer::default();
        assert_eq!(
            c.offer(0, 10_000, K, "web", "full".into()),
            Some("full".into())
        );
        for t in 1..=5 {
            assert_eq!(c.offer(t * 100, 10_000, K, "web", "full".into()), None);
        }
        // Another subject is its own.
        assert!(c.offer(600, 10_000, K, "db", "full".into()).is_some());
        assert!(c.due(5_000, 10_000).is_empty());
        let due = c.due(10_000, 10_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "web");
        assert!(due[0].2.starts_with("5 more in 10 s"), "{}", due[0].2);
        // Told: nothing more is due, and a quiet pair is forgotten.
        assert!(c.due(30_000, 10_000).is_empty());
        assert!(c.held.is_empty());
    }

    #[test]
    fn an_event_after_the_window_carries_the_count() {
        let mut c = Coalescer::default();
        c.offer(0, 1_000, K, "web", "a".into());
        c.offer(10, 1_000, K, "web", "b".into());
        let told = c.offer(2_000, 1_000, K, "web", "c".into()).unwrap();
        assert_eq!(told, "c (and 1 more in the 1 s before)");
    }

    #[test]
    fn keys_are_bounded() {
        let mut c = Coalescer::default();
        for i in 0..5_000u64 {
            c.offer(i, 10_000, K, &format!("s{i}"), String::new());
        }
        assert!(c.held.len() <= MAX_KEYS);
    }
}
