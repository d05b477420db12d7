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
    scenario("chaos seed 1", SCENARIO_LIMIT, async {
        let opts = ChaosOptions::new(SEED, DURATION, 5, TestnetName::unique("chaos"));
        let report = run(opts).await?;
        println!("{report}");
        ensure!(
            report.passed(),
            "seed {SEED}: {} violation(s); replay with scripts/chaos --seed {SEED} --duration {}\n{report}",
            report.failures().count(),
            DURATION.as_secs()
        );
        Ok(())
    })
    .await
}
