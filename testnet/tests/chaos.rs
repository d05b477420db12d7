//! A short seeded chaos run (see `mesh_testnet::chaos` and
//! docs/reliability.md): five agents under load while agents are killed,
//! cut off and drained; it must end with no violation. `scripts/chaos` runs
//! longer ones from any seed.

use std::time::Duration;

use anyhow::{Result, ensure};
use mesh_testnet::chaos::{ChaosOptions, run};
use mesh_testnet::{SCENARIO_LIMIT, TestnetName, scenario};

/// The seed of the CI run.
const SEED: u64 = 1;
/// Faults and load; the checks and the settling come after.
const DURATION: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_short_seeded_chaos_run_finds_no_violation() -> Result<()> {
    chaos(SEED, DURATION, SCENARIO_LIMIT).await
}

/// The 10-minute run of docs/reliability.md: no violation since commit
/// 96455a5 (docs/reliability.md, "Results"). Ignored for CI time only.
#[tokio::test]
#[ignore = "about 11 minutes; run with --ignored (scripts/chaos --seed 7 --duration 600 is the same run)"]
async fn seed_7_for_ten_minutes_finds_no_violation() -> Result<()> {
    chaos(7, Duration::from_secs(600), Duration::from_secs(1_200)).await
}

async fn chaos(seed: u64, duration: Duration, limit: Duration) -> Result<()> {
    scenario(&format!("chaos seed {seed}"), limit, async {
        let opts = ChaosOptions::new(seed, duration, 5, TestnetName::unique("chaos"));
        let report = run(opts).await?;
        println!("{report}");
        ensure!(
            report.passed(),
            "seed {seed}: {} violation(s); replay with scripts/chaos --seed {seed} --duration {}\n{report}",
            report.failures().count(),
            duration.as_secs()
        );
        Ok(())
    })
    .await
}
