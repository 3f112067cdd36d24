//! whale-registry: model names, digests, the on-disk store, and pull/push over the OCI
//! distribution protocol. Imports nothing else of whale's.
