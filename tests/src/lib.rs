//! Test support: fixture models and helpers shared by the end-to-end tests.
