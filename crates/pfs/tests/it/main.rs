//! Integration tests of the pfs engine (one test binary). Every test runs on SQLite and, when
//! `DATABASE_URL` points at PostgreSQL (mandatory with `REQUIRE_SERVICES=1`), on PostgreSQL too.

mod concurrency;
mod content;
mod faults;
mod manifest_cache;
mod migrations;
mod props;
mod s3;
pub mod support;
