//! Commit fault injection for the fault tests: make the database commit fail, or the process
//! "crash" right after a commit. Only with the `test-support` feature (the crate's own tests turn
//! it on); otherwise `Faults` is an inert type nobody can construct, so `EngineConfig::faults` is
//! always `None` and the release binary carries no way to inject anything.

#[cfg(feature = "test-support")]
pub use enabled::Faults;

#[cfg(not(feature = "test-support"))]
pub use disabled::Faults;

#[cfg(feature = "test-support")]
mod enabled {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::error::{PfsError, Result};

    /// Test hooks that make the database commit fail or the process "crash" right after a commit.
    /// Shared (`Arc`); costs one `Option` check when absent.
    #[derive(Debug, Default)]
    pub struct Faults {
        fail_commits_next: AtomicU64,
        fail_commit_ppm: AtomicU64,
        crash_next: AtomicU64,
        crash_ppm: AtomicU64,
        injected_commit_failures: AtomicU64,
        injected_crashes: AtomicU64,
    }

    fn take_or_roll(next: &AtomicU64, ppm: &AtomicU64) -> bool {
        next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
            || {
                let p = ppm.load(Ordering::Relaxed);
                p > 0 && rand::random_range(0..1_000_000u64) < p
            }
    }

    impl Faults {
        /// No faults until configured.
        pub fn new() -> Arc<Faults> {
            Arc::new(Faults::default())
        }
        /// Fail the next `n` commits (the transaction is rolled back).
        pub fn fail_next_commits(&self, n: u64) {
            self.fail_commits_next.store(n, Ordering::SeqCst);
        }
        /// Fail a random fraction of commits.
        pub fn set_commit_failure_rate(&self, f: f64) {
            self.fail_commit_ppm
                .store((f.clamp(0.0, 1.0) * 1e6) as u64, Ordering::SeqCst);
        }
        /// Return right after the next `n` commits without materializing ("crash").
        pub fn crash_next_after_commit(&self, n: u64) {
            self.crash_next.store(n, Ordering::SeqCst);
        }
        /// "Crash" after a random fraction of commits.
        pub fn set_crash_after_commit_rate(&self, f: f64) {
            self.crash_ppm
                .store((f.clamp(0.0, 1.0) * 1e6) as u64, Ordering::SeqCst);
        }
        /// Stop injecting.
        pub fn disable(&self) {
            for a in [
                &self.fail_commits_next,
                &self.fail_commit_ppm,
                &self.crash_next,
                &self.crash_ppm,
            ] {
                a.store(0, Ordering::SeqCst);
            }
        }
        /// Injected (commit failures, crashes) so far.
        pub fn injected(&self) -> (u64, u64) {
            (
                self.injected_commit_failures.load(Ordering::SeqCst),
                self.injected_crashes.load(Ordering::SeqCst),
            )
        }
        pub(crate) fn before_commit(&self) -> Result<()> {
            if take_or_roll(&self.fail_commits_next, &self.fail_commit_ppm) {
                self.injected_commit_failures.fetch_add(1, Ordering::SeqCst);
                return Err(PfsError::Internal(
                    "injected commit failure (test fault)".into(),
                ));
            }
            Ok(())
        }
        pub(crate) fn after_commit_crash(&self) -> bool {
            let crash = take_or_roll(&self.crash_next, &self.crash_ppm);
            if crash {
                self.injected_crashes.fetch_add(1, Ordering::SeqCst);
            }
            crash
        }
    }
}

#[cfg(not(feature = "test-support"))]
mod disabled {
    use crate::error::Result;

    /// Fault injection is compiled out (feature `test-support` off): no value of this type can
    /// be made.
    #[derive(Debug)]
    pub struct Faults {
        _none: std::convert::Infallible,
    }

    impl Faults {
        pub(crate) fn before_commit(&self) -> Result<()> {
            match self._none {}
        }
        pub(crate) fn after_commit_crash(&self) -> bool {
            match self._none {}
        }
    }
}
