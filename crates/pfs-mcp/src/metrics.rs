//! Prometheus metrics recorded by the MCP layer (names from the spec).

use std::time::Duration;

/// Count one tool call and record its duration. `status` is `ok` or the error code.
pub fn tool_call(tool: &'static str, status: &'static str, elapsed: Duration) {
    metrics::counter!("panaversityfs_tool_calls_total", "tool" => tool, "status" => status)
        .increment(1);
    metrics::histogram!("panaversityfs_tool_duration_seconds", "tool" => tool)
        .record(elapsed.as_secs_f64());
}

/// Record one archive download: `panaversityfs_archive_total{scope,status}`,
/// `panaversityfs_archive_duration_seconds{scope}` and the memory the archive held at its peak
/// (prepared entries plus the pipe, measured) in `panaversityfs_archive_memory_bytes`.
pub fn archive(scope: &'static str, status: &'static str, elapsed: Duration, memory_bytes: u64) {
    metrics::counter!("panaversityfs_archive_total", "scope" => scope, "status" => status)
        .increment(1);
    metrics::histogram!("panaversityfs_archive_duration_seconds", "scope" => scope)
        .record(elapsed.as_secs_f64());
    metrics::gauge!("panaversityfs_archive_memory_bytes").set(memory_bytes as f64);
}

/// Entries whose stored form came from the cache or was computed
/// (`panaversityfs_archive_entries_total{stream=cached|computed}`).
pub fn archive_cache(hits: usize, misses: usize) {
    metrics::counter!("panaversityfs_archive_entries_total", "stream" => "cached")
        .increment(hits as u64);
    metrics::counter!("panaversityfs_archive_entries_total", "stream" => "computed")
        .increment(misses as u64);
}

/// Record the size of a computed delta (`panaversityfs_delta_files_count`).
pub fn delta_files(count: usize) {
    metrics::gauge!("panaversityfs_delta_files_count").set(count as f64);
}

/// Record an overlay read's latency (`panaversityfs_overlay_latency_seconds`).
pub fn overlay_read(elapsed: Duration) {
    metrics::histogram!("panaversityfs_overlay_latency_seconds").record(elapsed.as_secs_f64());
}

/// A retried call answered from its first outcome (see [`crate::replay`]).
pub fn replayed() {
    metrics::counter!("panaversityfs_requests_replayed_total").increment(1);
}
