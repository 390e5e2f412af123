//! Runs one streaming request: owns every store write and appends frames to the turn's log.
//!
//! The reply is durable from its first token: the assistant item is inserted (`streaming`) before
//! `thread.item.added` is logged, then rewritten whenever [`StreamSettings::checkpoint_interval`]
//! has passed or [`StreamSettings::checkpoint_bytes`] arrived since the last write, and refreshed
//! every third of the stream lease while the model is silent. The driver never waits for a
//! client: it stops on an explicit stop, or when no client has been attached for
//! [`StreamSettings::detached_limit`].

use std::sync::Arc;

use futures::StreamExt;
use tokio::time::Instant;

use super::StreamSettings;
use super::hub::TurnLog;
use crate::chatkit::ids::{self, new_id};
use crate::chatkit::types::user_text;
use crate::chatkit::{
    AssistantContent, ItemBody, ItemUpdate, Page, StreamEvent, StreamOptions, Thread, ThreadItem,
    Timestamp,
};
use crate::server::{HISTORY_ITEMS, TITLE_TIMEOUT, TUTOR_IDLE_TIMEOUT, fallback_title};
use crate::store::{Owner, StoreError, StoredThread, StreamState, ThreadStore};
use crate::turn::{HistoryMessage, Mode, Role, TurnInput, Tutor, TutorEvent};

/// The request context a turn needs.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub owner: Owner,
    pub user_name: Option<String>,
    pub lesson_path: Option<String>,
    pub selected_text: Option<String>,
}

/// What a streaming request does once its checks and writes have succeeded.
pub struct StreamPlan {
    pub thread: StoredThread,
    /// Events before `stream_options` (thread.created, the user message).
    pub prelude: Vec<StreamEvent>,
    /// Events right after `stream_options` (replaced items, an unsupported-action error).
    pub after_options: Vec<StreamEvent>,
    /// The user message the tutor answers, if any.
    pub user_item: Option<ThreadItem>,
}

/// One turn's driver.
pub struct TurnDriver {
    pub store: ThreadStore,
    pub tutor: Arc<dyn Tutor>,
    pub ctx: TurnContext,
    pub log: Arc<TurnLog>,
    pub settings: StreamSettings,
}

/// The assistant message being streamed and its checkpoint bookkeeping.
struct Pending {
    id: String,
    created_at: Timestamp,
    text: String,
    /// Bytes of `text` already written.
    saved: usize,
    last_write: Instant,
}

/// Why the loop over the tutor's events ended.
enum End {
    Completed,
    Failed(String, bool),
    /// Explicit stop or nobody attached for too long.
    Stopped(&'static str),
}

impl TurnDriver {
    /// Run the request to its end, then mark the log finished.
    pub async fn run(self, plan: StreamPlan) {
        for ev in &plan.prelude {
            self.log.push(ev);
        }
        self.log.push(&StreamEvent::StreamOptions {
            stream_options: StreamOptions { allow_cancel: true },
        });
        for ev in &plan.after_options {
            self.log.push(ev);
        }
        if let Some(user_item) = plan.user_item {
            self.turn(plan.thread, user_item).await;
        }
        self.log.finish();
    }

    fn history(items: &[ThreadItem]) -> Vec<HistoryMessage> {
        items
            .iter()
            .filter_map(|i| {
                let role = match &i.body {
                    ItemBody::UserMessage { .. } => Role::User,
                    ItemBody::AssistantMessage { .. } => Role::Assistant,
                    _ => return None,
                };
                Some(HistoryMessage {
                    role,
                    text: i.message_text().unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn turn(&self, thread: StoredThread, user_item: ThreadItem) {
        let owner = &self.ctx.owner;
        let thread_id = thread.meta.id.clone();
        let history_items = match self
            .store
            .recent_items(owner, &thread_id, Some(&user_item), HISTORY_ITEMS)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, thread = %thread_id, "loading history failed");
                self.log.mark_failed();
                self.log.push(&stream_error());
                return;
            }
        };
        let (text, model) = match &user_item.body {
            ItemBody::UserMessage {
                content,
                inference_options,
                ..
            } => (user_text(content), inference_options.model.clone()),
            _ => (String::new(), None),
        };
        let input = TurnInput {
            thread_id: thread_id.clone(),
            user_id: owner.user_id.clone(),
            mode: Mode::from_model(model.as_deref()),
            lesson_path: self.ctx.lesson_path.clone(),
            user_name: self.ctx.user_name.clone(),
            selected_text: self.ctx.selected_text.clone(),
            user_text: text,
            history: Self::history(&history_items),
            state: thread.tutor_state.clone(),
        };

        // The title is generated alongside the answer, on the first turn only.
        let title_task = (thread.meta.title.is_none() && !thread.title_set_by_user).then(|| {
            let tutor = self.tutor.clone();
            let input = input.clone();
            AbortOnDrop(tokio::spawn(async move {
                let generated = tokio::time::timeout(TITLE_TIMEOUT, tutor.title(&input))
                    .await
                    .ok()
                    .flatten()
                    .filter(|t| !t.trim().is_empty());
                generated.unwrap_or_else(|| fallback_title(&input.user_text))
            }))
        });

        if self.ctx.lesson_path.is_some() {
            self.log.push(&StreamEvent::ProgressUpdate {
                icon: Some("search".into()),
                text: "Loading lesson...".into(),
            });
        }

        let mut pending: Option<Pending> = None;
        let end = self.stream_reply(input, &thread_id, &mut pending).await;

        // The final write of the reply, then its last events.
        if let Some(p) = pending {
            let state = match &end {
                End::Completed | End::Stopped(_) => StreamState::Complete,
                End::Failed(..) => StreamState::Incomplete,
            };
            let item = assistant_item(&thread_id, &p, Some(&p.text));
            if let Err(e) = self.store.checkpoint_reply(owner, &item, state).await {
                tracing::error!(error = %e, thread = %thread_id, "saving the assistant message failed");
                self.log.mark_failed();
                self.log.push(&stream_error());
                return;
            }
            self.log.push(&StreamEvent::ItemUpdated {
                item_id: p.id.clone(),
                update: ItemUpdate::ContentPartDone {
                    content_index: 0,
                    content: AssistantContent::text(p.text.clone()),
                },
            });
            self.log.push(&StreamEvent::ItemDone { item });
        }
        if let End::Stopped(why) = end {
            metrics::counter!("study_turns_total", "outcome" => "stopped").increment(1);
            tracing::info!(thread = %thread_id, why, "turn stopped; partial answer saved");
            return;
        }

        if let Some(task) = title_task {
            self.save_title(&thread_id, task).await;
        }

        let outcome = if matches!(end, End::Failed(..)) {
            "failed"
        } else {
            "completed"
        };
        metrics::counter!("study_turns_total", "outcome" => outcome).increment(1);
        if let End::Failed(message, allow_retry) = end {
            self.log.mark_failed();
            tracing::warn!(thread = %thread_id, error = %message, "tutor turn failed");
            self.log.push(&StreamEvent::Error {
                code: "custom".into(),
                message: Some(message),
                allow_retry,
            });
        }
    }

    async fn save_title(&self, thread_id: &str, mut task: AbortOnDrop<String>) {
        let owner = &self.ctx.owner;
        match (&mut task.0).await {
            Ok(title) => match self.store.set_title(owner, thread_id, &title, false).await {
                Ok(t) if t.meta.title.as_deref() == Some(title.as_str()) => {
                    self.log.push(&StreamEvent::ThreadUpdated {
                        thread: Thread::from_metadata(&t.meta, Page::default()),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, thread = %thread_id, "saving the title failed")
                }
            },
            Err(e) => tracing::warn!(error = %e, "title task failed"),
        }
    }

    /// Consume the tutor's events, checkpointing the reply, until it ends or is stopped.
    async fn stream_reply(
        &self,
        input: TurnInput,
        thread_id: &str,
        pending: &mut Option<Pending>,
    ) -> End {
        let log = &self.log;
        let s = &self.settings;
        let heartbeat = self.store.stream_lease() / 3;
        let mut detach_at: Option<Instant> = None;
        let far = || Instant::now() + std::time::Duration::from_secs(86_400);

        let mut stream = tokio::select! {
            biased;
            _ = log.stop_requested() => return End::Stopped("stop requested"),
            r = tokio::time::timeout(TUTOR_IDLE_TIMEOUT, self.tutor.respond(input)) => match r {
                Ok(s) => s,
                Err(_) => return End::Failed("The tutor did not start answering. Please try again.".into(), true),
            },
        };
        if log.subscribers() == 0 {
            detach_at = Some(Instant::now() + s.detached_limit);
        }
        loop {
            // When the reply has unsaved text: its checkpoint deadline; else its heartbeat.
            let write_at = pending.as_ref().map(|p| {
                if p.text.len() > p.saved {
                    p.last_write + s.checkpoint_interval
                } else {
                    p.last_write + heartbeat
                }
            });
            let next = tokio::select! {
                biased;
                _ = log.stop_requested() => return End::Stopped("stop requested"),
                _ = log.detached() => {
                    if log.subscribers() == 0 {
                        detach_at = Some(Instant::now() + s.detached_limit);
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(detach_at.unwrap_or_else(far)), if detach_at.is_some() => {
                    if log.subscribers() == 0 {
                        return End::Stopped("no client attached within the detach limit");
                    }
                    detach_at = None;
                    continue;
                }
                _ = tokio::time::sleep_until(write_at.unwrap_or_else(far)), if write_at.is_some() => {
                    if let Some(p) = pending.as_mut()
                        && let Err(e) = self.write_checkpoint(thread_id, p).await
                    {
                        return self.checkpoint_failed(thread_id, e);
                    }
                    continue;
                }
                n = tokio::time::timeout(TUTOR_IDLE_TIMEOUT, stream.next()) => n,
            };
            match next {
                Err(_) => {
                    return End::Failed(
                        "The tutor stopped responding. Please try again.".into(),
                        true,
                    );
                }
                Ok(None) => return End::Completed,
                Ok(Some(TutorEvent::TextDelta(delta))) => {
                    if delta.is_empty() {
                        continue;
                    }
                    if let Err(e) = self.on_delta(thread_id, pending, delta).await {
                        return self.checkpoint_failed(thread_id, e);
                    }
                }
                Ok(Some(TutorEvent::State(state))) => {
                    if let Err(e) = self
                        .store
                        .save_tutor_state(&self.ctx.owner, thread_id, &state)
                        .await
                    {
                        tracing::error!(error = %e, thread = %thread_id, "saving tutor state failed");
                        return End::Failed(
                            "Your progress could not be saved. Please try again.".into(),
                            true,
                        );
                    }
                }
                Ok(Some(TutorEvent::Notice { level, message })) => {
                    log.push(&StreamEvent::Notice {
                        level,
                        message,
                        title: None,
                    });
                }
                Ok(Some(TutorEvent::Error {
                    message,
                    allow_retry,
                })) => return End::Failed(message, allow_retry),
            }
        }
    }

    fn checkpoint_failed(&self, thread_id: &str, e: StoreError) -> End {
        tracing::error!(error = %e, thread = %thread_id, "checkpointing the reply failed");
        End::Failed(
            "Your answer could not be saved. Please try again.".into(),
            true,
        )
    }

    /// A text delta: the first one inserts the reply, later ones are logged and checkpointed when
    /// enough text is unsaved.
    async fn on_delta(
        &self,
        thread_id: &str,
        pending: &mut Option<Pending>,
        delta: String,
    ) -> Result<(), StoreError> {
        let Some(p) = pending.as_mut() else {
            let p = Pending {
                id: new_id(ids::MESSAGE),
                created_at: Timestamp::now(),
                text: delta,
                saved: 0,
                last_write: Instant::now(),
            };
            let item = assistant_item(thread_id, &p, Some(&p.text));
            self.store.begin_reply(&self.ctx.owner, &item).await?;
            let p = pending.insert(p);
            p.saved = p.text.len();
            p.last_write = Instant::now();
            metrics::counter!("study_reply_checkpoints_total").increment(1);
            self.log.push(&StreamEvent::ItemAdded {
                item: assistant_item(thread_id, p, None),
            });
            self.log.push(&StreamEvent::ItemUpdated {
                item_id: p.id.clone(),
                update: ItemUpdate::ContentPartAdded {
                    content_index: 0,
                    content: AssistantContent::text(""),
                },
            });
            self.log.push_delta(&p.id, &p.text);
            return Ok(());
        };
        p.text.push_str(&delta);
        self.log.push_delta(&p.id, &delta);
        if p.text.len() - p.saved >= self.settings.checkpoint_bytes {
            self.write_checkpoint(thread_id, p).await?;
        }
        Ok(())
    }

    /// Write the reply's unsaved text, or refresh its lease when everything is saved.
    async fn write_checkpoint(&self, thread_id: &str, p: &mut Pending) -> Result<(), StoreError> {
        if p.text.len() > p.saved {
            let item = assistant_item(thread_id, p, Some(&p.text));
            self.store
                .checkpoint_reply(&self.ctx.owner, &item, StreamState::Streaming)
                .await?;
            metrics::counter!("study_reply_checkpoints_total").increment(1);
            p.saved = p.text.len();
        } else {
            let item = assistant_item(thread_id, p, None);
            self.store.touch_reply(&self.ctx.owner, &item).await?;
        }
        p.last_write = Instant::now();
        Ok(())
    }
}

/// Aborts a spawned task when dropped (a stopped turn does not wait for its title).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The generic retryable stream error.
pub fn stream_error() -> StreamEvent {
    StreamEvent::Error {
        code: "stream.error".into(),
        message: None,
        allow_retry: true,
    }
}

fn assistant_item(thread_id: &str, p: &Pending, text: Option<&str>) -> ThreadItem {
    ThreadItem {
        id: p.id.clone(),
        thread_id: thread_id.to_string(),
        created_at: p.created_at,
        body: ItemBody::AssistantMessage {
            content: text
                .map(|t| vec![AssistantContent::text(t)])
                .unwrap_or_default(),
        },
    }
}
