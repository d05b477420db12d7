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

/// What a family of durations is observed by: its label, and its buckets.
pub trait Measured: Copy {
    fn label(self) -> Label;
    fn histogram() -> Histogram;
}

/// Durations by `K`, one histogram per label value; a clone shares the
/// counts.
#[derive(Debug)]
pub struct Durations<K> {
    family: Histograms,
    kind: std::marker::PhantomData<K>,
}

impl<K> Clone for Durations<K> {
    fn clone(&self) -> Self {
        Durations {
            family: self.family.clone(),
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: Measured> Default for Durations<K> {
    fn default() -> Self {
        Durations {
            family: Histograms::new_with_constructor(K::histogram),
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: Measured> Durations<K> {
    pub fn observe(&self, by: K, took: Duration) {
        self.family
            .get_or_create(&by.label())
            .observe(took.as_secs_f64());
    }

    /// The histograms (a clone sharing the counts), for a scrape.
    pub fn histograms(&self) -> Histograms {
        self.family.clone()
    }
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

impl Measured for Placed {
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

    fn histogram() -> Histogram {
        Histogram::new(PLACEMENT_BUCKETS)
    }
}

/// How long placements took on this node: from the moment it accepted a
/// task (a submission, or a keeper's re-placement of a dead node's task)
/// to the moment a node took it or it was queued here, by outcome.
pub type PlacementTimes = Durations<Placed>;

/// Where a service connection was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// By a container on this host.
    Local,
    /// By a container on a peer, through a QUIC stream.
    Mesh,
}

impl Measured for Route {
    fn label(self) -> Label {
        [(
            "route",
            match self {
                Route::Local => "local",
                Route::Mesh => "mesh",
            },
        )]
    }

    fn histogram() -> Histogram {
        Histogram::new(SETUP_BUCKETS)
    }
}

/// How long client connections took to set up: from the moment this
/// node accepted one to the moment it had a container for it (a lease
/// here, or a tunnel a peer answered `Ready` on), by route. Waiting for
/// room is included; refused connections are not observed.
pub type SetupTimes = Durations<Route>;
