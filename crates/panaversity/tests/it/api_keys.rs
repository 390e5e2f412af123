//! Production mode with API keys managed by the CLI, on SQLite (the data-dir file) and on
//! PostgreSQL (a fresh database; mandatory under REQUIRE_SERVICES=1): create → use (the audit
//! agent is the key's owner) → a read-only key cannot write → revoke → 401.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BOOK, LESSON, Mcp, Server, ServerOpts, TempData, backends, cli, cli_ok};

/// `fs keys create`; returns (key, id).
async fn create_key(
    data: &std::path::Path,
    env: &[(&str, &str)],
    owner: &str,
    scopes: &str,
) -> (String, String) {
    let out = cli_ok(
        data,
        env,
        &[
            "fs", "keys", "create", "--owner", owner, "--scopes", scopes, "--json",
        ],
    )
    .await;
    let v = out.json();
    let key = v["key"].as_str().expect("key").to_string();
    let id = v["info"]["id"].as_str().expect("id").to_string();
    assert_eq!(v["info"]["owner"], json!(owner), "{v}");
    assert!(!out.stdout.contains("hash"), "the key hash is not printed");
    (key, id)
}

fn assert_401(a: &crate::support::Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {a:?}");
    let www = a
        .headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate: {a:?}"));
    assert!(www.starts_with("Bearer"), "{what}: {www}");
    assert!(
        www.contains("resource_metadata=") && www.contains("/.well-known/oauth-protected-resource"),
        "{what}: {www}"
    );
}

async fn tools_list(mcp: &Mcp) -> crate::support::Answer {
    mcp.raw(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .await
}

#[tokio::test]
async fn api_key_lifecycle_on_sqlite_and_postgres() {
    for (label, url, _guard) in backends().await {
        let tmp = TempData::new();
        let data = tmp.data();
        let env_owned: Vec<(&str, String)> =
            url.iter().map(|u| ("DATABASE_URL", u.clone())).collect();
        let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (*k, v.as_str())).collect();

        // Keys are made in an existing store only (a new deployment: `migrate up` first).
        cli_ok(&data, &env, &["migrate", "up"]).await;
        let (writer_key, writer_id) = create_key(&data, &env, "agent-x", "read write").await;
        let (reader_key, _) = create_key(&data, &env, "agent-reader", "read").await;
        let (admin_key, _) = create_key(&data, &env, "ops-admin", "read write admin").await;
        // Without --json stdout is exactly the key, so the README's
        // `--header "Authorization: Bearer $(panaversity fs keys create …)"` works.
        let plain = cli_ok(
            &data,
            &env,
            &[
                "fs",
                "keys",
                "create",
                "--owner",
                "claude-code",
                "--scopes",
                "read",
            ],
        )
        .await;
        let plain_key = plain.stdout.trim_end_matches('\n');
        assert!(
            plain_key.starts_with("pvk_") && !plain_key.contains(char::is_whitespace),
            "{label}: {plain:?}"
        );
        assert!(plain.stderr.contains("shown only once"), "{plain:?}");
        let listed = cli_ok(&data, &env, &["fs", "keys", "list", "--json"]).await;
        let listed = listed.json();
        assert_eq!(listed.as_array().unwrap().len(), 4, "{label}: {listed}");
        assert!(
            !listed.to_string().contains(&writer_key),
            "{label}: list never shows a key"
        );

        let mut opts = ServerOpts::default();
        for (k, v) in &env {
            opts = opts.env(k, v);
        }
        let server = Server::start(&data, opts).await;
        let kind = if url.is_some() { "postgres" } else { "sqlite" };
        let log = server.log();
        assert!(
            log.contains(&format!("database=\"{kind}\""))
                || log.contains(&format!("database={kind}")),
            "{label}: {log}"
        );

        // No credentials, a made-up key, a malformed header: 401 with resource metadata.
        assert_401(&tools_list(&server.mcp(&[])).await, "no token");
        assert_401(
            &tools_list(&server.mcp_bearer("pvk_0000000000000000000000000000000000000000")).await,
            "unknown key",
        );
        assert_401(
            &tools_list(&server.mcp(&[("authorization", "Basic Zm9vOmJhcg==")])).await,
            "basic auth",
        );
        // The metadata document the 401 points at.
        let meta: Value = crate::support::client()
            .get(format!(
                "{}/.well-known/oauth-protected-resource",
                server.base
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            meta["resource"],
            json!(format!("{}/mcp", server.base)),
            "{meta}"
        );

        // The writer key works; its owner is the audit agent.
        // A dev-mode X-Agent-ID header is ignored in production.
        let writer = server.mcp(&[
            ("authorization", &format!("Bearer {writer_key}")),
            ("x-agent-id", "someone-else"),
        ]);
        assert_eq!(tools_list(&writer).await.status, 200, "{label}");
        let path = "content/01-Foundations/01-What-Is-A-Program/04-keys.md";
        let w = writer
            .ok(
                "write_content",
                json!({"book_id": BOOK, "path": path, "content": "# Keys\n"}),
            )
            .await;
        assert_eq!(w["mode"], json!("created"), "{label}: {w}");
        let q = cli_ok(
            &data,
            &env,
            &["fs", "audit", "query", "--book-id", BOOK, "--json"],
        )
        .await;
        let q = q.json();
        let row = q["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == json!(path))
            .unwrap_or_else(|| panic!("{label}: no audit row for {path}: {q}"))
            .clone();
        assert_eq!(row["agent_id"], json!("agent-x"), "{label}: {row}");
        assert_eq!(row["status"], json!("success"), "{label}: {row}");
        // The same through query_audit_log: admin only.
        writer
            .err(
                "query_audit_log",
                json!({"agent_id": "agent-x"}),
                "FORBIDDEN",
            )
            .await;
        let admin = server.mcp_bearer(&admin_key);
        let page = admin
            .ok(
                "query_audit_log",
                json!({"agent_id": "agent-x", "book_id": BOOK}),
            )
            .await;
        let rows = crate::dev_serve::audit_rows(&page);
        assert_eq!(rows.len(), 1, "{label}: {page}");
        assert_eq!(rows[0]["path"], json!(path));

        // A read-only key reads but cannot write.
        let reader = server.mcp_bearer(&reader_key);
        let r = reader
            .ok("read_content", json!({"book_id": BOOK, "path": path}))
            .await;
        assert_eq!(r["content"], json!("# Keys\n"));
        reader
            .err(
                "write_content",
                json!({"book_id": BOOK, "path": LESSON, "content": "x", "expected_hash": r["file_hash_sha256"]}),
                "FORBIDDEN",
            )
            .await;
        reader
            .err(
                "delete_content",
                json!({"book_id": BOOK, "path": path}),
                "FORBIDDEN",
            )
            .await;

        // Revoke through the CLI (another process): the key stops working within the 5 s
        // verification cache.
        let out = cli_ok(&data, &env, &["fs", "keys", "revoke", &writer_id]).await;
        assert!(out.stdout.contains(&writer_id), "{out:?}");
        let again = cli(&data, &env, &["fs", "keys", "revoke", &writer_id]).await;
        assert_ne!(again.code(), 0, "revoking twice reports failure");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let a = tools_list(&writer).await;
            if a.status == 401 {
                assert_401(&a, "revoked key");
                break;
            }
            assert_eq!(a.status, 200, "{label}: {a:?}");
            assert!(
                Instant::now() < deadline,
                "{label}: revoked key still accepted after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The other keys are unaffected.
        assert_eq!(tools_list(&reader).await.status, 200, "{label}");
        assert_eq!(
            tools_list(&server.mcp_bearer(plain_key)).await.status,
            200,
            "{label}"
        );
        server.stop().await;
    }
}
