//! A small pool of low-priority threads for CPU-bound scans (`grep_search`). Jobs never run on
//! the async workers; the threads run at a lower scheduling priority (nice 10 on Linux) so
//! request handling — `/health` included — keeps its latency while a scan runs; and at most one
//! job per thread runs at a time. A job holds a permit for as long as its thread works on it, so
//! a request that gave up waiting (deadline, client gone) never lets more scans pile up than the
//! pool has threads.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pool; cheap to clone.
#[derive(Clone)]
pub struct ScanPool {
    tx: mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for ScanPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanPool")
            .field("free", &self.permits.available_permits())
            .finish()
    }
}

/// Lower the calling thread's priority (Linux: per-thread nice value).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own thread id.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10)
        };
        if rc != 0 {
            tracing::debug!("cannot lower the scan thread's priority");
        }
    }
}

impl ScanPool {
    /// A pool of `threads` (at least 1) scan threads.
    pub fn new(threads: usize) -> ScanPool {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pfs-scan-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a scan thread");
            }
        }
        ScanPool {
            tx,
            permits: Arc::new(Semaphore::new(threads)),
        }
    }

    /// Wait for a free thread (until `deadline`). `None` when none came free in time.
    pub async fn slot(&self, deadline: std::time::Instant) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Run `f` on a scan thread, holding `slot` until it returns. The receiver yields the result
    /// (or an error if the pool is gone).
    pub fn run<T, F>(&self, slot: OwnedSemaphorePermit, f: F) -> oneshot::Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = f();
            drop(slot);
            let _ = tx.send(out);
        });
        if self.tx.send(job).is_err() {
            tracing::error!("the scan pool is gone");
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn jobs_run_off_the_runtime_and_hold_their_slot() {
        let pool = ScanPool::new(1);
        let slot = pool
            .slot(Instant::now() + Duration::from_secs(1))
            .await
            .unwrap();
        let caller = std::thread::current().id();
        let rx = pool.run(slot, move || {
            std::thread::sleep(Duration::from_millis(200));
            std::thread::current().id() != caller
        });
        // The only thread is busy: no slot within 50 ms.
        assert!(
            pool.slot(Instant::now() + Duration::from_millis(50))
                .await
                .is_none()
        );
        assert!(rx.await.unwrap(), "ran on the caller's thread");
        assert!(
            pool.slot(Instant::now() + Duration::from_millis(50))
                .await
                .is_some()
        );
    }
}
