//! Finding 10: boolean settings accepted only `true`/`false` (`PANAVERSITY_NO_SAMPLE=yes` stopped
//! start-up with "invalid value" while `DEV_MODE=1` worked). Now one parser serves every boolean:
//! 1/0, true/false, yes/no, on/off; anything else fails start-up naming the spellings.

use serde_json::json;

use crate::support::{Server, ServerOpts, TempData};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booleans_accept_the_usual_spellings() {
    for (yes, no) in [("1", "0"), ("yes", "no"), ("ON", "off"), ("true", "false")] {
        let tmp = TempData::new();
        let opts = ServerOpts::default()
            .env("DEV_MODE", yes)
            .env("PANAVERSITY_NO_SAMPLE", yes)
            .env("PANAVERSITY_ALLOW_DEV_MODE_PUBLIC", yes)
            .env("PANAVERSITY_DB_SQLITE_DIRECT", no);
        let server = Server::start(&tmp.data(), opts).await;
        let books = server.mcp(&[]).ok("list_books", json!({})).await;
        assert_eq!(books["count"], json!(0), "{yes}: sample loaded: {books}");
        server.stop().await;
    }
    let tmp = TempData::new();
    let err = Server::try_start(
        &tmp.data(),
        ServerOpts::dev().env("PANAVERSITY_NO_SAMPLE", "maybe"),
    )
    .await
    .err()
    .expect("an unreadable boolean must stop start-up");
    assert!(err.contains("1/0, true/false, yes/no, on/off"), "{err}");
    let err = Server::try_start(&tmp.data(), ServerOpts::default().env("DEV_MODE", "sure"))
        .await
        .err()
        .expect("an unreadable DEV_MODE must stop start-up");
    assert!(err.contains("DEV_MODE"), "{err}");
}
