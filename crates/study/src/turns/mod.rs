//! Turns that outlive their HTTP request: crash-safe replies and resumable streams.
//!
//! A streaming ChatKit request starts a turn: a spawned [`driver::TurnDriver`] that writes to the
//! store and appends frames to a [`hub::TurnLog`]. The HTTP response is one subscriber of that
//! log; `threads.resume_stream` (and a duplicate of the request) are others. See the README's
//! "Study Mode" section for the client side.

pub mod bus;
pub mod driver;
pub mod hub;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

pub use bus::RedisBus;
pub use driver::{StreamPlan, TurnContext, TurnDriver, stream_error};
pub use hub::{TurnHub, TurnLog};

use crate::store::ThreadStore;
use crate::turn::Tutor;

/// How turns checkpoint and how long they run and are kept without a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Longest time received reply text stays unsaved.
    pub checkpoint_interval: Duration,
    /// Unsaved reply bytes that force a checkpoint before the interval ends.
    pub checkpoint_bytes: usize,
    /// A turn with no client attached for this long is stopped (its partial reply is kept).
    pub detached_limit: Duration,
    /// How long a finished turn can still be re-attached to.
    pub retain: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            checkpoint_interval: Duration::from_millis(250),
            checkpoint_bytes: 2048,
            detached_limit: Duration::from_secs(120),
            retain: Duration::from_secs(120),
        }
    }
}

/// Start a turn for `plan` on the hub and return a subscription from its first frame (taken
/// before the driver runs, so the request's own client counts as attached from the start).
#[allow(clippy::too_many_arguments)]
pub fn spawn_turn(
    hub: &TurnHub,
    bus: Option<&Arc<RedisBus>>,
    store: ThreadStore,
    tutor: Arc<dyn Tutor>,
    ctx: TurnContext,
    settings: StreamSettings,
    plan: StreamPlan,
    origin: Option<String>,
) -> (Arc<TurnLog>, impl Stream<Item = Bytes> + Send + use<>) {
    let log = hub.start(&ctx.owner.user_id, &plan.thread.meta.id, origin);
    let sub = log.subscribe(0);
    if let Some(bus) = bus {
        bus.publish(&ctx.owner.user_id, &plan.thread.meta.id, log.clone());
    }
    let driver = TurnDriver {
        store,
        tutor,
        ctx,
        log: log.clone(),
        settings,
    };
    let watch = log.clone();
    tokio::spawn(async move {
        metrics::gauge!("study_streams_active").increment(1.0);
        let result = tokio::spawn(driver.run(plan)).await;
        metrics::gauge!("study_streams_active").decrement(1.0);
        if let Err(e) = result
            && e.is_panic()
        {
            metrics::counter!("study_turns_total", "outcome" => "panicked").increment(1);
            tracing::error!("study turn panicked");
            watch.push(&stream_error());
            watch.finish();
        }
    });
    (log, sub)
}
