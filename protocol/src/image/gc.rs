//! Image GC as a decision: given the host's images (size, last use, ours or
//! not, containers), the images that tasks and services name, and a bound,
//! which images to remove, least recently used first, until the images
//! GC manages fit. Pure; the agent lists, asks and removes.

use std::collections::BTreeSet;

/// One image on the host as GC sees it (made by [`super::Ledger::refresh`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Its tags as the runtime shows them (what removal names).
    pub tags: Vec<String>,
    /// Its tags and digests, canonical ([`super::canonical`]).
    pub names: Vec<String>,
    pub size: u64,
    /// Pulled by this agent, and tagged by nobody else.
    pub ours: bool,
    /// Containers created from it (any state, anyone's).
    pub containers: u32,
    /// Since when it has not started a container of ours (ms since the
    /// Unix epoch).
    pub idle_since_ms: u64,
}

/// The operator's bound (`--image-gc`, `--image-gc-idle`, `--image-gc-all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Most bytes the images GC manages may take.
    pub max_bytes: u64,
    /// An image idle for less than this stays, whatever the bound.
    pub min_idle_ms: u64,
    /// Also manage (count and remove) images this agent did not pull.
    pub foreign_too: bool,
}

/// An image to remove, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub idle_ms: u64,
}

/// What a GC pass decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order to remove them: least recently used first.
    pub remove: Vec<Removal>,
    /// Bytes the managed images take now.
    pub managed_bytes: u64,
    /// Bytes they take once `remove` is done.
    pub after_bytes: u64,
}

impl Plan {
    /// Whether the managed images stay above the bound even after the
    /// removals (everything else is in use, too recent or not ours).
    pub fn still_over(&self, policy: &GcPolicy) -> bool {
        self.after_bytes > policy.max_bytes
    }
}

impl Candidate {
    /// Whether GC counts and may remove it under `policy`.
    pub fn managed(&self, policy: &GcPolicy) -> bool {
        self.ours || policy.foreign_too
    }

    /// Whether a container exists from it, or a task or service names it
    /// (`named`: canonical names and ids).
    pub fn in_use(&self, named: &BTreeSet<String>) -> bool {
        self.containers > 0
            || named.contains(&self.id)
            || self.names.iter().any(|n| named.contains(n))
    }
}

/// Which images to remove so that the managed images (ours, or all with
/// `foreign_too`) take at most `policy.max_bytes`: never one in use, never
/// one idle for less than `policy.min_idle_ms`, never one not managed; the
/// least recently used first (ties by id), and no more once under the bound.
pub fn plan(
    images: &[Candidate],
    named: &BTreeSet<String>,
    policy: &GcPolicy,
    now_ms: u64,
) -> Plan {
    let managed_bytes: u64 = images
        .iter()
        .filter(|c| c.managed(policy))
        .map(|c| c.size)
        .fold(0, u64::saturating_add);
    let mut plan = Plan {
        remove: Vec::new(),
        managed_bytes,
        after_bytes: managed_bytes,
    };
    if managed_bytes <= policy.max_bytes {
        return plan;
    }
    let mut removable: Vec<&Candidate> = images
        .iter()
        .filter(|c| {
            c.managed(policy)
                && !c.in_use(named)
                && now_ms.saturating_sub(c.idle_since_ms) >= policy.min_idle_ms
        })
        .collect();
    removable.sort_by(|a, b| (a.idle_since_ms, &a.id).cmp(&(b.idle_since_ms, &b.id)));
    for c in removable {
        if plan.after_bytes <= policy.max_bytes {
            break;
        }
        plan.after_bytes = plan.after_bytes.saturating_sub(c.size);
        plan.remove.push(Removal {
            id: c.id.clone(),
            tags: c.tags.clone(),
            size: c.size,
            idle_ms: now_ms.saturating_sub(c.idle_since_ms),
        });
    }
    plan
}

#[cfg(test)]
mod tests;
