//! The in-process log of each turn's frames, which clients attach to and re-attach to.
//!
//! A turn appends every SSE frame it produces to its [`TurnLog`]; the HTTP response of the
//! request that started it, a duplicate of that request and any `threads.resume_stream` are
//! subscribers reading the log from some index on. The turn never waits for a subscriber, so a
//! client that goes away does not stop it (the driver stops a turn left without subscribers for
//! longer than the detach limit, or on an explicit stop).
//!
//! Memory: text deltas are not kept as frames. The log keeps the reply text once and one `u32`
//! per delta (its end offset in the text); delta frames are rebuilt when a subscriber reads them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::{Notify, watch};

use crate::chatkit::{ItemUpdate, StreamEvent};

/// Marks an entry as a text delta (the rest of the bits: its end offset in the text).
const DELTA: u32 = 1 << 31;
/// Frames rendered per read of a subscriber (one write to the socket).
const BATCH: usize = 64;

#[derive(Default)]
struct Inner {
    /// Frames other than text deltas, in order of appearance.
    frames: Vec<Bytes>,
    /// One entry per frame: an index into `frames`, or `DELTA | end` for a text delta.
    entries: Vec<u32>,
    /// The assistant message the deltas belong to.
    item_id: String,
    /// The reply text so far.
    text: String,
    done: bool,
    finished_at: Option<Instant>,
}

/// The frames of one turn.
pub struct TurnLog {
    /// Identifies the turn (sent as `X-Study-Turn-Id`).
    pub turn_id: String,
    /// The user message the turn answers (a duplicate of that request re-attaches here).
    pub origin: Option<String>,
    inner: Mutex<Inner>,
    /// Bumped on every append and at the end; subscribers wait on it.
    version: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    subscribers: AtomicUsize,
    /// Signalled when the last subscriber leaves.
    detached: Notify,
    /// The turn ended with an error event.
    failed: AtomicBool,
}

impl TurnLog {
    fn new(turn_id: String, origin: Option<String>) -> TurnLog {
        TurnLog {
            turn_id,
            origin,
            inner: Mutex::new(Inner::default()),
            version: watch::Sender::new(0),
            stop: watch::Sender::new(false),
            subscribers: AtomicUsize::new(0),
            detached: Notify::new(),
            failed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Append one frame.
    pub fn push(&self, ev: &StreamEvent) {
        let bytes = ev.to_sse();
        let mut g = self.lock();
        if g.done {
            return;
        }
        let idx = u32::try_from(g.frames.len()).unwrap_or(u32::MAX);
        g.frames.push(bytes);
        g.entries.push(idx);
        drop(g);
        self.bump();
    }

    /// Append a text delta of the assistant message `item_id`.
    pub fn push_delta(&self, item_id: &str, delta: &str) {
        let mut g = self.lock();
        if g.done || delta.is_empty() {
            return;
        }
        if g.item_id != item_id {
            g.item_id = item_id.to_string();
        }
        g.text.push_str(delta);
        let end = u32::try_from(g.text.len()).unwrap_or(u32::MAX >> 1) & !DELTA;
        g.entries.push(DELTA | end);
        drop(g);
        self.bump();
    }

    /// The turn produced its last frame.
    pub fn finish(&self) {
        let mut g = self.lock();
        g.done = true;
        g.finished_at = Some(Instant::now());
        g.frames.shrink_to_fit();
        g.entries.shrink_to_fit();
        g.text.shrink_to_fit();
        drop(g);
        self.bump();
    }

    /// Number of frames so far.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True before the first frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the turn ended.
    pub fn is_done(&self) -> bool {
        self.lock().done
    }

    fn finished_before(&self, t: Instant) -> bool {
        self.lock().finished_at.is_some_and(|f| f < t)
    }

    /// Record that the turn ended with an error (a repeated message is then a new attempt).
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// True when the turn ended with an error.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Ask the turn to stop (explicit stop); idempotent.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves when a stop was requested.
    pub async fn stop_requested(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Clients reading the turn right now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::SeqCst)
    }

    /// Resolves when the last subscriber left (a permit is kept if nobody waits yet).
    pub async fn detached(&self) {
        self.detached.notified().await;
    }

    /// The frames from index `from` on, following the turn until it ends. The subscription
    /// counts as attached until the stream is dropped.
    pub fn subscribe(self: &Arc<Self>, from: usize) -> impl Stream<Item = Bytes> + Send + use<> {
        self.reader(from, true)
    }

    /// Like [`TurnLog::subscribe`], but not counted as an attached client (the Redis mirror).
    pub fn subscribe_uncounted(
        self: &Arc<Self>,
        from: usize,
    ) -> impl Stream<Item = Bytes> + Send + use<> {
        self.reader(from, false)
    }

    fn reader(
        self: &Arc<Self>,
        from: usize,
        counted: bool,
    ) -> impl Stream<Item = Bytes> + Send + use<> {
        if counted {
            self.subscribers.fetch_add(1, Ordering::SeqCst);
        }
        let sub = Sub {
            log: self.clone(),
            pos: from,
            last_end: None,
            rx: self.version.subscribe(),
            counted,
        };
        futures::stream::unfold(sub, |mut sub| async move {
            loop {
                sub.rx.borrow_and_update();
                match sub.read() {
                    Read::Bytes(b) => return Some((b, sub)),
                    Read::End => return None,
                    Read::Wait => {
                        if sub.rx.changed().await.is_err() {
                            // The log is gone; drain what is left, then end.
                            return match sub.read() {
                                Read::Bytes(b) => Some((b, sub)),
                                _ => None,
                            };
                        }
                    }
                }
            }
        })
    }
}

enum Read {
    Bytes(Bytes),
    Wait,
    End,
}

struct Sub {
    log: Arc<TurnLog>,
    pos: usize,
    /// End offset of the delta before `pos` (computed on first read).
    last_end: Option<usize>,
    rx: watch::Receiver<u64>,
    counted: bool,
}

impl Sub {
    fn read(&mut self) -> Read {
        let g = self.log.lock();
        if self.pos >= g.entries.len() {
            return if g.done { Read::End } else { Read::Wait };
        }
        let mut last_end = match self.last_end {
            Some(e) => e,
            None => g.entries[..self.pos]
                .iter()
                .rev()
                .find(|e| *e & DELTA != 0)
                .map_or(0, |e| (e & !DELTA) as usize),
        };
        let mut out = BytesMut::new();
        let stop = (self.pos + BATCH).min(g.entries.len());
        for &e in &g.entries[self.pos..stop] {
            if e & DELTA != 0 {
                let end = ((e & !DELTA) as usize).min(g.text.len());
                let delta = g.text.get(last_end..end).unwrap_or_default();
                last_end = end;
                let ev = StreamEvent::ItemUpdated {
                    item_id: g.item_id.clone(),
                    update: ItemUpdate::TextDelta {
                        content_index: 0,
                        delta: delta.to_string(),
                    },
                };
                out.extend_from_slice(&ev.to_sse());
            } else if let Some(f) = g.frames.get(e as usize) {
                out.extend_from_slice(f);
            }
        }
        self.pos = stop;
        self.last_end = Some(last_end);
        Read::Bytes(out.freeze())
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if self.counted && self.log.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.log.detached.notify_one();
        }
    }
}

/// Turns by (user, thread): the latest turn of each thread, kept `retain` after it ended.
pub struct TurnHub {
    turns: Mutex<HashMap<(String, String), Arc<TurnLog>>>,
    retain: Duration,
    last_sweep: Mutex<Instant>,
}

impl TurnHub {
    /// A hub keeping finished turns for `retain` (re-attach after the end, duplicates).
    pub fn new(retain: Duration) -> TurnHub {
        TurnHub {
            turns: Mutex::new(HashMap::new()),
            retain,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(String, String), Arc<TurnLog>>> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a new turn as the thread's latest.
    pub fn start(&self, user: &str, thread: &str, origin: Option<String>) -> Arc<TurnLog> {
        self.sweep();
        let log = Arc::new(TurnLog::new(crate::chatkit::ids::new_id("turn"), origin));
        self.map()
            .insert((user.to_string(), thread.to_string()), log.clone());
        log
    }

    /// The thread's latest turn, if still kept.
    pub fn get(&self, user: &str, thread: &str) -> Option<Arc<TurnLog>> {
        self.map()
            .get(&(user.to_string(), thread.to_string()))
            .cloned()
    }

    /// Turns still running.
    pub fn running(&self) -> usize {
        self.map().values().filter(|l| !l.is_done()).count()
    }

    /// Wait until no turn is running, at most `limit` (graceful shutdown: a turn whose client
    /// already left still finishes and is stored complete). Returns the turns still running.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.running();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Turns kept right now (running or recently finished).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when no turn is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop finished turns older than `retain` (at most every second).
    fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        let Some(cutoff) = now.checked_sub(self.retain) else {
            return;
        };
        self.map().retain(|_, log| !log.finished_before(cutoff));
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::chatkit::StreamOptions;

    fn opts() -> StreamEvent {
        StreamEvent::StreamOptions {
            stream_options: StreamOptions { allow_cancel: true },
        }
    }

    async fn collect(log: &Arc<TurnLog>, from: usize) -> String {
        let s = log.subscribe(from);
        let parts: Vec<Bytes> = s.collect().await;
        parts
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn replays_from_any_index_and_rebuilds_deltas() {
        let hub = TurnHub::new(Duration::from_secs(60));
        let log = hub.start("u", "t", None);
        log.push(&opts());
        log.push_delta("msg_1", "Hi ");
        log.push_delta("msg_1", "there");
        log.finish();
        log.push_delta("msg_1", "ignored");
        let all = collect(&log, 0).await;
        assert!(
            all.starts_with("data: {\"type\":\"stream_options\""),
            "{all}"
        );
        assert!(all.contains("\"delta\":\"Hi \""), "{all}");
        assert!(all.ends_with("\"delta\":\"there\"}}\n\n"), "{all}");
        let tail = collect(&log, 2).await;
        assert_eq!(tail.matches("data: ").count(), 1, "{tail}");
        assert!(tail.contains("\"delta\":\"there\""), "{tail}");
        assert!(collect(&log, 9).await.is_empty());
        assert!(Arc::ptr_eq(&hub.get("u", "t").unwrap(), &log));
        assert!(hub.get("v", "t").is_none());
    }

    #[tokio::test]
    async fn a_subscriber_follows_the_turn_and_detach_is_signalled() {
        let log = Arc::new(TurnLog::new("turn_x".into(), None));
        let mut s = Box::pin(log.subscribe(0));
        assert_eq!(log.subscribers(), 1);
        let l2 = log.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            l2.push_delta("m", "a");
            l2.finish();
        });
        let first = s.next().await.unwrap();
        assert!(String::from_utf8_lossy(&first).contains("\"delta\":\"a\""));
        assert!(s.next().await.is_none());
        writer.await.unwrap();
        drop(s);
        assert_eq!(log.subscribers(), 0);
        tokio::time::timeout(Duration::from_secs(1), log.detached())
            .await
            .expect("detach signalled");
    }
}
