//! whale-registry: model names, digests, the on-disk store, and pull/push over the OCI
//! distribution protocol, plus the read-only `/v2/` routes that let one whale serve its store
//! to another. Imports nothing else of whale's; draws nothing (progress is data).

pub mod digest;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod server;
pub mod store;
mod transport;
pub mod verify;

pub use digest::Digest;
pub use error::{Error, Result};
pub use manifest::{Layer, Manifest};
pub use progress::{ProgressEvent, PullEvent, Reporter};
pub use pull::{MIRROR_ENV, PullOptions, Puller, Resolved};
pub use push::{PushOptions, Pusher};
pub use reference::ModelRef;
pub use store::{MODELS_ENV, PruneReport, Store, StoredModel};
pub use verify::VerifyReport;
