//! The archive's compression threads: a fixed pool (one thread per core) where every miss is
//! verified and deflated, each thread with one libdeflate compressor and one output buffer that
//! it keeps. Per-entry compressor state and output buffers allocated on the blocking pool's
//! many threads and freed on the async workers made the process peak grow far beyond what an
//! archive holds; here the big buffers live and die on a few known threads, and the stream handed
//! back is an exact-size copy.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use bytes::Bytes;

use super::{LEVEL, Method, StreamInfo};

type Job = Box<dyn FnOnce() + Send>;

/// Run on a compression thread after every [`TIDY_EVERY`] jobs (see [`set_tidy_hook`]).
static TIDY: OnceLock<fn()> = OnceLock::new();

/// Jobs between two calls of the tidy hook on one thread.
const TIDY_EVERY: u32 = 16;

/// Give the compression threads a function to call every few jobs, on their own thread: the
/// binary passes its allocator's "return this thread's freed memory now" (mimalloc keeps freed
/// pages for a while, and the buffers a compression thread allocates are freed by other
/// threads). Set once, before the first archive; later calls are ignored.
pub fn set_tidy_hook(hook: fn()) {
    let _ = TIDY.set(hook);
}

/// A thread's output buffer is kept up to this capacity (larger entries get a one-off buffer).
const KEEP_BUFFER: usize = 1 << 20;

struct Pool {
    tx: Mutex<mpsc::Sender<Job>>,
}

/// The pool, or `None` when its threads could not be started (then work runs on the blocking
/// pool, as correct but with the allocation pattern the pool exists to avoid).
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pfs-deflate-{i}"))
                .spawn(move || {
                    let mut done = 0u32;
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                        done = done.wrapping_add(1);
                        if done.is_multiple_of(TIDY_EVERY)
                            && let Some(tidy) = TIDY.get()
                        {
                            tidy();
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "archive: could not start a compression thread");
                return None;
            }
        }
        Some(Pool { tx: Mutex::new(tx) })
    })
    .as_ref()
}

/// Run `f` on a compression thread and wait for it.
pub(super) async fn run<R, F>(f: F) -> Result<R, String>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let Some(pool) = pool() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| format!("preparing failed: {e}"));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let sent = match pool.tx.lock() {
        Ok(s) => s.send(job),
        Err(poisoned) => poisoned.into_inner().send(job),
    };
    sent.map_err(|_| "the compression threads stopped".to_string())?;
    rx.await
        .map_err(|_| "preparing failed: a compression job panicked".to_string())
}

thread_local! {
    static STATE: RefCell<Option<(libdeflater::Compressor, Vec<u8>)>> = const { RefCell::new(None) };
}

/// Deflate `raw` (raw DEFLATE, libdeflate at [`LEVEL`]): its stored form and an exact-size copy
/// of the stream. On a compression thread the compressor and buffer are reused.
pub(super) fn deflate(raw: &[u8]) -> Result<(StreamInfo, Bytes), String> {
    let level =
        libdeflater::CompressionLvl::new(LEVEL).map_err(|e| format!("compression level: {e:?}"))?;
    STATE.with(|cell| {
        let mut state = cell.borrow_mut();
        let (compressor, buf) =
            state.get_or_insert_with(|| (libdeflater::Compressor::new(level), Vec::new()));
        let bound = compressor.deflate_compress_bound(raw.len());
        let mut one_off = Vec::new();
        let out = if bound <= KEEP_BUFFER {
            if buf.len() < bound {
                buf.resize(bound, 0);
            }
            &mut buf[..bound]
        } else {
            one_off.resize(bound, 0);
            &mut one_off[..]
        };
        let n = compressor
            .deflate_compress(raw, out)
            .map_err(|e| format!("deflate failed: {e:?}"))?;
        Ok((
            StreamInfo {
                method: Method::Deflate,
                crc32: crc32fast::hash(raw),
                compressed_size: n as u64,
            },
            Bytes::copy_from_slice(&out[..n]),
        ))
    })
}
