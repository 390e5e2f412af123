//! Lessons from a PanaversityFS book: the student's overlay is the lesson taught.

use std::sync::Arc;

use bytes::Bytes;
use pfs::engine::{Actor, Engine, EngineConfig};
use pfs::storage::{Storage, StorageConfig};
use pfs::{BookId, BookPath, Namespace, Profile, UserId};
use platform::db::TestDb;
use study::lessons::{CacheConfig, Fetched, LessonService, LessonSource, PfsBookSource};

async fn write(engine: &Engine, book: &BookId, path: &str, ns: &Namespace, text: &str) {
    engine
        .write(
            &Actor::new("author").unwrap(),
            book,
            &BookPath::parse(path).unwrap(),
            ns,
            Bytes::copy_from_slice(text.as_bytes()),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn pfs_source_teaches_the_students_overlay() {
    pfs::storage::init_process();
    for db in TestDb::all().await {
        let engine = Engine::open(
            db.connect().await,
            Storage::new(&StorageConfig::Memory).unwrap(),
            EngineConfig {
                default_profile: Profile::Docusaurus,
                ..EngineConfig::default()
            },
        )
        .await
        .unwrap();
        let book = BookId::parse("ai-book").unwrap();
        let base = "---\ntitle: Base Lesson\n---\n\nThe base text of the lesson.\n";
        write(
            &engine,
            &book,
            "content/01-Part/02-lesson.md",
            &Namespace::Base,
            base,
        )
        .await;
        write(
            &engine,
            &book,
            "content/01-Part/03-other/index.md",
            &Namespace::Base,
            "# Index Lesson\n\nFrom index.md.\n",
        )
        .await;
        let alice = UserId::parse("alice").unwrap();
        write(
            &engine,
            &book,
            "content/01-Part/02-lesson.md",
            &Namespace::Overlay(alice),
            "---\ntitle: Alice's Lesson\n---\n\nPersonalized for Alice.\n",
        )
        .await;

        let src = PfsBookSource::new(engine.clone(), book.clone());
        assert!(src.per_user());
        let raw = src
            .fetch("01-Part/02-lesson", Some("alice"))
            .await
            .unwrap()
            .unwrap();
        assert!(raw.text.contains("Personalized for Alice."));
        let etag = raw.etag.clone().unwrap();
        assert_eq!(etag.len(), 64, "the journal sha256 is the validator");
        assert_eq!(
            src.fetch_if_changed("01-Part/02-lesson", Some("alice"), Some(&etag))
                .await
                .unwrap(),
            Fetched::NotModified
        );
        let raw = src
            .fetch("01-Part/02-lesson", Some("bob"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw.text, base);
        // A user id pfs cannot hold reads the base; resolution order reaches index.md.
        let raw = src
            .fetch("01-Part/02-lesson", Some("bob@example.com"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw.text, base);
        assert!(
            src.fetch("01-Part/03-other", None)
                .await
                .unwrap()
                .unwrap()
                .text
                .contains("From index.md.")
        );
        assert_eq!(src.fetch("01-Part/none", None).await.unwrap(), None);

        // Through the service, each student is cached separately.
        let svc = LessonService::new(Arc::new(src), CacheConfig::memory());
        let a = svc
            .get("01-Part/02-lesson", Some("alice"))
            .await
            .unwrap()
            .unwrap();
        let b = svc
            .get("01-Part/02-lesson", Some("bob"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.title, "Alice's Lesson");
        assert_eq!(b.title, "Base Lesson");
        assert!(!b.body.contains("Alice"));
        assert_eq!(svc.source_name(), "pfs");
    }
}
