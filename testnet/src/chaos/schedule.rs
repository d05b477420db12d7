//! What the chaos run does next, decided from a seeded RNG and nothing else:
//! the next fault (its kind, its nodes, how long it holds and how long the
//! mesh then has to recover) and the next submission of the steady load.
//! Pure, so a seed names one run's plan and unit tests pin it down.

use std::time::Duration;

use rand::Rng;
use rand::seq::index::sample;

/// One kind of fault, each with the operation that repairs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL an agent and remove its containers (the loss of a host);
    /// repaired by starting it again with its data.
    Kill,
    /// Cut two agents off the network, each alone, so three keep a
    /// majority; repaired by reconnecting them.
    Partition,
    /// Drain an agent (sometimes with `--migrate`); repaired by undraining.
    Drain,
    /// Docker stops answering an agent (its socket proxy pauses); repaired
    /// by resuming it.
    PauseDocker,
    /// Fill the small data disk of the agent that has one; repaired by
    /// freeing it.
    FillDisk,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Kill,
        FaultKind::Partition,
        FaultKind::Drain,
        FaultKind::PauseDocker,
        FaultKind::FillDisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill/restart",
            FaultKind::Partition => "split 2|3/heal",
            FaultKind::Drain => "drain/undrain",
            FaultKind::PauseDocker => "Docker stops answering/resumes",
            FaultKind::FillDisk => "data disk full/freed",
        }
    }

    /// How many agents it hits.
    fn width(self) -> usize {
        match self {
            FaultKind::Partition => 2,
            FaultKind::Kill | FaultKind::Drain | FaultKind::PauseDocker | FaultKind::FillDisk => 1,
        }
    }
}

/// One fault of the plan: injected, held, repaired, then left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Indices into the testnet's nodes (0 is `n1`), distinct, ascending.
    pub nodes: Vec<usize>,
    /// Drain only: stop its running tasks now to run them elsewhere.
    pub migrate: bool,
    /// How long the fault lasts before its repair.
    pub hold: Duration,
    /// How long after the repair before the next fault.
    pub calm: Duration,
}

/// Shortest and longest hold: past the runner's 10 s fence and the
/// keeper's failover wait at the top, a blip at the bottom.
const HOLD_MS: (u64, u64) = (2_000, 25_000);
const CALM_MS: (u64, u64) = (1_000, 8_000);

/// The next fault on a mesh of `nodes` agents (at least 3, so that two cut
/// off leave a majority when there are 5). `small_disk`: the agent whose
/// data directory is a small tmpfs, the only one whose disk is filled and
/// one never killed (a tmpfs does not outlive its container, and a restart
/// keeps an agent's data).
pub fn next_fault(rng: &mut impl Rng, nodes: usize, small_disk: Option<usize>) -> Fault {
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| k.width() < nodes)
        .filter(|k| *k != FaultKind::FillDisk || small_disk.is_some())
        .collect();
    let kind = kinds[rng.random_range(0..kinds.len())];
    let candidates: Vec<usize> = match (kind, small_disk) {
        (FaultKind::FillDisk, Some(small)) => vec![small],
        (FaultKind::Kill, Some(small)) => (0..nodes).filter(|&n| n != small).collect(),
        _ => (0..nodes).collect(),
    };
    let mut hit: Vec<usize> = sample(rng, candidates.len(), kind.width())
        .into_iter()
        .map(|i| candidates[i])
        .collect();
    hit.sort_unstable();
    Fault {
        kind,
        nodes: hit,
        migrate: kind == FaultKind::Drain && rng.random_bool(0.5),
        hold: Duration::from_millis(rng.random_range(HOLD_MS.0..=HOLD_MS.1)),
        calm: Duration::from_millis(rng.random_range(CALM_MS.0..=CALM_MS.1)),
    }
}

/// One submission of the steady load. Every task runs the test service's
/// `witness` program for `work`, which fails its first `fail_attempts`
/// attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// `Some(n)`: an array of n members.
    pub array: Option<u32>,
    pub cores: u32,
    pub work: Duration,
    pub retries: u32,
    pub fail_attempts: u32,
    /// Whether it waits for the last accepted task (a dependency).
    pub after_last: bool,
}

const WORK_MS: (u64, u64) = (1_000, 10_000);

/// The next submission: mostly single tasks, some arrays of 2 to 4, some
/// that fail first and are retried, some that depend on the one before.
pub fn next_submission(rng: &mut impl Rng) -> Submission {
    let roll = rng.random_range(0..10u32);
    let work = Duration::from_millis(rng.random_range(WORK_MS.0..=WORK_MS.1));
    let cores = if rng.random_bool(0.2) { 2 } else { 1 };
    match roll {
        // An array.
        0 | 1 => Submission {
            array: Some(rng.random_range(2..=4)),
            cores: 1,
            work,
            retries: rng.random_range(0..=2),
            fail_attempts: 0,
            after_last: false,
        },
        // Fails its first attempt, retried.
        2 | 3 => Submission {
            array: None,
            cores,
            work,
            retries: rng.random_range(1..=3),
            fail_attempts: 1,
            after_last: false,
        },
        // Waits for the task before it.
        4 | 5 => Submission {
            array: None,
            cores,
            work,
            retries: rng.random_range(0..=1),
            fail_attempts: 0,
            after_last: true,
        },
        _ => Submission {
            array: None,
            cores,
            work,
            retries: rng.random_range(0..=2),
            fail_attempts: 0,
            after_last: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn faults(seed: u64, nodes: usize, n: usize) -> Vec<Fault> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| next_fault(&mut rng, nodes, Some(nodes - 1)))
            .collect()
    }

    #[test]
    fn a_seed_names_one_plan() {
        assert_eq!(faults(7, 5, 50), faults(7, 5, 50));
        assert_ne!(faults(7, 5, 50), faults(8, 5, 50));
    }

    #[test]
    fn faults_hit_distinct_nodes_of_the_mesh_and_leave_a_majority() {
        for fault in faults(1, 5, 2_000) {
            assert_eq!(fault.nodes.len(), fault.kind.width(), "{fault:?}");
            assert!(fault.nodes.windows(2).all(|w| w[0] < w[1]), "{fault:?}");
            assert!(fault.nodes.iter().all(|&n| n < 5), "{fault:?}");
            assert!(fault.nodes.len() * 2 < 5, "{fault:?}");
            assert!(!fault.migrate || fault.kind == FaultKind::Drain);
            let hold = u64::try_from(fault.hold.as_millis()).unwrap();
            assert!((HOLD_MS.0..=HOLD_MS.1).contains(&hold), "{fault:?}");
        }
    }

    #[test]
    fn every_kind_comes_up() {
        let plan = faults(3, 5, 300);
        for kind in FaultKind::ALL {
            assert!(plan.iter().any(|f| f.kind == kind), "{kind:?} never chosen");
        }
        assert!(plan.iter().any(|f| f.migrate));
    }

    #[test]
    fn only_the_small_disk_is_filled_and_it_is_never_killed() {
        for fault in faults(9, 5, 2_000) {
            match fault.kind {
                FaultKind::FillDisk => assert_eq!(fault.nodes, [4]),
                FaultKind::Kill => assert_ne!(fault.nodes, [4]),
                _ => {}
            }
        }
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..300 {
            assert_ne!(next_fault(&mut rng, 5, None).kind, FaultKind::FillDisk);
        }
    }

    #[test]
    fn two_agents_get_no_partition_of_two() {
        assert!(
            faults(5, 2, 300)
                .iter()
                .all(|f| f.kind != FaultKind::Partition)
        );
    }

    #[test]
    fn the_load_mixes_arrays_retries_and_dependencies() {
        let mut rng = StdRng::seed_from_u64(11);
        let load: Vec<Submission> = (0..500).map(|_| next_submission(&mut rng)).collect();
        assert!(load.iter().any(|s| s.array.is_some()));
        assert!(
            load.iter()
                .any(|s| s.fail_attempts > 0 && s.retries >= s.fail_attempts)
        );
        assert!(load.iter().any(|s| s.after_last));
        assert!(
            load.iter()
                .any(|s| s.array.is_none() && !s.after_last && s.fail_attempts == 0)
        );
        for s in &load {
            assert!(s.cores >= 1 && s.cores <= 2);
            assert!(s.array.is_none_or(|n| (2..=4).contains(&n)));
        }
    }
}
