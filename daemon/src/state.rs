//! What every handler shares: the resolved config, the model store and the scheduler.

use std::time::Instant;

use whale_registry::Store;

use crate::config::Config;
use crate::scheduler::Scheduler;

/// Shared by all requests; cheap to reach through an `Arc`.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub scheduler: Scheduler,
    pub started: Instant,
}
