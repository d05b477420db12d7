//! What service connections carry, counted where they are served: the
//! setup time of each, observed once it has a container. Shared by every
//! clone (the services' `Stats` hands it out) and read at scrape time.

use super::timings::SetupTimes;

/// This node's service connections: setup times.
#[derive(Debug, Clone, Default)]
pub struct ServiceTraffic {
    pub setup: SetupTimes,
}
