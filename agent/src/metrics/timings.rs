//! Histograms of how long the agent's work takes, observed by the part
//! doing the work (placement in `tasks`, connection setup in `services`)
//! into a shared handle; a clone shares the counts, and a scrape registers
//! a clone. Observing takes the histogram's own short lock once per
//! placement or connection, never per byte.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the placement time buckets, in seconds: a placement is
/// a few calls to peers (milliseconds on a LAN, more when an offer waits
/// for a busy peer's answer); an offer whose answer is lost waits for the
/// call's timeout and a check (seconds).
const PLACEMENT_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds of the connection setup time buckets, in seconds: a warm
/// container here is leased in well under a millisecond, one on a peer
/// adds a QUIC round trip or two; a container started for the connection
/// takes 0.1 to 2 s; a connection that waits for room waits up to the
/// service's queue timeout.
const SETUP_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// One label, both parts fixed strings.
pub type Label = [(&'static str, &'static str); 1];
/// Histograms by one label, each made with its family's buckets.
pub type Histograms = Family<Label, Histogram, fn() -> Histogram>;

fn placement_histogram() -> Histogram {
    Histogram::new(PLACEMENT_BUCKETS)
}

fn setup_histogram() -> Histogram {
    Histogram::new(SETUP_BUCKETS)
}

/// How a placement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A node (a peer or this one) took the offer.
    Offered,
    /// No node could take it now: it waits in this node's queue.
    Queued,
    /// An offer's answer was lost: it waits here until that node says.
    InDoubt,
}

impl Placed {
    fn label(self) -> Label {
        [(
            "outcome",
            match self {
                Placed::Offered => "offered",
                Placed::Queued => "queued",
                Placed::InDoubt => "in_doubt",
            },
        )]
    }
}

/// How long placements took on this node: from the moment it accepted a
/// task (a submission, or a keeper's re-placement of a dead node's task)
/// to the moment a node took it or it was queued here, by outcome.
#[derive(Debug, Clone)]
pub struct PlacementTimes(Histograms);

impl Default for PlacementTimes {
    fn default() -> Self {
        PlacementTimes(Histograms::new_with_constructor(placement_histogram))
    }
}

impl PlacementTimes {
    pub fn observe(&self, outcome: Placed, took: Duration) {
        self.0
            .get_or_create(&outcome.label())
            .observe(took.as_secs_f64());
    }

    /// The histograms (a clone sharing the counts), for a scrape.
    pub fn histograms(&self) -> Histograms {
        self.0.clone()
    }
}

/// Where a service connection was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// By a container on this host.
    Local,
    /// By a container on a peer, through a QUIC stream.
    Mesh,
}

impl Route {
    pub(super) fn name(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Mesh => "mesh",
        }
    }
}

/// How long client connections took to set up: from the moment this
/// node accepted one to the moment it had a container for it (a lease
/// here, or a tunnel a peer answered `Ready` on), by route. Waiting for
/// room is included; refused connections are not observed.
#[derive(Debug, Clone)]
pub struct SetupTimes(Histograms);

impl Default for SetupTimes {
    fn default() -> Self {
        SetupTimes(Histograms::new_with_constructor(setup_histogram))
    }
}

impl SetupTimes {
    pub fn observe(&self, route: Route, took: Duration) {
        self.0
            .get_or_create(&[("route", route.name())])
            .observe(took.as_secs_f64());
    }

    /// The histograms (a clone sharing the counts), for a scrape.
    pub fn histograms(&self) -> Histograms {
        self.0.clone()
    }
}
