//! Book archives over the real route, on a realistic book (`bookgen`): precompressed entries
//! give the same bytes as fresh ones, a write during a download does not corrupt it, a time
//! budget ends the ZIP early and `start_after` resumes it to every entry exactly once, and a
//! blob storage cannot serve makes the reply and the ZIP say `partial` with that file named.
//! Downloads go over a raw HTTP/1.1 connection with `TE: trailers` so the outcome trailers
//! (`x-archive-status`, `x-archive-resume-after`) are checked as a pipeline would read them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bookgen::BookSpec;
use pfs::EngineConfig;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A finished download: body (de-chunked) and trailers.
struct Download {
    status: u16,
    body: Vec<u8>,
    trailers: BTreeMap<String, String>,
}

/// GET `url` over HTTP/1.1 with `TE: trailers`; `pause` runs after the first body bytes arrived
/// (while the server is still streaming).
async fn download<F: std::future::Future<Output = ()>>(
    url: &str,
    pause: impl FnOnce() -> F,
) -> Download {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut conn = tokio::net::TcpStream::connect(host).await.expect("connect");
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nTE: trailers\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = vec![0u8; 16 * 1024];
    let n = conn.read(&mut raw).await.expect("first bytes");
    raw.truncate(n);
    pause().await;
    conn.read_to_end(&mut raw).await.expect("rest of the body");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let status: u16 = head[9..12].parse().expect("status");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    // De-chunk; what follows the last chunk are the trailers.
    let (mut body, mut at) = (Vec::new(), head_end);
    loop {
        let eol = at
            + raw[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("size");
        let size_line = String::from_utf8_lossy(&raw[at..eol]).to_string();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        at = eol + 2;
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[at..at + size]);
        at += size + 2;
    }
    let trailers = String::from_utf8_lossy(&raw[at..])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Download {
        status,
        body,
        trailers,
    }
}

/// The entries of a ZIP, each read with its CRC checked.
#[allow(deprecated)] // read1 is the successor; mem is simpler for an in-memory check
async fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let zip = async_zip::base::read::mem::ZipFileReader::new(zip.to_vec())
        .await
        .expect("a readable ZIP");
    let mut out = Vec::new();
    for i in 0..zip.file().entries().len() {
        let mut r = zip.reader_with_entry(i).await.expect("entry");
        let name = r.entry().filename().as_str().expect("name").to_string();
        let mut bytes = Vec::new();
        r.read_to_end_checked(&mut bytes).await.expect("CRC");
        out.push((name, bytes));
    }
    out
}

/// Write a generated book into the test book; its files by path.
async fn seed(rpc: &Rpc, spec: &BookSpec) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine as _;
    let mut files = BTreeMap::new();
    for f in spec.files() {
        if f.path.starts_with("content/") {
            let content = String::from_utf8(f.bytes.clone()).unwrap();
            rpc.ok(
                "write_content",
                json!({"book_id": BOOK, "path": f.path, "content": content}),
            )
            .await;
        } else {
            let filename = f.path.rsplit('/').next().unwrap();
            rpc.ok(
                "upload_asset",
                json!({"book_id": BOOK, "asset_type": "images", "filename": filename,
                       "binary_data": base64::engine::general_purpose::STANDARD.encode(&f.bytes)}),
            )
            .await;
        }
        files.insert(f.path, f.bytes);
    }
    files
}

fn book(lessons: usize, lesson_bytes: usize) -> BookSpec {
    BookSpec {
        lesson_bytes,
        asset_bytes: 32 * 1024,
        ..BookSpec::small(lessons)
    }
}

async fn archive_url(rpc: &Rpc, start_after: Option<&str>) -> Value {
    let mut args = json!({"book_id": BOOK, "scope": "all"});
    if let Some(a) = start_after {
        args["start_after"] = json!(a);
    }
    rpc.ok("get_book_archive", args).await
}

async fn zip_stream_rows(server: &TestServer) -> i64 {
    let db = server.db.connect().await;
    sqlx::query("SELECT COUNT(*) AS n FROM zip_streams")
        .fetch_one(db.pool())
        .await
        .expect("count")
        .try_get::<i64, _>("n")
        .expect("n")
}

#[tokio::test]
async fn precompressed_and_fresh_archives_are_byte_identical() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let files = seed(&rpc, &book(12, 16 * 1024)).await;
        assert_eq!(
            zip_stream_rows(&server).await,
            0,
            "nothing precompressed yet"
        );
        let url = archive_url(&rpc, None).await["archive_url"]
            .as_str()
            .unwrap()
            .to_string();
        let cold = download(&url, || async {}).await;
        assert_eq!(cold.status, 200);
        assert_eq!(
            cold.trailers.get("x-archive-status").map(String::as_str),
            Some("complete")
        );
        let learned = zip_stream_rows(&server).await;
        assert_eq!(
            learned as usize,
            files.len(),
            "every file's stored form is remembered"
        );
        let warm = download(&url, || async {}).await;
        assert_eq!(cold.body, warm.body, "cached streams give the same bytes");
        // A replica (its own engine) serves the same bytes from the shared cache.
        let replica = start_replica(&server).await;
        let rrpc = Rpc::new(&replica, Some("alice"), "read");
        let rurl = archive_url(&rrpc, None).await["archive_url"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(download(&rurl, || async {}).await.body, cold.body);
        let got: BTreeMap<String, Vec<u8>> = entries(&cold.body).await.into_iter().collect();
        assert_eq!(got, files, "every file, byte for byte, nothing else");
    }
}

#[tokio::test]
async fn a_write_while_an_archive_streams_does_not_corrupt_it() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        // ~4 MB of lessons: far more than the socket buffers, so the download is mid-stream
        // when the writes land.
        let spec = book(80, 48 * 1024);
        let files = seed(&rpc, &spec).await;
        let url = archive_url(&rpc, None).await["archive_url"]
            .as_str()
            .unwrap()
            .to_string();
        let rewrites = spec.files().filter(|f| f.path.ends_with(".md")).take(80);
        let rewrites: Vec<String> = rewrites.map(|f| f.path).collect();
        let got = download(&url, || async {
            for path in &rewrites {
                let current = rpc
                    .ok("read_content", json!({"book_id": BOOK, "path": path}))
                    .await;
                rpc.ok(
                    "write_content",
                    json!({"book_id": BOOK, "path": path, "content": "# Rewritten\n",
                           "expected_hash": current["file_hash_sha256"]}),
                )
                .await;
            }
        })
        .await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.trailers.get("x-archive-status").map(String::as_str),
            Some("complete")
        );
        let got: BTreeMap<String, Vec<u8>> = entries(&got.body).await.into_iter().collect();
        assert_eq!(
            got, files,
            "the archive is the book as it was when the download started"
        );
        // And a new download has the new text.
        let after = download(&url, || async {}).await;
        let after: BTreeMap<String, Vec<u8>> = entries(&after.body).await.into_iter().collect();
        assert_eq!(after[&rewrites[0]], b"# Rewritten\n".to_vec());
    }
}

#[tokio::test]
async fn a_budget_interrupted_archive_resumes_to_every_entry_once() {
    for db in databases().await {
        let server = start_configured(
            Arc::new(db),
            pfs::Storage::new(&pfs::StorageConfig::Memory).unwrap(),
            None,
            EngineConfig::default(),
            |c| c.archive_time_budget = Some(Duration::from_nanos(1)),
        )
        .await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let files = seed(&rpc, &book(6, 8 * 1024)).await;
        let (mut seen, mut after, mut rounds) = (Vec::<String>::new(), None::<String>, 0);
        loop {
            rounds += 1;
            assert!(rounds <= files.len() + 1, "no progress: {seen:?}");
            let reply = archive_url(&rpc, after.as_deref()).await;
            assert_eq!(reply["time_budget_seconds"], json!(0), "{reply}");
            let got = download(reply["archive_url"].as_str().unwrap(), || async {}).await;
            assert_eq!(got.status, 200);
            let mut partial = None;
            for (name, bytes) in entries(&got.body).await {
                if name == "_archive_partial.json" {
                    partial = Some(serde_json::from_slice::<Value>(&bytes).unwrap());
                } else {
                    assert_eq!(files.get(&name), Some(&bytes), "{name}");
                    seen.push(name);
                }
            }
            match partial {
                None => {
                    assert_eq!(
                        got.trailers.get("x-archive-status").map(String::as_str),
                        Some("complete")
                    );
                    break;
                }
                Some(p) => {
                    let resume = p["resume_after"].as_str().unwrap().to_string();
                    assert_eq!(p["partial"], json!(true));
                    assert!(!p["missing"].as_array().unwrap().is_empty(), "{p}");
                    assert_eq!(
                        got.trailers.get("x-archive-status").map(String::as_str),
                        Some("partial")
                    );
                    assert_eq!(got.trailers.get("x-archive-resume-after"), Some(&resume));
                    after = Some(resume);
                }
            }
        }
        assert!(rounds > 1, "the budget interrupted the archive");
        let expected: Vec<String> = files.keys().cloned().collect();
        assert_eq!(seen, expected, "every entry exactly once, in order");
    }
}

#[tokio::test]
async fn a_file_storage_cannot_serve_is_partial_in_the_reply_and_the_zip() {
    for db in databases().await {
        let server = start(db).await;
        let rpc = Rpc::new(&server, Some("alice"), "read write");
        let files = seed(&rpc, &book(5, 8 * 1024)).await;
        let lost = files.keys().nth(2).unwrap().clone();
        let sha = pfs::storage::sha256_hex(&files[&lost]);
        server
            .storage
            .delete(&pfs::storage::blob_key(&sha))
            .await
            .unwrap();
        let reply = archive_url(&rpc, None).await;
        assert_eq!(reply["status"], json!("partial"), "{reply}");
        assert_eq!(reply["missing"], json!([lost]), "{reply}");
        let got = download(reply["archive_url"].as_str().unwrap(), || async {}).await;
        assert_eq!(got.status, 200);
        assert_eq!(
            got.trailers.get("x-archive-status").map(String::as_str),
            Some("partial")
        );
        let got = entries(&got.body).await;
        let errors = got
            .iter()
            .find(|(n, _)| n == "_archive_errors.json")
            .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap())
            .expect("the error manifest");
        assert_eq!(errors[0]["path"], json!(lost), "{errors}");
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.len(),
            files.len(),
            "the others and the manifest: {names:?}"
        );
        assert!(!names.contains(&lost.as_str()));
    }
}
