//! whale-daemon: the engine, scheduler and HTTP API behind `whaled`.
