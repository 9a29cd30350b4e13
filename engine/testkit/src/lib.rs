//! Helpers for the workspace's tests (a dev-dependency only, never of a shipped crate).
//!
//! [`pg`]: a fresh PostgreSQL database per test, dropped afterwards.

pub mod pg;

pub use pg::{pg_admin_url, with_database, with_temp_pg, TempPg};
