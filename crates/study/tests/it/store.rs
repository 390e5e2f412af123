//! ThreadStore directly, on SQLite and PostgreSQL: migrations down/up, scoping, history.

use platform::db::TestDb;
use serde_json::json;
use study::chatkit::types::{AssistantContent, ItemBody, ThreadItem};
use study::chatkit::{ListParams, ThreadMetadata, ThreadStatus, Timestamp};
use study::store::{Owner, StoreError, ThreadStore};

fn thread(id: &str) -> ThreadMetadata {
    ThreadMetadata {
        title: None,
        id: id.into(),
        created_at: Timestamp::now(),
        status: ThreadStatus::Active,
        metadata: Default::default(),
    }
}

fn answer(thread_id: &str, id: &str, text: &str) -> ThreadItem {
    ThreadItem {
        id: id.into(),
        thread_id: thread_id.into(),
        created_at: Timestamp::now(),
        body: ItemBody::AssistantMessage {
            content: vec![AssistantContent::text(text)],
        },
    }
}

#[tokio::test]
async fn migrations_are_reversible() {
    for db in TestDb::all().await {
        let store = ThreadStore::new(db.connect().await);
        store.migrate_up().await.unwrap();
        store.migrate_up().await.unwrap(); // idempotent
        let owner = Owner::new("u", None);
        store.create_thread(&owner, &thread("thr_a")).await.unwrap();
        store.migrate_down().await.unwrap();
        assert!(
            store.load_thread(&owner, "thr_a").await.is_err(),
            "tables dropped"
        );
        store.migrate_up().await.unwrap();
        assert!(matches!(
            store.load_thread(&owner, "thr_a").await,
            Err(StoreError::NotFound(_))
        ));
        let tracked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _study_migrations")
            .fetch_one(store.db().pool())
            .await
            .unwrap();
        assert_eq!(tracked, 2);
    }
}

#[tokio::test]
async fn rows_are_scoped_by_user_and_org() {
    for db in TestDb::all().await {
        let store = ThreadStore::new(db.connect().await);
        store.migrate_up().await.unwrap();
        let a = Owner::new("a", Some("org1"));
        let a_other_org = Owner::new("a", Some("org2"));
        let b = Owner::new("b", Some("org1"));
        store.create_thread(&a, &thread("thr_1")).await.unwrap();
        store
            .add_item(&a, &answer("thr_1", "msg_1", "x"))
            .await
            .unwrap();
        // The same ids may exist for another user: keys are per user.
        store.create_thread(&b, &thread("thr_1")).await.unwrap();
        for who in [&b, &a_other_org] {
            if who == &b {
                assert!(store.load_thread(who, "thr_1").await.is_ok());
            } else {
                assert!(matches!(
                    store.load_thread(who, "thr_1").await,
                    Err(StoreError::NotFound(_))
                ));
            }
        }
        assert!(matches!(
            store.load_item(&b, "thr_1", "msg_1").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete_thread(&a_other_org, "thr_1").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store
                .save_item(&b, &answer("thr_1", "msg_1", "overwrite"))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store
                .save_tutor_state(&a_other_org, "thr_1", &json!({}))
                .await,
            Err(StoreError::NotFound(_))
        ));
        let page = store
            .list_threads(&a_other_org, &ListParams::default())
            .await
            .unwrap();
        assert!(page.data.is_empty());
        // a's data is intact.
        let item = store.load_item(&a, "thr_1", "msg_1").await.unwrap();
        assert_eq!(item.message_text().as_deref(), Some("x"));
        store.delete_thread(&a, "thr_1").await.unwrap();
        assert!(
            store.load_thread(&b, "thr_1").await.is_ok(),
            "b's thread survives"
        );
        assert!(matches!(
            store.load_item(&a, "thr_1", "msg_1").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn recent_items_are_the_last_n_oldest_first() {
    for db in TestDb::all().await {
        let store = ThreadStore::new(db.connect().await);
        store.migrate_up().await.unwrap();
        let o = Owner::new("u", None);
        store.create_thread(&o, &thread("thr_h")).await.unwrap();
        let mut items = Vec::new();
        for i in 0..40 {
            let it = answer("thr_h", &format!("msg_{i:02}"), &i.to_string());
            store.add_item(&o, &it).await.unwrap();
            items.push(it);
        }
        let recent = store
            .recent_items(&o, "thr_h", Some(&items[35]), 30)
            .await
            .unwrap();
        let ids: Vec<&str> = recent.iter().map(|i| i.id.as_str()).collect();
        let expected: Vec<String> = (5..35).map(|i| format!("msg_{i:02}")).collect();
        assert_eq!(ids, expected);
        let all = store.recent_items(&o, "thr_h", None, 3).await.unwrap();
        assert_eq!(
            all.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["msg_37", "msg_38", "msg_39"]
        );
        // Tutor state round-trips as JSON.
        store
            .save_tutor_state(&o, "thr_h", &json!({"chunk": 3, "asked": ["q1"]}))
            .await
            .unwrap();
        let t = store.load_thread(&o, "thr_h").await.unwrap();
        assert_eq!(t.tutor_state, json!({"chunk": 3, "asked": ["q1"]}));
        assert!(t.updated_at >= t.meta.created_at);
    }
}
