//! The content suite against S3 (s3s-fs in-process), on every configured database.

use pfs::Profile;
use pfs::storage::Storage;
use platform::db::TestDb;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_operations_on_s3() {
    init();
    let server = start_s3("pfs-bucket").await;
    for (i, t) in TestDb::all().await.into_iter().enumerate() {
        let storage = Storage::new(&server.config_with_root(&format!("/run-{i}/"))).unwrap();
        assert_eq!(storage.backend_name(), "s3");
        let engine = open(&t, storage, cfg(Profile::Strict)).await;
        crate::content::content_suite(&engine, &format!("s3-book-{i}")).await;
        let rep = engine.fsck(true).await.unwrap();
        assert!(rep.issues.is_empty(), "{rep:#?}");
    }
}
