//! Property tests for the spec invariants R1, R2, R3, R5, R6, R7, on every configured database.
//! Each case does real I/O, so case counts are small.

use std::collections::BTreeMap;

use bytes::Bytes;
use pfs::engine::{Engine, Source};
use pfs::{BookId, BookPath, ErrorCode, Namespace, Profile};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Strings that look like paths, with every kind of hostile character mixed in.
fn path_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        8 => "[0-9]{2}-[A-Za-z][A-Za-z0-9-]{0,6}",
        2 => "[A-Za-z0-9_.-]{1,8}",
        6 => "[0-9]{2}-[a-z]{1,5}(\\.summary)?\\.mdx?",
        1 => Just("..".to_string()),
        1 => Just(".".to_string()),
        1 => Just("%2e%2e".to_string()),
        1 => Just("%2F".to_string()),
        1 => Just("a\\b".to_string()),
        1 => Just("a\0b".to_string()),
        1 => Just("a\nb".to_string()),
        1 => Just("~".to_string()),
        1 => Just(String::new()),
        1 => Just("x y".to_string()),
        1 => Just("é".to_string()),
    ];
    let head = prop_oneof![
        6 => Just("content".to_string()),
        2 => Just("static/images".to_string()),
        1 => Just("/content".to_string()),
        1 => Just("users/bob/content".to_string()),
        1 => Just("".to_string()),
        1 => Just("static".to_string()),
    ];
    (head, proptest::collection::vec(seg, 1..5)).prop_map(|(h, segs)| {
        let mut s = h;
        for g in segs {
            s.push('/');
            s.push_str(&g);
        }
        s
    })
}

/// R1: a random path is either rejected (INVALID_PATH / SCHEMA_VIOLATION) or stored under the
/// book's schema at exactly `books/{book}/{path}`; nothing is ever stored elsewhere.
#[test]
fn r1_paths_are_rejected_or_stored_under_the_schema() {
    let rt = runtime();
    let engines = rt.block_on(engines_memory(cfg(Profile::Strict)));
    for t in &engines {
        let e = &t.engine;
        let a = actor("prop-agent");
        let strict = book("r1-strict");
        let docs = book("r1-docs");
        rt.block_on(e.ensure_book(&docs, Some(Profile::Docusaurus)))
            .unwrap();
        let accepted = std::cell::Cell::new(0u32);
        runner(64)
            .run(&path_strategy(), |raw| {
                for (bk, profile) in [(&strict, Profile::Strict), (&docs, Profile::Docusaurus)] {
                    let parsed = BookPath::parse(&raw);
                    let Ok(p) = parsed else {
                        prop_assert_eq!(parsed.unwrap_err().code(), ErrorCode::InvalidPath);
                        continue;
                    };
                    let res = rt.block_on(async {
                        if p.area() == pfs::Area::Static {
                            e.put_asset(&a, bk, &p, Bytes::from_static(b"bytes"))
                                .await
                                .map(|_| ())
                        } else {
                            e.write(
                                &a,
                                bk,
                                &p,
                                &Namespace::Base,
                                Bytes::from_static(b"text"),
                                None,
                            )
                            .await
                            .map(|_| ())
                        }
                    });
                    match res {
                        Ok(()) => {
                            accepted.set(accepted.get() + 1);
                            prop_assert!(profile.check(&p).is_ok());
                            let key = format!("books/{bk}/{raw}");
                            let got = rt.block_on(e.storage().get_opt(&key)).unwrap();
                            prop_assert!(got.is_some(), "object missing at {}", key);
                        }
                        Err(err) => prop_assert!(
                            matches!(
                                err.code(),
                                ErrorCode::SchemaViolation
                                    | ErrorCode::HashRequired
                                    | ErrorCode::InvalidPath
                            ),
                            "unexpected {:?} for {:?}",
                            err,
                            raw
                        ),
                    }
                }
                Ok(())
            })
            .unwrap();
        // Nothing outside books/{book}/ except the engine's private area.
        let all = rt.block_on(e.storage().list_files("")).unwrap();
        for (key, _) in all {
            prop_assert_ok(
                key.starts_with("books/r1-strict/")
                    || key.starts_with("books/r1-docs/")
                    || key.starts_with("_pfs/"),
                &key,
            );
            if let Some(rest) = key.strip_prefix("books/r1-strict/") {
                let p = BookPath::parse(rest).expect("stored paths are valid");
                Profile::Strict
                    .check(&p)
                    .expect("strict book holds only strict paths");
            }
        }
        assert!(
            accepted.get() > 0,
            "the generator never produced a valid path"
        );
    }
}

fn prop_assert_ok(cond: bool, key: &str) {
    assert!(cond, "object stored outside the layout: {key}");
}

#[derive(Debug, Clone)]
enum Op {
    /// Write (create or update with the right hash) file `f` in namespace `ns` (0 = base).
    Write {
        f: usize,
        ns: usize,
        body: u8,
    },
    /// Write with a stale/wrong hash: must conflict and change nothing.
    StaleWrite {
        f: usize,
        ns: usize,
    },
    Delete {
        f: usize,
        ns: usize,
    },
}

const FILES: [&str; 3] = [
    "content/01-a/01-b/01-one.md",
    "content/01-a/01-b/02-two.md",
    "content/01-a/02-c/01-three.md",
];
const USERS: [&str; 2] = ["alice", "bob"];

fn ns_of(i: usize) -> Namespace {
    if i == 0 {
        Namespace::Base
    } else {
        overlay(USERS[i - 1])
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, any::<u8>()).prop_map(|(f, ns, body)| Op::Write { f, ns, body }),
        1 => (0..3usize, 0..3usize).prop_map(|(f, ns)| Op::StaleWrite { f, ns }),
        2 => (0..3usize, 0..3usize).prop_map(|(f, ns)| Op::Delete { f, ns }),
    ]
}

/// Apply `ops` to a fresh book and check the engine against a model after each step.
async fn run_model(e: &Engine, bk: &BookId, ops: &[Op]) -> Result<(), TestCaseError> {
    let a = actor("prop-agent");
    // (file, ns) -> bytes
    let mut model: BTreeMap<(usize, usize), Bytes> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Write { f, ns, body } => {
                let p = path(FILES[*f]);
                let bytes = Bytes::from(format!("file {f} ns {ns} body {body}\r\n  "));
                let expected = model.get(&(*f, *ns)).map(|b| sha(b));
                let w = e
                    .write(&a, bk, &p, &ns_of(*ns), bytes.clone(), expected.as_deref())
                    .await
                    .map_err(|err| TestCaseError::fail(format!("{err}")))?;
                prop_assert_eq!(w.prev_hash, expected);
                model.insert((*f, *ns), bytes);
            }
            Op::StaleWrite { f, ns } => {
                let p = path(FILES[*f]);
                let stale = sha(b"stale");
                let err = e
                    .write(
                        &a,
                        bk,
                        &p,
                        &ns_of(*ns),
                        Bytes::from_static(b"zzz"),
                        Some(&stale),
                    )
                    .await
                    .unwrap_err();
                let want = if model.contains_key(&(*f, *ns)) {
                    ErrorCode::Conflict
                } else {
                    ErrorCode::NotFound
                };
                prop_assert_eq!(err.code(), want);
            }
            Op::Delete { f, ns } => {
                let p = path(FILES[*f]);
                // R3: deleting twice succeeds twice; the second is a no-op.
                let d1 = e.delete(&a, bk, &p, &ns_of(*ns)).await.unwrap();
                let d2 = e.delete(&a, bk, &p, &ns_of(*ns)).await.unwrap();
                prop_assert_eq!(d1.existed, model.contains_key(&(*f, *ns)));
                prop_assert!(!d2.existed);
                model.remove(&(*f, *ns));
            }
        }
    }
    // R5: reads per user see their overlay, else base; nobody sees another user's overlay.
    for (f, file) in FILES.iter().enumerate() {
        let p = path(file);
        for (ui, u) in [None, Some(1usize), Some(2usize)].into_iter().enumerate() {
            let uid = u.map(|i| user(USERS[i - 1]));
            let want = u
                .and_then(|i| model.get(&(f, i)).map(|b| (b.clone(), Source::Overlay)))
                .or_else(|| model.get(&(f, 0)).map(|b| (b.clone(), Source::Base)));
            let got = e.read(bk, &p, uid.as_ref()).await;
            match (want, got) {
                (Some((bytes, src)), Ok(out)) => {
                    prop_assert_eq!(out.bytes, bytes);
                    prop_assert_eq!(out.source, src);
                }
                (None, Err(err)) => prop_assert_eq!(err.code(), ErrorCode::NotFound),
                (w, g) => {
                    return Err(TestCaseError::fail(format!(
                        "file {f} reader {ui}: model {w:?}, engine {:?}",
                        g.map(|o| o.bytes)
                    )));
                }
            }
        }
    }
    // Overlay listings only show the user's own rows.
    for (i, u) in USERS.iter().enumerate() {
        let rows = e
            .list(bk, pfs::ListView::Overlay(user(u)), None)
            .await
            .unwrap();
        let want: Vec<String> = (0..FILES.len())
            .filter(|f| model.contains_key(&(*f, i + 1)))
            .map(|f| FILES[f].to_string())
            .collect();
        prop_assert_eq!(
            rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
            want
        );
        prop_assert!(rows.iter().all(|r| r.user_id == *u));
    }
    Ok(())
}

/// R2 + R3 + R5: random op sequences keep journal = storage (every journal row's canonical
/// object and blob hash to its sha256; nothing orphaned), deletes are idempotent, overlays are
/// isolated.
#[test]
fn r2_r3_r5_random_op_sequences() {
    let rt = runtime();
    let engines = rt.block_on(engines_fs(cfg(Profile::Strict)));
    for t in &engines {
        let e = &t.engine;
        let case = std::cell::Cell::new(0u32);
        runner(32)
            .run(&proptest::collection::vec(op_strategy(), 1..14), |ops| {
                case.set(case.get() + 1);
                let bk = book(&format!("model-{}", case.get()));
                rt.block_on(async {
                    run_model(e, &bk, &ops).await?;
                    let rep = e.fsck(false).await.unwrap();
                    prop_assert!(rep.issues.is_empty(), "{:#?}", rep.issues);
                    Ok(())
                })
            })
            .unwrap();
        let report = rt.block_on(e.audit().verify(None)).unwrap();
        assert!(report.valid, "{report:#?}");
    }
}

/// R6: the audit chains hold after random concurrent operations on a few shared files.
#[test]
fn r6_audit_chain_holds_under_concurrency() {
    let rt = runtime();
    let engines = rt.block_on(engines_memory(cfg(Profile::Strict)));
    for t in &engines {
        let e = &t.engine;
        let case = std::cell::Cell::new(0u32);
        runner(12)
            .run(
                &proptest::collection::vec(proptest::collection::vec(op_strategy(), 1..8), 2..6),
                |task_ops| {
                    case.set(case.get() + 1);
                    let bk = book(&format!("chain-{}", case.get()));
                    rt.block_on(async {
                        let mut handles = Vec::new();
                        for (ti, ops) in task_ops.into_iter().enumerate() {
                            let e = e.clone();
                            let bk = bk.clone();
                            handles.push(tokio::spawn(async move {
                                let a = actor(&format!("agent-{ti}"));
                                for op in ops {
                                    match op {
                                        Op::Write { f, ns, body } => {
                                            let p = path(FILES[f]);
                                            let cur = e.stat(&bk, &p, &ns_of(ns)).await.unwrap();
                                            let _ = e
                                                .write(
                                                    &a,
                                                    &bk,
                                                    &p,
                                                    &ns_of(ns),
                                                    Bytes::from(vec![body; 3]),
                                                    cur.as_ref().map(|c| c.sha256.as_str()),
                                                )
                                                .await;
                                        }
                                        Op::StaleWrite { f, ns } => {
                                            let _ = e
                                                .write(
                                                    &a,
                                                    &bk,
                                                    &path(FILES[f]),
                                                    &ns_of(ns),
                                                    Bytes::from_static(b"s"),
                                                    Some(&sha(b"x")),
                                                )
                                                .await;
                                        }
                                        Op::Delete { f, ns } => {
                                            e.delete(&a, &bk, &path(FILES[f]), &ns_of(ns))
                                                .await
                                                .unwrap();
                                        }
                                    }
                                }
                            }));
                        }
                        for h in handles {
                            h.await.unwrap();
                        }
                        for f in FILES {
                            for u in ["__base__", "alice", "bob"] {
                                let r = e.audit().verify(Some((bk.as_str(), f, u))).await.unwrap();
                                prop_assert!(r.valid, "{:#?}", r.breaks);
                                // The chain ends at the journal's current hash.
                                let page = e
                                    .audit()
                                    .query(&pfs::audit::AuditQuery {
                                        book_id: Some(bk.to_string()),
                                        path_pattern: Some(f.to_string()),
                                        user_id: Some(u.to_string()),
                                        limit: Some(1),
                                        ..Default::default()
                                    })
                                    .await
                                    .unwrap();
                                let ns = if u == "__base__" {
                                    Namespace::Base
                                } else {
                                    overlay(u)
                                };
                                let cur =
                                    e.stat(&bk, &path(f), &ns).await.unwrap().map(|j| j.sha256);
                                if let Some(last) = page.rows.first() {
                                    prop_assert_eq!(&last.new_hash, &cur);
                                } else {
                                    prop_assert!(cur.is_none());
                                }
                            }
                        }
                        Ok(())
                    })
                },
            )
            .unwrap();
        let report = rt.block_on(e.audit().verify(None)).unwrap();
        assert!(report.valid, "{report:#?}");
        assert!(report.rows_checked > 0);
    }
}

/// R7: the engine refuses empty/`system` agent ids, and so does the database.
#[test]
fn r7_agent_provenance() {
    runner(64)
        .run(&"[ \\t]{0,3}(system|SYSTEM|System|)[ \\t]{0,3}", |s| {
            prop_assert!(pfs::Actor::new(s.clone()).is_err(), "{:?} accepted", s);
            Ok(())
        })
        .unwrap();
    runner(64)
        .run(&"[A-Za-z0-9@._:-]{1,40}", |s| {
            if !s.eq_ignore_ascii_case("system") {
                let actor = pfs::Actor::new(s.clone()).unwrap();
                prop_assert_eq!(actor.agent_id(), s.as_str());
            }
            Ok(())
        })
        .unwrap();
    let rt = runtime();
    let engines = rt.block_on(engines_memory(cfg(Profile::Strict)));
    for t in &engines {
        for bad in ["", "system"] {
            let res = rt.block_on(
                sqlx::query(
                    "INSERT INTO audit_log (seq, shard, ts, agent_id, operation, book_id, path, user_id, status, row_hash, prev_row_hash) \
                     VALUES ($1, 0, 0, $2, 'write_content', 'b', 'p', '__base__', 'success', 'x', 'y')",
                )
                .bind(1_000_000i64 + bad.len() as i64)
                .bind(bad)
                .execute(t.engine.db().pool()),
            );
            assert!(
                res.is_err(),
                "the database accepted agent_id {bad:?} ({:?})",
                t.kind
            );
        }
        // Control: the same statement with a real agent id is accepted, so the CHECK is what
        // rejected the rows above.
        rt.block_on(
            sqlx::query(
                "INSERT INTO audit_log (seq, shard, ts, agent_id, operation, book_id, path, user_id, status, row_hash, prev_row_hash) \
                 VALUES (2000000, 0, 0, 'someone', 'write_content', 'b', 'p', '__base__', 'success', 'x', 'y')",
            )
            .execute(t.engine.db().pool()),
        )
        .unwrap();
        // Every row the engine wrote carries the real caller id.
        let a = actor("real-caller");
        let bk = book("r7-book");
        rt.block_on(
            t.engine
                .write(&a, &bk, &path(FILES[0]), &Namespace::Base, b("x"), None),
        )
        .unwrap();
        let page = rt
            .block_on(t.engine.audit().query(&pfs::audit::AuditQuery {
                book_id: Some("r7-book".into()),
                ..Default::default()
            }))
            .unwrap();
        assert!(!page.rows.is_empty());
        assert!(page.rows.iter().all(|r| r.agent_id == "real-caller"));
    }
}
