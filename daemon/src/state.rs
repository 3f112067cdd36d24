//! What every handler shares: the resolved config, the model store, the scheduler and the
//! metrics.

use std::time::Instant;

use whale_registry::Store;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;

/// Shared by all requests; cheap to reach through an `Arc`.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub scheduler: Scheduler,
    pub metrics: Metrics,
    pub started: Instant,
}
