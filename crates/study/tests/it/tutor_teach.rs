//! The tutor (teach and ask modes) against a scripted fake LLM.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use study::lessons::{CacheConfig, LessonService, LocalDocsSource};
use study::llm::{LlmClient, LlmConfig};
use study::turn::{HistoryMessage, Mode, NoticeLevel, Role, TurnInput, Tutor, TutorEvent};
use study::tutor::prompts::{ASKER, CHECK_GENERATOR, JUDGE, TEACHER};
use study::tutor::{StudyTutor, TutorConfig};

use crate::fake_llm::{self, FakeLlm, Step};

pub const KEY1: &str = "Each value has exactly one owner";
pub const KEY2: &str = "Borrowing lends access without moving ownership";
pub const KEY3: &str = "Lifetimes keep references from outliving data";

pub fn lesson_text() -> String {
    let para = |topic: &str| {
        format!(
            "This part explains {topic} carefully with a worked example and enough prose to be a \
             teaching unit of its own, so that the tutor has something real to present to the student.\n"
        )
    };
    format!(
        "---\ntitle: Ownership in Rust\n---\nimport X from '@site/x';\n\n## Owners\n\n{}\n```rust\n## not a heading\nlet s = String::new();\n```\n\n## Borrowing\n\n{}\n## Lifetimes\n\n{}",
        para("owners"),
        para("borrowing"),
        para("lifetimes")
    )
}

pub struct Env {
    pub llm: FakeLlm,
    pub tutor: StudyTutor,
    pub _dir: tempfile::TempDir,
}

pub async fn env(max_attempts: u32) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("01-Rust/02-ownership.md");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, lesson_text()).unwrap();
    let src = Arc::new(LocalDocsSource::new(dir.path()).unwrap());
    let lessons = Arc::new(LessonService::new(src, CacheConfig::memory()));
    let llm = fake_llm::start(vec![]).await;
    let client = LlmClient::new(LlmConfig {
        base_url: llm.base_url.clone(),
        api_key: Some("k".into()),
        teach_model: "teach-model".into(),
        ask_model: "ask-model".into(),
        max_retries: 0,
        first_token_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        ..LlmConfig::default()
    })
    .unwrap();
    let tutor = StudyTutor::with_config(
        lessons,
        Some(client),
        TutorConfig {
            max_attempts,
            ..TutorConfig::default()
        },
    );
    Env {
        llm,
        tutor,
        _dir: dir,
    }
}

fn system_of(body: &Value) -> String {
    body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn sys_starts(prefix: &'static str) -> impl Fn(&Value) -> bool + Send + Sync + 'static {
    move |b: &Value| system_of(b).starts_with(prefix)
}

/// Script the knowledge-check generator's next answer.
pub fn push_check(llm: &FakeLlm, question: &str, key: &str) {
    let reply =
        json!({"question": question, "answer_key": key, "explanation": format!("Because {key}.")})
            .to_string();
    llm.push_when(sys_starts(CHECK_GENERATOR), Step::text(reply));
}

/// Script the judge's next verdict.
pub fn push_verdict(llm: &FakeLlm, verdict: &str, hint: &str) {
    llm.push_when(
        sys_starts(JUDGE),
        Step::text(json!({"verdict": verdict, "hint": hint}).to_string()),
    );
}

/// Script the next streamed teaching reply.
pub fn push_teach(llm: &FakeLlm, deltas: &[&str]) {
    llm.push_when(sys_starts(TEACHER), Step::reply(deltas));
}

pub fn input(text: &str, state: Value, history: Vec<HistoryMessage>) -> TurnInput {
    TurnInput {
        thread_id: "thr_test".into(),
        user_id: "user-1".into(),
        mode: Mode::Teach,
        lesson_path: Some("01-Rust/02-ownership".into()),
        user_name: Some("Ada".into()),
        selected_text: None,
        user_text: text.into(),
        history,
        state,
    }
}

pub struct Turn {
    pub events: Vec<TutorEvent>,
}

impl Turn {
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                TutorEvent::TextDelta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect()
    }
    pub fn state(&self) -> Option<Value> {
        self.events.iter().rev().find_map(|e| match e {
            TutorEvent::State(v) => Some(v.clone()),
            _ => None,
        })
    }
    pub fn teach(&self) -> Value {
        self.state().expect("no state event")["teach"].clone()
    }
    pub fn assert_no_leak(&self, keys: &[&str]) {
        let all = self.text().to_lowercase();
        for k in keys {
            let k = k.to_lowercase();
            assert!(!all.contains(&k), "key {k:?} leaked in {all:?}");
            for e in &self.events {
                if let TutorEvent::TextDelta(d) = e {
                    assert!(!d.to_lowercase().contains(&k), "key leaked in delta {d:?}");
                }
            }
        }
    }
}

pub async fn turn(t: &StudyTutor, input: TurnInput) -> Turn {
    let events = tokio::time::timeout(
        Duration::from_secs(20),
        t.respond(input).await.collect::<Vec<_>>(),
    )
    .await
    .expect("turn hung");
    Turn { events }
}

fn hist(pairs: &[(&str, &str)]) -> Vec<HistoryMessage> {
    pairs
        .iter()
        .flat_map(|(u, a)| {
            [
                HistoryMessage {
                    role: Role::User,
                    text: u.to_string(),
                },
                HistoryMessage {
                    role: Role::Assistant,
                    text: a.to_string(),
                },
            ]
        })
        .collect()
}

#[tokio::test]
async fn teach_walks_the_lesson_with_server_side_checks() {
    let e = env(3).await;
    let llm = &e.llm;

    // Turn 1: the trigger starts at chunk 0; the check is generated server-side.
    push_check(llm, "Who owns a value?", KEY1);
    push_teach(llm, &["Hi Ada! ", " Let's talk about **owners**.", "\n"]);
    let t1 = turn(&e.tutor, input("\u{200B}", Value::Null, vec![])).await;
    assert!(
        t1.text()
            .starts_with("Hi Ada!  Let's talk about **owners**.\n")
    );
    assert!(
        t1.text()
            .ends_with("\n\n**Check your understanding:** Who owns a value?")
    );
    t1.assert_no_leak(&[KEY1]);
    let s1 = t1.state().unwrap();
    assert_eq!(s1["teach"]["chunk"], 0);
    assert_eq!(s1["teach"]["phase"], "awaiting");
    assert_eq!(s1["teach"]["check"]["answer_key"], KEY1);
    assert_eq!(s1["teach"]["total_chunks"], 3);
    // The streamed model was given the section but never the key.
    let teach_req = llm
        .requests()
        .into_iter()
        .find(|r| system_of(r).starts_with(TEACHER))
        .unwrap();
    assert!(system_of(&teach_req).contains("## Owners"));
    assert!(system_of(&teach_req).contains("## not a heading"));
    assert!(!system_of(&teach_req).contains("import X"));
    assert!(!fake_llm::all_message_text(&teach_req).contains(KEY1));
    assert_eq!(teach_req["model"], "teach-model");

    // Turn 2: a wrong answer. The judge echoes the key in its hint and the streamed model
    // "leaks" it split across deltas: neither reaches the student.
    push_verdict(llm, "incorrect", &format!("Remember: {KEY1}!"));
    push_teach(
        llm,
        &[
            "Not quite. ",
            "Think: each value has ex",
            "actly one owner",
            ". Take your time.",
        ],
    );
    let h2 = hist(&[("\u{200B}", &t1.text())]);
    let n_before = llm.request_count();
    let t2 = turn(&e.tutor, input("Many owners?", s1.clone(), h2.clone())).await;
    t2.assert_no_leak(&[KEY1]);
    assert!(
        t2.text()
            .starts_with("Not quite. Think: …. Take your time."),
        "{}",
        t2.text()
    );
    assert!(t2.text().ends_with("\n\n**Try again:** Who owns a value?"));
    let reqs = llm.requests()[n_before..].to_vec();
    let judge = reqs
        .iter()
        .find(|r| system_of(r).starts_with(JUDGE))
        .unwrap();
    assert!(
        system_of(judge).contains(KEY1),
        "the judge grades against the key"
    );
    assert!(fake_llm::all_message_text(judge).contains("Many owners?"));
    let teach2 = reqs
        .iter()
        .find(|r| system_of(r).starts_with(TEACHER))
        .unwrap();
    assert!(
        !fake_llm::all_message_text(teach2)
            .to_lowercase()
            .contains(&KEY1.to_lowercase()),
        "the hint given to the streamed model was redacted"
    );
    // The model saw the conversation history (the trigger itself is not history).
    let msgs = teach2["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], t1.text());
    assert_eq!(msgs.last().unwrap()["content"], "Many owners?");
    assert!(
        !reqs
            .iter()
            .any(|r| system_of(r).starts_with(CHECK_GENERATOR))
    );
    let s2 = t2.state().unwrap();
    assert_eq!(s2["teach"]["chunk"], 0);
    assert_eq!(s2["teach"]["check"]["attempts"], 1);

    // Turn 3: a correct answer advances to chunk 1 with a new check.
    push_verdict(llm, "correct", "");
    push_check(llm, "What does borrowing give you?", KEY2);
    push_teach(llm, &["Correct! ", "Now: borrowing."]);
    let mut h3 = h2.clone();
    h3.extend(hist(&[("Many owners?", &t2.text())]));
    let t3 = turn(&e.tutor, input("Just one owner.", s2, h3.clone())).await;
    t3.assert_no_leak(&[KEY1, KEY2]);
    assert!(t3.text().starts_with("Correct! Now: borrowing."));
    assert!(t3.text().ends_with("What does borrowing give you?"));
    let s3 = t3.state().unwrap();
    assert_eq!(s3["teach"]["chunk"], 1);
    assert_eq!(s3["teach"]["correct"], 1);
    assert_eq!(s3["teach"]["check"]["answer_key"], KEY2);
    assert_eq!(s3["teach"]["check"]["attempts"], 0);
    assert_eq!(
        s3["teach"]["asked"],
        json!(["Who owns a value?", "What does borrowing give you?"])
    );
    // The generator was told not to repeat the earlier question.
    let gen_req = llm
        .requests()
        .into_iter()
        .rev()
        .find(|r| system_of(r).starts_with(CHECK_GENERATOR))
        .unwrap();
    assert!(system_of(&gen_req).contains("Who owns a value?"));
    assert!(system_of(&gen_req).contains("## Borrowing"));

    // A retry of turn 3 (same history and message, latest state) judges the same answer against
    // the same question again: progress does not advance twice.
    push_verdict(llm, "correct", "");
    push_check(llm, "What does borrowing give you (retry)?", KEY2);
    push_teach(llm, &["Correct! ", "Now: borrowing (again)."]);
    let n_before = llm.request_count();
    let t3r = turn(&e.tutor, input("Just one owner.", s3.clone(), h3.clone())).await;
    let judge = llm.requests()[n_before..]
        .iter()
        .find(|r| system_of(r).starts_with(JUDGE))
        .cloned()
        .unwrap();
    assert!(system_of(&judge).contains("Who owns a value?"));
    let s3r = t3r.teach();
    assert_eq!(s3r["chunk"], 1);
    assert_eq!(s3r["correct"], 1);
    assert_eq!(
        s3r["asked"],
        json!(["Who owns a value?", "What does borrowing give you (retry)?"])
    );
    let s3 = t3r.state().unwrap();
    assert_eq!(s3["teach_turn"]["before"]["chunk"], 0);

    // Resume: a trigger with the persisted state continues at chunk 1 and re-asks its question
    // (no new check, no judge).
    push_teach(llm, &["Welcome back! We were on borrowing."]);
    let n_before = llm.request_count();
    let t4 = turn(&e.tutor, input("Teach me", s3.clone(), h3.clone())).await;
    assert!(
        t4.text()
            .ends_with("**Back to the question:** What does borrowing give you (retry)?")
    );
    t4.assert_no_leak(&[KEY1, KEY2]);
    let reqs = llm.requests()[n_before..].to_vec();
    assert_eq!(reqs.len(), 1);
    assert!(system_of(&reqs[0]).contains("Section 2 of 3"));
    assert_eq!(t4.teach(), s3["teach"]);

    // The student types the key itself: accepted without asking the judge.
    push_check(llm, "Why do lifetimes exist?", KEY3);
    push_teach(llm, &["Correct! ", "Lifetimes next."]);
    let n_before = llm.request_count();
    let mut h5 = h3.clone();
    h5.extend(hist(&[("Just one owner.", &t3r.text())]));
    let t5 = turn(&e.tutor, input(&KEY2.to_uppercase(), s3, h5.clone())).await;
    assert!(
        !llm.requests()[n_before..]
            .iter()
            .any(|r| system_of(r).starts_with(JUDGE))
    );
    let s5 = t5.state().unwrap();
    assert_eq!(s5["teach"]["chunk"], 2);

    // Last chunk answered correctly: the lesson is complete, no further check.
    push_verdict(llm, "correct", "");
    push_teach(llm, &["Correct! You finished. ", "- a\n- b\n- c"]);
    h5.extend(hist(&[(&KEY2.to_uppercase(), &t5.text())]));
    let t6 = turn(&e.tutor, input("so refs never dangle", s5, h5)).await;
    assert!(!t6.text().contains("Check your understanding"));
    let s6 = t6.teach();
    assert_eq!(s6["phase"], "complete");
    assert_eq!(s6["check"], Value::Null);
    assert_eq!(s6["correct"], 3);
    assert_eq!(llm.pending(), 0, "every scripted reply was used");
}

#[tokio::test]
async fn too_many_wrong_answers_explain_and_advance() {
    let e = env(2).await;
    let llm = &e.llm;
    push_check(llm, "Who owns a value?", KEY1);
    push_teach(llm, &["Intro."]);
    let s1 = turn(&e.tutor, input("👋", Value::Null, vec![]))
        .await
        .state()
        .unwrap();

    // A hint spelling the key in disguise is replaced by a neutral one.
    push_verdict(llm, "incorrect", "E-a-c-h  v.a.l.u.e has exactly ONE owner");
    push_teach(llm, &["Hint."]);
    let n_before = llm.request_count();
    let t2 = turn(&e.tutor, input("no idea", s1, vec![])).await;
    let hint_req = llm.requests()[n_before..]
        .iter()
        .find(|r| system_of(r).starts_with(TEACHER))
        .cloned()
        .unwrap();
    assert!(!system_of(&hint_req).contains("v.a.l.u.e"));
    assert!(system_of(&hint_req).contains("Look again at the section \"Owners\""));
    let s2 = t2.state().unwrap();
    assert_eq!(s2["teach"]["check"]["attempts"], 1);
    assert_eq!(s2["teach"]["chunk"], 0);

    push_verdict(llm, "incorrect", "");
    push_check(llm, "What does borrowing give you?", KEY2);
    push_teach(llm, &["Here is the idea you missed. ", "Now borrowing."]);
    let n_before = llm.request_count();
    let t3 = turn(&e.tutor, input("still no idea", s2, vec![])).await;
    t3.assert_no_leak(&[KEY1, KEY2]);
    let s3 = t3.teach();
    assert_eq!(s3["chunk"], 1);
    assert_eq!(s3["correct"], 0);
    assert_eq!(s3["check"]["answer_key"], KEY2);
    // The explanation handed to the streamed model had the key redacted.
    let teach = llm.requests()[n_before..]
        .iter()
        .find(|r| system_of(r).starts_with(TEACHER))
        .cloned()
        .unwrap();
    assert!(system_of(&teach).contains("could not answer"));
    assert!(!system_of(&teach).contains(KEY1));
}

#[tokio::test]
async fn a_question_instead_of_an_answer_is_answered_and_the_check_reasked() {
    let e = env(3).await;
    let llm = &e.llm;
    push_check(llm, "Who owns a value?", KEY1);
    push_teach(llm, &["Intro."]);
    let s1 = turn(&e.tutor, input("", Value::Null, vec![]))
        .await
        .state()
        .unwrap();
    push_verdict(llm, "question", "");
    push_teach(llm, &["Good question: a String is heap data."]);
    let t = turn(&e.tutor, input("what is a String?", s1.clone(), vec![])).await;
    assert!(
        t.text()
            .ends_with("**Back to the question:** Who owns a value?")
    );
    assert_eq!(t.teach()["check"]["attempts"], 0);
    assert_eq!(t.teach(), s1["teach"]);
}

#[tokio::test]
async fn check_generation_failure_uses_a_deterministic_fallback() {
    let e = env(3).await;
    let llm = &e.llm;
    llm.push_when(sys_starts(CHECK_GENERATOR), Step::text("not json at all"));
    push_teach(llm, &["Intro."]);
    let t = turn(&e.tutor, input("Teach me!", Value::Null, vec![])).await;
    let teach = t.teach();
    let q = teach["check"]["question"].as_str().unwrap();
    assert!(q.contains("Owners"), "{q}");
    assert!(t.text().ends_with(q));
    t.assert_no_leak(&[teach["check"]["answer_key"].as_str().unwrap()]);
}

#[tokio::test]
async fn llm_failure_is_an_error_event_and_state_does_not_advance() {
    let e = env(3).await;
    let llm = &e.llm;
    push_check(llm, "Who owns a value?", KEY1);
    push_teach(llm, &["Intro."]);
    let s1 = turn(&e.tutor, input("", Value::Null, vec![]))
        .await
        .state()
        .unwrap();

    // The judge call fails (HTTP 503, no retries configured).
    llm.push_when(sys_starts(JUDGE), Step::status(503));
    let t = turn(&e.tutor, input("one owner", s1.clone(), vec![])).await;
    assert!(t.state().is_none());
    assert!(matches!(
        t.events.last(),
        Some(TutorEvent::Error {
            allow_retry: true,
            ..
        })
    ));

    // The stream dies mid-way after a correct verdict: partial text, an error, no state.
    push_verdict(llm, "correct", "");
    push_check(llm, "What does borrowing give you?", KEY2);
    llm.push_when(
        sys_starts(TEACHER),
        Step::DisconnectMidStream {
            deltas: vec!["Correct! ".into()],
        },
    );
    let t = turn(&e.tutor, input("one owner", s1, vec![])).await;
    assert_eq!(t.text(), "Correct! ");
    assert!(
        t.state().is_none(),
        "a failed turn must not advance progress"
    );
    assert!(matches!(t.events.last(), Some(TutorEvent::Error { .. })));
}

#[tokio::test]
async fn without_llm_the_tutor_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("l.md"), "# L\n\ntext").unwrap();
    let lessons = Arc::new(LessonService::new(
        Arc::new(LocalDocsSource::new(dir.path()).unwrap()),
        CacheConfig::memory(),
    ));
    let tutor = StudyTutor::new(lessons, None);
    let mut i = input("\u{200B}", Value::Null, vec![]);
    i.lesson_path = Some("l".into());
    let t = turn(&tutor, i).await;
    match &t.events[0] {
        TutorEvent::Notice { level, message } => {
            assert_eq!(*level, NoticeLevel::Warning);
            assert!(message.contains("No LLM provider is configured"));
        }
        other => panic!("{other:?}"),
    }
    assert!(t.text().contains("no language model is configured"));
    assert!(t.text().contains("\"L\""));
    assert!(t.state().is_none());
}

#[tokio::test]
async fn missing_lesson_teaches_without_it_and_says_so() {
    let e = env(3).await;
    e.llm
        .push_when(sys_starts(TEACHER), Step::reply(&["General ", "teaching."]));
    let mut i = input("hello", Value::Null, vec![]);
    i.lesson_path = Some("01-Rust/99-missing".into());
    let t = turn(&e.tutor, i).await;
    assert!(matches!(
        &t.events[0],
        TutorEvent::Notice {
            level: NoticeLevel::Info,
            ..
        }
    ));
    assert_eq!(t.text(), "General teaching.");
    let req = &e.llm.requests()[0];
    assert!(system_of(req).contains("could not be loaded"));

    e.llm.push_when(sys_starts(TEACHER), Step::reply(&["ok"]));
    let mut i = input("hello", Value::Null, vec![]);
    i.lesson_path = Some("../../etc/passwd".into());
    let t = turn(&e.tutor, i).await;
    assert!(matches!(
        &t.events[0],
        TutorEvent::Notice {
            level: NoticeLevel::Warning,
            ..
        }
    ));
}

#[tokio::test]
async fn ask_mode_answers_from_the_lesson_and_selection() {
    let e = env(3).await;
    e.llm.push_when(
        sys_starts(ASKER),
        Step::reply(&["**Ownership** ", " means one owner. "]),
    );
    let mut i = input(
        "what is this?",
        Value::Null,
        hist(&[("earlier q", "earlier a")]),
    );
    i.mode = Mode::Ask;
    i.selected_text = Some("let s = String::new();".into());
    let t = turn(&e.tutor, i).await;
    assert_eq!(t.text(), "**Ownership**  means one owner. ");
    assert!(t.state().is_none(), "ask mode leaves the teach state alone");
    let req = &e.llm.requests()[0];
    assert_eq!(req["model"], "ask-model");
    let sys = system_of(req);
    assert!(sys.contains("let s = String::new();"));
    assert!(sys.contains("Ownership in Rust"));
    assert!(sys.contains("This part explains borrowing"));
    assert!(
        !sys.contains("title: Ownership"),
        "front matter is stripped"
    );
    let msgs = req["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"], "earlier q");
    assert_eq!(msgs[2]["content"], "earlier a");
    assert_eq!(msgs[3]["content"], "what is this?");
}

#[tokio::test]
async fn titles_for_triggers_and_text() {
    let e = env(3).await;
    let t = e.tutor.title(&input("\u{200B}", Value::Null, vec![])).await;
    assert_eq!(t.as_deref(), Some("📚 Ownership in Rust"));
    let t = e
        .tutor
        .title(&input(
            "How do I borrow a value mutably in Rust please?",
            Value::Null,
            vec![],
        ))
        .await;
    assert_eq!(t.as_deref(), Some("How do I borrow a value..."));
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_turn() {
    let e = env(3).await;
    push_check(&e.llm, "Q?", KEY1);
    e.llm.push_when(
        sys_starts(TEACHER),
        Step::Slow {
            deltas: (0..200).map(|i| format!("w{i} ")).collect(),
            per_delta: Duration::from_millis(20),
        },
    );
    let mut s = e.tutor.respond(input("", Value::Null, vec![])).await;
    let first = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(TutorEvent::TextDelta(_))));
    drop(s);
    // The tutor drops its LLM stream too: the provider sees the connection go away long before
    // the 4 s answer would have ended.
    let t0 = std::time::Instant::now();
    while e.llm.abandoned() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "the LLM stream outlived the turn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
