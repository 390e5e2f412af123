//! Operator experience: the data dir is absolute and logged; an operator command run from
//! another directory finds the server's store through `PANAVERSITY_DATA_DIR` / `.env` / the config
//! file, and where there is none it fails naming the absolute path instead of making a second
//! store; scope names are checked; `migrate down` needs `--yes`; the Host check answers JSON that
//! names `PANAVERSITY_ALLOWED_HOSTS` and `--public-url`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{CliOutput, Server, ServerOpts, TempData, client, command};

/// Run `panaversity ARGS…` in `cwd` (no `--data-dir`), stdin closed.
pub async fn run_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let mut c = command(cwd);
    c.args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .unwrap_or_else(|_| panic!("panaversity {args:?} did not finish in 120 s"))
        .expect("run panaversity");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn operator_commands_find_the_servers_store_or_say_where_they_looked() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let srv = root.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    // The server runs from srv/ with the default relative ./data (production mode: keys needed).
    let data = srv.join("data");
    let opts = ServerOpts {
        no_data_dir: true,
        ..Default::default()
    };
    let server = Server::start(&data, opts).await;
    let log = server.log();
    assert!(
        log.contains(&format!("data_dir={}", data.display())),
        "the absolute data dir is logged: {log}"
    );

    // An operator in another directory, with no data dir named.
    let ops = root.join("ops");
    std::fs::create_dir_all(&ops).unwrap();
    for args in [
        vec!["fs", "keys", "create", "--owner", "ci", "--scopes", "read"],
        vec!["fs", "keys", "list"],
        vec!["fs", "fsck"],
        vec!["fs", "audit", "verify"],
        vec!["fs", "audit", "query"],
        vec!["migrate", "down", "--yes"],
    ] {
        let out = run_in(&ops, &[], &args).await;
        assert_ne!(out.code(), 0, "{args:?}: {out:?}");
        let looked_at = ops.join("data").join("panaversity.db");
        assert!(
            out.stderr.contains(&*looked_at.to_string_lossy()),
            "{args:?} names where it looked: {}",
            out.stderr
        );
        for hint in ["--data-dir", "PANAVERSITY_DATA_DIR", "--config"] {
            assert!(
                out.stderr.contains(hint),
                "{args:?}: {hint} in {}",
                out.stderr
            );
        }
        assert!(!ops.join("data").exists(), "{args:?} made no second store");
    }
    // An existing directory without a database is no store either.
    std::fs::create_dir_all(ops.join("data")).unwrap();
    let out = run_in(&ops, &[], &["fs", "keys", "list"]).await;
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(!ops.join("data/panaversity.db").exists());
    std::fs::remove_dir(ops.join("data")).unwrap();

    // Pointed at the server's store (environment, then .env), the key works on the server.
    let env = [("PANAVERSITY_DATA_DIR", data.to_str().unwrap())];
    let out = run_in(
        &ops,
        &env,
        &[
            "fs",
            "keys",
            "create",
            "--owner",
            "ops-agent",
            "--scopes",
            "read,write",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code(), 0, "{out:?}");
    let key = out.json()["key"].as_str().unwrap().to_string();
    let list = server.mcp_bearer(&key).ok("list_books", json!({})).await;
    assert!(list["count"].as_u64().unwrap() >= 1, "{list}");
    std::fs::write(
        ops.join(".env"),
        format!("PANAVERSITY_DATA_DIR={}\n", data.display()),
    )
    .unwrap();
    let out = run_in(&ops, &[], &["fs", "keys", "list", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.json().as_array().unwrap().len(), 1, "{}", out.stdout);
    let out = run_in(&ops, &[], &["fs", "audit", "verify", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    std::fs::remove_file(ops.join(".env")).unwrap();
    // A relative data_dir in a config file is relative to the file.
    std::fs::write(srv.join("panaversity.toml"), "data_dir = \"data\"\n").unwrap();
    let out = run_in(
        &ops,
        &[],
        &[
            "--config",
            "../srv/panaversity.toml",
            "fs",
            "keys",
            "list",
            "--json",
        ],
    )
    .await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert_eq!(out.json().as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn unknown_scope_names_are_refused() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let out = run_in(root, &[], &["migrate", "up"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    for scopes in ["read wrte", "read,admn", "reading", ""] {
        let out = run_in(
            root,
            &[],
            &["fs", "keys", "create", "--owner", "x", "--scopes", scopes],
        )
        .await;
        assert_ne!(out.code(), 0, "{scopes:?}: {out:?}");
        assert!(out.stdout.is_empty(), "no key printed: {out:?}");
        assert!(
            out.stderr.contains("read, write, admin"),
            "{scopes:?}: {}",
            out.stderr
        );
        if let Some(bad) = scopes.split([' ', ',']).find(|s| !["read", ""].contains(s)) {
            assert!(out.stderr.contains(&format!("\"{bad}\"")), "{}", out.stderr);
        }
    }
    let out = run_in(root, &[], &["fs", "keys", "list", "--json"]).await;
    assert_eq!(out.json(), json!([]), "no key was made");
    for (scopes, want) in [
        (
            "read write",
            json!({"read": true, "write": true, "admin": false}),
        ),
        (
            "read,write",
            json!({"read": true, "write": true, "admin": false}),
        ),
        (
            " read ,  write ",
            json!({"read": true, "write": true, "admin": false}),
        ),
        (
            "read",
            json!({"read": true, "write": false, "admin": false}),
        ),
        ("admin", json!({"read": true, "write": true, "admin": true})),
    ] {
        let out = run_in(
            root,
            &[],
            &[
                "fs", "keys", "create", "--owner", "x", "--scopes", scopes, "--json",
            ],
        )
        .await;
        assert_eq!(out.code(), 0, "{scopes:?}: {out:?}");
        assert_eq!(out.json()["info"]["scopes"], want, "{scopes:?}");
    }
}

async fn tables(db_file: &Path) -> Vec<String> {
    let db = platform::db::Db::connect(
        &platform::db::sqlite_url_for(db_file),
        &platform::db::PoolSettings::default(),
    )
    .await
    .unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite%' ORDER BY name",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    db.pool().close().await;
    names
}

#[tokio::test]
async fn migrate_down_shows_what_it_would_drop_and_needs_yes() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    assert_eq!(run_in(root, &[], &["migrate", "up"]).await.code(), 0);
    assert_eq!(run_in(root, &[], &["fs", "seed"]).await.code(), 0);
    let db_file = root.join("data/panaversity.db");
    let before = tables(&db_file).await;
    assert!(before.contains(&"file_journal".to_string()), "{before:?}");

    let out = run_in(root, &[], &["migrate", "down"]).await;
    assert_eq!(out.code(), 2, "{out:?}");
    for t in [
        "file_journal (",
        "audit_log (",
        "api_keys (0 rows)",
        "study_threads (0 rows)",
    ] {
        assert!(out.stdout.contains(t), "{t} in {}", out.stdout);
    }
    assert!(
        out.stdout.contains(&*db_file.to_string_lossy()),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("--yes") && out.stderr.contains("nothing was changed"),
        "{out:?}"
    );
    assert_eq!(tables(&db_file).await, before, "nothing dropped");
    let out = run_in(root, &[], &["fs", "fsck", "--json"]).await;
    assert_eq!(out.code(), 0, "the store still works: {out:?}");

    let out = run_in(root, &[], &["migrate", "down", "--yes"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(out.stdout.contains("migrations reverted"), "{out:?}");
    assert!(
        tables(&db_file).await.is_empty(),
        "{:?}",
        tables(&db_file).await
    );
    // Nothing left to drop: it says so, and still asks for --yes.
    let out = run_in(root, &[], &["migrate", "down"]).await;
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stdout.contains("drop 0 tables"), "{}", out.stdout);
}

async fn assert_forbidden_host(base: &str, path: &str, host: &str) {
    let r = client()
        .post(format!("{base}{path}"))
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{path} {host}");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], json!("FORBIDDEN_HOST"), "{v}");
    assert_eq!(v["error"]["host"], json!(host), "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    for needle in ["PANAVERSITY_ALLOWED_HOSTS", "--public-url", host] {
        assert!(msg.contains(needle), "{needle} in {msg}");
    }
}

#[tokio::test]
async fn a_foreign_host_gets_json_naming_the_setting() {
    // Production mode bound to every address (as in the container): /mcp checks the Host before
    // credentials.
    let tmp = TempData::new();
    let opts = ServerOpts {
        serve_args: vec!["--bind".into(), "0.0.0.0:0".into()],
        no_bind: true,
        ..Default::default()
    };
    let server = Server::start(&tmp.data(), opts).await;
    let port = server.addr.port();
    assert_forbidden_host(&server.base, "/mcp", &format!("203.0.113.7:{port}")).await;
    assert_forbidden_host(&server.base, "/mcp", "evil.example").await;
    // Loopback names pass the Host check (then need credentials).
    let r = client()
        .post(format!("{}/mcp", server.base))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    server.stop().await;

    // Dev mode checks every route the same way; the public URL's host and PANAVERSITY_ALLOWED_HOSTS
    // are allowed.
    let tmp = TempData::new();
    let opts = ServerOpts::dev()
        .env("PANAVERSITY_PUBLIC_URL", "https://api.example.com")
        .env(
            "PANAVERSITY_ALLOWED_HOSTS",
            "localhost,127.0.0.1,books.example",
        );
    let server = Server::start(&tmp.data(), opts).await;
    assert_forbidden_host(&server.base, "/mcp", "evil.example").await;
    assert_forbidden_host(&server.base, "/chatkit", "evil.example").await;
    for host in ["api.example.com", "books.example:443", "127.0.0.1"] {
        let r = client()
            .post(format!("{}/mcp", server.base))
            .header("host", host)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    server.stop().await;
}
