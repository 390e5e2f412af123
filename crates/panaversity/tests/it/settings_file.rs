//! One typed set of settings fed by flags, the environment, `.env` files and a config file:
//! a config file with every setting (the list comes from the binary, so a new setting cannot be
//! forgotten here) is accepted and each value is the one the command uses; the settings the old
//! environment rewriting dropped (`admin_secret`, `github_*`, `openai_*`/`study_*_model`) take
//! effect in a running server; an unknown key is refused by name with the nearest valid one;
//! precedence is flag > environment > `.env` > config file > default; `.env` is read and the
//! real environment wins over it; `--config .env.example` works and `.env.example` is right.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::operator::run_in;
use crate::support::{LESSON_DOC, Server, ServerOpts, TempData, client, spawn_router};

/// A non-default, valid value for every setting, as TOML. A new setting fails the test below
/// until it gets a value here.
const VALUES: &[(&str, &str)] = &[
    ("admin_secret", r#""file-admin-secret""#),
    ("allow_dev_mode_public", "true"),
    ("allowed_hosts", r#"["docs.example", "api.example"]"#),
    ("allowed_origins", r#""https://learn.example""#),
    ("api_key", r#""file-api-key""#),
    ("api_key_verify_url", r#""https://sso.example/verify""#),
    ("archive_signing_key", r#""file-signing-key""#),
    ("archive_time_budget_secs", "2.5"),
    ("auth_negative_cache_secs", "31"),
    ("auth_remote_per_minute", "61"),
    ("auth_server_url", r#""https://sso.example""#),
    ("bind", r#""127.0.0.1:0""#),
    ("blob_cache_mb", "65"),
    ("blob_sync_ms", "201"),
    ("book_id", r#""file-book""#),
    ("cdn_base_url", r#""https://cdn.example""#),
    ("data_dir", r#""file-data""#),
    ("database_url", r#""postgres://file@127.0.0.1:1/file""#),
    ("db_acquire_timeout", "6"),
    ("db_min_connections", "2"),
    ("db_pool_size", "17"),
    ("db_schema", r#""file_schema""#),
    ("db_sqlite_direct", "false"),
    ("db_statement_timeout", "16"),
    ("db_test_before_acquire", "false"),
    ("default_profile", r#""docusaurus""#),
    ("dev_agent_id", r#""file-agent""#),
    ("dev_mode", "true"),
    ("github_branch", r#""file-branch""#),
    ("github_docs_path", r#""file/docs""#),
    ("github_raw_base_url", r#""http://127.0.0.1:9""#),
    ("github_repo", r#""file/repo""#),
    ("github_token", r#""file-gh-token""#),
    ("grep_max_scan_bytes", "1000"),
    ("grep_threads", "1"),
    ("grep_timeout_ms", "5001"),
    ("header_read_timeout_secs", "11"),
    ("hydrate_from_archive", "true"),
    ("idle_timeout_secs", "61"),
    ("jwks_cache_ttl", "3601"),
    ("jwks_url", r#""https://sso.example/jwks""#),
    ("jwt_audience", r#""file-aud""#),
    ("jwt_issuer", r#""https://issuer.example""#),
    ("llm_connect_timeout_secs", "6"),
    ("llm_first_token_timeout_secs", "61"),
    ("llm_idle_timeout_secs", "31"),
    ("llm_max_retries", "3"),
    ("log_format", r#""json""#),
    ("log_level", r#""debug""#),
    ("manifest_file", r#""file-manifest.json""#),
    ("max_asset_size_mb", "101"),
    ("max_body_bytes", "1000000"),
    ("max_connections", "100"),
    ("max_content_bytes", "1000001"),
    ("max_inline_asset_bytes", "1000002"),
    ("mcp_retries", "4"),
    ("mcp_timeout", "121"),
    ("mcp_url", r#""http://127.0.0.1:9/file""#),
    ("no_sample", "true"),
    ("openai_api_key", r#""sk-file""#),
    ("openai_base_url", r#""http://127.0.0.1:9/v1""#),
    ("output_dir", r#""file-out""#),
    ("presign_expiry_seconds", "901"),
    ("public_url", r#""https://api.example""#),
    ("reconcile_interval_secs", "31"),
    ("redis_url", r#""redis://127.0.0.1:1/""#),
    ("s3_access_key_id", r#""file-akid""#),
    ("s3_bucket", r#""file-bucket""#),
    ("s3_endpoint", r#""http://127.0.0.1:9""#),
    ("s3_region", r#""file-region""#),
    ("s3_secret_access_key", r#""file-secret""#),
    ("source_dir", r#""file-src""#),
    ("static_dir", r#""file-static""#),
    ("stdio_agent_id", r#""file-stdio-agent""#),
    ("storage_backend", r#""memory""#),
    ("storage_root", r#""file-storage""#),
    ("storage_timeout_seconds", "31"),
    ("study_ask_model", r#""file-ask""#),
    ("study_dedupe_window_secs", "11"),
    ("study_detached_turn_secs", "121"),
    ("study_dev_user_name", r#""File User""#),
    ("study_docs_dir", r#""file-docs""#),
    ("study_lesson_book", r#""file-lesson-book""#),
    ("study_lesson_cache_ttl_secs", "86401"),
    ("study_lesson_source", r#""github""#),
    ("study_max_body_bytes", "1048577"),
    ("study_rate_limit", "21"),
    ("study_rate_window_seconds", "61"),
    ("study_stream_bus", r#""redis""#),
    ("study_stream_checkpoint_bytes", "2049"),
    ("study_stream_checkpoint_ms", "251"),
    ("study_stream_lease_secs", "31"),
    ("study_teach_model", r#""file-teach""#),
    ("study_turn_retain_secs", "121"),
    ("userinfo_url", r#""https://sso.example/userinfo""#),
];

/// `panaversity settings --json`.
async fn catalog(cwd: &Path) -> Vec<Value> {
    let out = run_in(cwd, &[], &["settings", "--json"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
    out.json().as_array().expect("a list").clone()
}

/// `panaversity ARGS… --show-settings=json` → key → (value, origin kind).
async fn show(
    cwd: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> BTreeMap<String, (Value, String)> {
    let mut a: Vec<&str> = args.to_vec();
    a.push("--show-settings=json");
    let out = run_in(cwd, env, &a).await;
    assert_eq!(out.code(), 0, "{args:?}: {out:?}");
    out.json()
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                (
                    r["value"].clone(),
                    r["origin"]["kind"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// The value `--show-settings` prints for a TOML value.
fn shown(setting: &Value, toml_value: &str, dir: &Path) -> Value {
    if setting["secret"] == json!(true) {
        return json!("***");
    }
    let v: toml::Value =
        toml::from_str::<toml::Table>(&format!("v = {toml_value}")).unwrap()["v"].clone();
    let text = match v {
        toml::Value::String(s) => s,
        toml::Value::Array(a) => a
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    if setting["path"] == json!(true) {
        return json!(dir.join(text).to_string_lossy());
    }
    json!(text)
}

#[tokio::test]
async fn a_config_file_with_every_setting_is_accepted_and_each_value_is_used() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let settings = catalog(root).await;
    let known: BTreeSet<String> = settings
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = VALUES.iter().map(|(k, _)| k.to_string()).collect();
    let missing: Vec<_> = known.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&known).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "settings without a test value here: {missing:?}; values for settings that no longer exist: {stale:?}"
    );
    for s in &settings {
        assert!(
            s["env"].as_str().is_some() && s["flag"].as_str().unwrap().starts_with("--"),
            "{s}"
        );
    }

    // The file lives elsewhere than the working directory: relative paths in it are relative to it.
    let conf_dir = root.join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let file = conf_dir.join("panaversity.toml");
    let body: String = VALUES.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    std::fs::write(&file, body).unwrap();
    let cwd = root.join("elsewhere");
    std::fs::create_dir_all(&cwd).unwrap();
    let cfg = file.to_string_lossy().to_string();

    let mut seen: BTreeMap<String, (Value, String)> = BTreeMap::new();
    for command in [
        vec!["serve"],
        vec!["fs", "stdio"],
        vec!["fs", "fsck"],
        vec!["fs", "audit", "verify"],
        vec!["fs", "ingest"],
        vec!["fs", "hydrate"],
        vec!["study", "check-llm"],
    ] {
        let mut args = vec!["--config", cfg.as_str()];
        args.extend(command.iter().copied());
        seen.extend(show(&cwd, &[], &args).await);
    }
    for s in &settings {
        let key = s["key"].as_str().unwrap();
        let toml_value = VALUES.iter().find(|(k, _)| *k == key).unwrap().1;
        let (value, origin) = seen.get(key).unwrap_or_else(|| {
            panic!("{key} ({}) is read by no command tried here", s["commands"])
        });
        assert_eq!(origin, "config_file", "{key}: {value}");
        assert_eq!(*value, shown(s, toml_value, &conf_dir), "{key}");
    }
    // fs ingest's required --book-id and --source-dir came from the file too (checked above).
}

#[tokio::test]
async fn unknown_keys_and_bad_values_are_refused_by_name() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    for (body, needles) in [
        (
            "bnd = \"127.0.0.1:1\"\n",
            vec!["`bnd`", "did you mean `bind`"],
        ),
        (
            "admin_secert = \"x\"\n",
            vec!["`admin_secert`", "did you mean `admin_secret`"],
        ),
        (
            "completely_unrelated = 1\n",
            vec!["`completely_unrelated`", "panaversity settings"],
        ),
        ("[server]\nbind = \"x\"\n", vec!["`server`", "flat"]),
        (
            "max_connections = \"lots\"\n",
            vec!["`max_connections`", "\"lots\"", "invalid digit"],
        ),
        (
            "storage_backend = \"ftp\"\n",
            vec!["`storage_backend`", "fs, s3, memory"],
        ),
        ("bind = \n", vec!["parsing config file", "TOML"]),
    ] {
        let file = root.join("bad.toml");
        std::fs::write(&file, body).unwrap();
        let out = run_in(root, &[], &["--config", &file.to_string_lossy(), "serve"]).await;
        assert_eq!(out.code(), 2, "{body}: {out:?}");
        for n in needles {
            assert!(out.stderr.contains(n), "{body}: {n} in {}", out.stderr);
        }
        assert!(
            out.stderr.contains(&*file.to_string_lossy()),
            "names the file: {}",
            out.stderr
        );
        assert!(!root.join("data").exists(), "{body}: nothing started");
    }
    // A typo in a variable of ours in .env is an error too; another tool's variable is not.
    std::fs::write(
        root.join(".env"),
        "PANAVERSITY_BIDN=127.0.0.1:1\nCOMPOSE_PROJECT_NAME=x\n",
    )
    .unwrap();
    let out = run_in(root, &[], &["serve", "--show-settings"]).await;
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(
        out.stderr.contains("PANAVERSITY_BIDN")
            && out.stderr.contains("did you mean PANAVERSITY_BIND"),
        "{out:?}"
    );
    std::fs::write(root.join(".env"), "COMPOSE_PROJECT_NAME=x\n").unwrap();
    let out = run_in(root, &[], &["serve", "--show-settings"]).await;
    assert_eq!(out.code(), 0, "{out:?}");
}

#[tokio::test]
async fn precedence_is_flag_then_environment_then_dotenv_then_file_then_default() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let file = root.join("p.toml");
    std::fs::write(&file, "study_rate_limit = 21\nbind = \"127.0.0.1:2\"\n").unwrap();
    let cfg = file.to_string_lossy().to_string();
    let rate = |m: &BTreeMap<String, (Value, String)>| m["study_rate_limit"].clone();

    let m = show(root, &[], &["serve"]).await;
    assert_eq!(rate(&m), (json!("20"), "default".into()));
    let m = show(root, &[], &["--config", &cfg, "serve"]).await;
    assert_eq!(rate(&m), (json!("21"), "config_file".into()));
    // PANAVERSITY_CONFIG names the file as well.
    let m = show(root, &[("PANAVERSITY_CONFIG", &cfg)], &["serve"]).await;
    assert_eq!(rate(&m), (json!("21"), "config_file".into()));
    std::fs::write(root.join(".env"), "STUDY_RATE_LIMIT=22\n").unwrap();
    let m = show(root, &[], &["--config", &cfg, "serve"]).await;
    assert_eq!(rate(&m), (json!("22"), "dot_env".into()));
    assert_eq!(
        m["bind"],
        (json!("127.0.0.1:2"), "config_file".into()),
        "the rest still from the file"
    );
    let env = [("STUDY_RATE_LIMIT", "23")];
    let m = show(root, &env, &["--config", &cfg, "serve"]).await;
    assert_eq!(rate(&m), (json!("23"), "env".into()));
    let m = show(
        root,
        &env,
        &["--config", &cfg, "serve", "--rate-limit", "24"],
    )
    .await;
    assert_eq!(rate(&m), (json!("24"), "flag".into()));
    // The predecessor's variables sit with the environment: above the file, below ours.
    let m = show(root, &[("LOG_LEVEL", "WARN")], &["--config", &cfg, "serve"]).await;
    assert_eq!(m["log_level"], (json!("warn"), "predecessor".into()));
    let m = show(
        root,
        &[("LOG_LEVEL", "WARN"), ("PANAVERSITY_LOG_LEVEL", "error")],
        &["serve"],
    )
    .await;
    assert_eq!(m["log_level"], (json!("error"), "env".into()));
}

/// Serves `{repo}/{branch}/{path}.md` with a marker and records each path and Authorization.
async fn start_raw_github(calls: Arc<Mutex<Vec<(String, String)>>>) -> String {
    let app = Router::new().fallback(get(move |uri: Uri, headers: HeaderMap| {
        let calls = calls.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            calls.lock().unwrap().push((uri.path().to_string(), auth));
            "# A lesson from GitHub\n\nGITHUB-LESSON-MARKER-51c2\n"
        }
    }));
    format!("http://{}", spawn_router(app).await)
}

/// A model answering "ok" and recording each request's Authorization and body.
async fn start_llm(calls: Arc<Mutex<Vec<(String, Value)>>>) -> String {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let calls = calls.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                calls.lock().unwrap().push((auth, body.0));
                crate::support::streamed_ok()
            }
        }),
    );
    format!("http://{}/v1", spawn_router(app).await)
}

#[tokio::test]
async fn settings_the_old_config_file_dropped_take_effect() {
    let github_calls = Arc::new(Mutex::new(Vec::new()));
    let raw = start_raw_github(github_calls.clone()).await;
    let llm_calls = Arc::new(Mutex::new(Vec::new()));
    let llm = start_llm(llm_calls.clone()).await;
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let file = root.join("server.toml");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:0\"\n\
             data_dir = \"data\"\n\
             dev_mode = true\n\
             no_sample = true\n\
             admin_secret = \"file-admin-secret\"\n\
             allowed_hosts = [\"docs.example\", \"localhost\", \"127.0.0.1\"]\n\
             github_repo = \"acme/book\"\n\
             github_branch = \"b1\"\n\
             github_docs_path = \"docs\"\n\
             github_token = \"file-gh-token\"\n\
             github_raw_base_url = \"{raw}\"\n\
             openai_base_url = \"{llm}\"\n\
             openai_api_key = \"sk-file\"\n\
             study_ask_model = \"file-ask\"\n\
             llm_max_retries = 0\n"
        ),
    )
    .unwrap();
    let opts = ServerOpts {
        global_args: vec!["--config".into(), file.to_string_lossy().into()],
        no_data_dir: true,
        no_bind: true,
        ..Default::default()
    };
    let server = Server::start(&tmp.data(), opts).await;
    let http = client();
    let base = &server.base;
    assert!(
        tmp.data().join("panaversity.db").exists(),
        "data_dir relative to the file"
    );
    assert!(server.log().contains("source=Github"), "{}", server.log());

    // admin_secret
    let r = http
        .post(format!("{base}/admin/invalidate-cache"))
        .header("x-admin-secret", "file-admin-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    // allowed_hosts (dev mode checks every route)
    let r = http
        .get(format!("{base}/health"))
        .header("host", "docs.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/health"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // github_* and the LLM provider: the tutor teaches the GitHub lesson through the file's model.
    let r = http
        .post(format!("{base}/chatkit?lesson_path={LESSON_DOC}"))
        .header("x-user-id", "student-1")
        .json(&crate::support::threads_create(
            "Summarise this lesson",
            "ask",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let gh = github_calls.lock().unwrap().clone();
    assert!(
        gh.iter()
            .any(|(p, a)| p.starts_with("/acme/book/b1/docs/") && a == "token file-gh-token"),
        "{gh:?}"
    );
    let calls = llm_calls.lock().unwrap().clone();
    let (auth, body) = calls.last().expect("the model was called");
    assert_eq!(auth, "Bearer sk-file");
    assert_eq!(body["model"], json!("file-ask"));
    assert!(
        body["messages"]
            .to_string()
            .contains("GITHUB-LESSON-MARKER-51c2"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn dotenv_is_read_and_the_environment_wins() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    std::fs::write(
        root.join(".env"),
        "# a 12-factor .env\n\
         PANAVERSITY_DATA_DIR=./from-dotenv\n\
         PANAVERSITY_DEV_MODE=true\n\
         PANAVERSITY_NO_SAMPLE=true\n\
         ADMIN_SECRET=dotenv-secret\n\
         PANAVERSITY_BIND=127.0.0.1:0\n",
    )
    .unwrap();
    let data = root.join("from-dotenv");
    let opts = ServerOpts {
        no_data_dir: true,
        no_bind: true,
        ..Default::default()
    }
    .env("ADMIN_SECRET", "real-secret");
    let server = Server::start(&data, opts).await;
    assert!(data.join("panaversity.db").exists());
    assert!(server.log().contains(".env"), "{}", server.log());
    let admin = |secret: &'static str| {
        let url = format!("{}/admin/invalidate-cache", server.base);
        async move {
            client()
                .post(url)
                .header("x-admin-secret", secret)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(admin("real-secret").await, 200, "the environment wins");
    assert_eq!(admin("dotenv-secret").await, 401);
    // Dev mode from .env: MCP answers without credentials.
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(books["count"], json!(0), "no_sample from .env: {books}");
    server.stop().await;
}

/// `.env.example` in the repository.
fn env_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example")
}

#[tokio::test]
async fn dotenv_example_is_correct_and_works_as_config() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let settings = catalog(root).await;
    let by_env: BTreeMap<String, &Value> = settings
        .iter()
        .map(|s| (s["env"].as_str().unwrap().to_string(), s))
        .collect();
    let text = std::fs::read_to_string(env_example()).unwrap();
    // Every variable it names (set or commented out) is a setting, or a predecessor's variable
    // it documents; every value it sets is the default.
    let mut named = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        let Some((name, value)) = l.split_once('=') else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        named.insert(name.to_string());
        if name == "SSO_URL" || name == "PANAVERSITY_CONFIG" {
            continue;
        }
        let s = by_env
            .get(name)
            .unwrap_or_else(|| panic!(".env.example names {name}, which is no setting"));
        if !line.starts_with('#') {
            assert_eq!(
                s["default"].as_str(),
                Some(value),
                ".env.example sets {name}={value}, but the default is {}",
                s["default"]
            );
        }
    }
    let undocumented: Vec<_> = by_env
        .keys()
        .filter(|e| !named.contains(*e))
        .filter(|e| {
            // Operator-side settings of fs ingest/hydrate and fs stdio are documented in README.
            let cmds = by_env[*e]["commands"].to_string();
            cmds.contains("serve") || cmds.contains("every command")
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        ".env.example lacks {undocumented:?}"
    );

    // As --config (by its name), and as a file named otherwise (by its content).
    let example = env_example();
    let m = show(
        root,
        &[],
        &["--config", &example.to_string_lossy(), "serve"],
    )
    .await;
    assert_eq!(m["study_rate_limit"], (json!("20"), "config_file".into()));
    let renamed = root.join("panaversity.conf");
    std::fs::copy(&example, &renamed).unwrap();
    let m = show(
        root,
        &[],
        &["--config", &renamed.to_string_lossy(), "serve"],
    )
    .await;
    assert_eq!(m["bind"], (json!("127.0.0.1:8000"), "config_file".into()));
    // Copied to .env, it is read from the working directory.
    std::fs::copy(&example, root.join(".env")).unwrap();
    let m = show(root, &[], &["serve"]).await;
    assert_eq!(m["bind"], (json!("127.0.0.1:8000"), "dot_env".into()));
    assert_eq!(
        m["data_dir"],
        (json!(root.join("data").to_string_lossy()), "dot_env".into())
    );
}
