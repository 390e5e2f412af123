//! The cross-replica option for resumable streams: each turn's frames are mirrored to a Redis
//! stream, so a client that re-attaches through another replica (`threads.resume_stream`) gets
//! the frames it missed without a second LLM call, and a stop sent to any replica stops the turn.
//!
//! Keys (all under the configured prefix, expiring `retain` after the turn's last frame):
//! - `latest:{user}:{thread}`: the id of the thread's latest turn;
//! - `turn:{turn_id}`: a Redis stream; each entry is a batch of SSE frames (`f`) with their
//!   count (`n`), and a last entry `end` when the turn finished;
//! - `stop:{turn_id}`: set by a stop request; the replica running the turn polls it.
//!
//! The mirror is written by an extra reader of the in-process [`TurnLog`] (it does not count as
//! an attached client), so the turn itself never waits for Redis; Redis trouble is logged and
//! counted, and the in-process path keeps working.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use redis::Value as RV;
use redis::aio::ConnectionManager;

use super::hub::TurnLog;

/// How often the mirror looks for a stop request and a remote reader for new entries.
const POLL: Duration = Duration::from_millis(100);

/// Redis mirror of turn logs.
pub struct RedisBus {
    cm: ConnectionManager,
    prefix: String,
    retain: Duration,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl RedisBus {
    /// Connect (fails fast when Redis is unreachable).
    pub async fn connect(url: &str, prefix: &str, retain: Duration) -> Result<RedisBus, String> {
        let cm = crate::redis_conn::connect(url).await?;
        Ok(RedisBus {
            cm,
            prefix: prefix.to_string(),
            retain,
        })
    }

    fn latest_key(&self, user: &str, thread: &str) -> String {
        format!("{}latest:{user}:{thread}", self.prefix)
    }
    fn turn_key(&self, turn: &str) -> String {
        format!("{}turn:{turn}", self.prefix)
    }
    fn stop_key(&self, turn: &str) -> String {
        format!("{}stop:{turn}", self.prefix)
    }

    /// Mirror `log` until it ends (spawned; returns at once).
    pub fn publish(self: &Arc<Self>, user: &str, thread: &str, log: Arc<TurnLog>) {
        let bus = self.clone();
        let latest = self.latest_key(user, thread);
        tokio::spawn(async move {
            if let Err(e) = bus.mirror(&latest, &log).await {
                metrics::counter!("study_stream_bus_errors_total").increment(1);
                tracing::warn!(error = %e, turn = %log.turn_id, "mirroring a turn to Redis failed; it can be resumed on this replica only");
            }
        });
    }

    async fn mirror(&self, latest: &str, log: &Arc<TurnLog>) -> Result<(), redis::RedisError> {
        let mut cm = self.cm.clone();
        let key = self.turn_key(&log.turn_id);
        let stop = self.stop_key(&log.turn_id);
        let ttl = secs(self.retain) + 3600;
        redis::cmd("SET")
            .arg(latest)
            .arg(&log.turn_id)
            .arg("EX")
            .arg(ttl)
            .query_async::<()>(&mut cm)
            .await?;
        let mut frames = Box::pin(log.subscribe_uncounted(0));
        loop {
            let next = tokio::select! {
                b = frames.next() => Some(b),
                _ = tokio::time::sleep(POLL * 5) => None,
            };
            match next {
                Some(Some(batch)) => {
                    let n = batch.windows(2).filter(|w| w == b"\n\n").count();
                    redis::pipe()
                        .cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("f")
                        .arg(batch.as_ref())
                        .arg("n")
                        .arg(n)
                        .ignore()
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(ttl)
                        .ignore()
                        .query_async::<()>(&mut cm)
                        .await?;
                }
                Some(None) => break,
                None => {}
            }
            if !log.is_done() {
                let stopped: Option<String> =
                    redis::cmd("GET").arg(&stop).query_async(&mut cm).await?;
                if stopped.is_some() {
                    log.request_stop();
                }
            }
        }
        let ttl = secs(self.retain);
        redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("end")
            .arg(1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl)
            .ignore()
            .cmd("EXPIRE")
            .arg(latest)
            .arg(ttl)
            .ignore()
            .query_async::<()>(&mut cm)
            .await
    }

    /// The thread's latest turn known to Redis.
    pub async fn latest(&self, user: &str, thread: &str) -> Result<Option<String>, String> {
        let mut cm = self.cm.clone();
        redis::cmd("GET")
            .arg(self.latest_key(user, thread))
            .query_async(&mut cm)
            .await
            .map_err(|e| format!("Redis GET failed: {e}"))
    }

    /// Ask the replica running `turn` to stop it.
    pub async fn request_stop(&self, turn: &str) -> Result<(), String> {
        let mut cm = self.cm.clone();
        redis::cmd("SET")
            .arg(self.stop_key(turn))
            .arg(1)
            .arg("EX")
            .arg(secs(self.retain))
            .query_async::<()>(&mut cm)
            .await
            .map_err(|e| format!("Redis SET failed: {e}"))
    }

    /// The mirrored frames of `turn` from index `after` on, following it until its end entry
    /// (or until the stream expires).
    pub fn subscribe(
        self: &Arc<Self>,
        turn: &str,
        after: usize,
    ) -> impl Stream<Item = Bytes> + Send + use<> {
        struct St {
            bus: Arc<RedisBus>,
            key: String,
            last: String,
            skip: usize,
            done: bool,
        }
        let st = St {
            bus: self.clone(),
            key: self.turn_key(turn),
            last: "-".into(),
            skip: after,
            done: false,
        };
        futures::stream::unfold(st, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                let mut cm = st.bus.cm.clone();
                let start = if st.last == "-" {
                    "-".to_string()
                } else {
                    format!("({}", st.last)
                };
                let reply: Result<RV, _> = redis::cmd("XRANGE")
                    .arg(&st.key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(64)
                    .query_async(&mut cm)
                    .await;
                let entries = match reply {
                    Ok(v) => parse_entries(v),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a mirrored turn failed");
                        return None;
                    }
                };
                if entries.is_empty() {
                    let exists: i64 = redis::cmd("EXISTS")
                        .arg(&st.key)
                        .query_async(&mut cm)
                        .await
                        .unwrap_or(0);
                    if exists == 0 {
                        return None;
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                let mut out = BytesMut::new();
                for (id, fields) in entries {
                    st.last = id;
                    if fields.iter().any(|(k, _)| k == b"end") {
                        st.done = true;
                        break;
                    }
                    if let Some((_, f)) = fields.iter().find(|(k, _)| k == b"f") {
                        append_frames(&mut out, f, &mut st.skip);
                    }
                }
                if !out.is_empty() {
                    return Some((out.freeze(), st));
                }
            }
        })
    }
}

/// Append the frames of `batch` to `out`, dropping the first `skip` of them.
fn append_frames(out: &mut BytesMut, batch: &[u8], skip: &mut usize) {
    let mut rest = batch;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |p| p + 2);
        if *skip > 0 {
            *skip -= 1;
        } else {
            out.extend_from_slice(&rest[..end]);
        }
        rest = &rest[end..];
    }
}

type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// `[[id, [field, value, …]], …]` from XRANGE.
fn parse_entries(v: RV) -> Vec<Entry> {
    let bytes = |v: &RV| match v {
        RV::BulkString(b) => Some(b.clone()),
        RV::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let RV::Array(items) = v else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| {
            let RV::Array(pair) = e else { return None };
            let id = String::from_utf8(bytes(pair.first()?)?).ok()?;
            let RV::Array(kv) = pair.get(1)? else {
                return None;
            };
            let fields = kv
                .chunks(2)
                .filter_map(|c| Some((bytes(c.first()?)?, bytes(c.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_skipped_one_by_one() {
        let mut out = BytesMut::new();
        let mut skip = 1;
        append_frames(
            &mut out,
            b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\n",
            &mut skip,
        );
        assert_eq!(&out[..], b"data: {\"b\":2}\n\n");
        assert_eq!(skip, 0);
        let mut skip = 5;
        let mut out = BytesMut::new();
        append_frames(&mut out, b"data: 1\n\ndata: 2\n\n", &mut skip);
        assert!(out.is_empty());
        assert_eq!(skip, 3);
    }
}
