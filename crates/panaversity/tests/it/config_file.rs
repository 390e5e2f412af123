//! `--config file.toml`: bind address and data dir come from the file; environment variables
//! override the file; flags override both.

use serde_json::json;

use crate::support::{Server, ServerOpts, TempData, cli};

#[tokio::test]
async fn config_file_gives_bind_and_data_dir_and_env_overrides_it() {
    let tmp = TempData::new();
    let root = tmp.dir.path();
    let from_file = root.join("data-from-file");
    let from_env = root.join("data-from-env");
    let config = root.join("panaversity.toml");
    std::fs::write(
        &config,
        format!(
            "# flat keys: variable names with or without the PANAVERSITY_ prefix\n\
             bind = \"127.0.0.1:0\"\n\
             data_dir = {:?}\n\
             PANAVERSITY_DEV_MODE = true\n\
             no_sample = true\n",
            from_file.to_string_lossy()
        ),
    )
    .unwrap();
    let cfg = config.to_string_lossy().to_string();

    // Everything from the file: no --bind, no --data-dir.
    let opts = ServerOpts {
        global_args: vec!["--config".into(), cfg.clone()],
        no_data_dir: true,
        no_bind: true,
        ..Default::default()
    };
    let server = Server::start(&from_file, opts.clone()).await;
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 8000);
    assert!(from_file.join("panaversity.db").exists());
    assert!(from_file.join("storage").is_dir());
    // Dev mode (from the file) and no sample (from the file).
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(books["count"], json!(0), "{books}");
    server.stop().await;

    // The environment beats the file: another data dir and another loopback address.
    let opts_env = ServerOpts {
        global_args: vec![format!("--config={cfg}")],
        ..opts.clone()
    }
    .env("PANAVERSITY_DATA_DIR", &from_env.to_string_lossy())
    .env("PANAVERSITY_BIND", "127.0.0.2:0");
    let server = Server::start(&from_env, opts_env).await;
    assert_eq!(server.addr.ip().to_string(), "127.0.0.2");
    assert!(from_env.join("panaversity.db").exists());
    server.stop().await;

    // PANAVERSITY_CONFIG names the file too; a flag beats both file and environment.
    let flag_dir = root.join("data-from-flag");
    let opts_flag = ServerOpts {
        global_args: vec![],
        no_data_dir: false,
        no_bind: true,
        ..Default::default()
    }
    .env("PANAVERSITY_CONFIG", &cfg)
    .env("PANAVERSITY_DATA_DIR", &from_env.to_string_lossy());
    let server = Server::start(&flag_dir, opts_flag).await;
    assert!(flag_dir.join("panaversity.db").exists());
    let books = server.mcp(&[]).ok("list_books", json!({})).await;
    assert_eq!(
        books["count"],
        json!(0),
        "dev mode and no_sample from the file: {books}"
    );
    server.stop().await;

    // A broken config file is a clear error, not a silent default.
    let bad = root.join("bad.toml");
    std::fs::write(&bad, "bind = \n").unwrap();
    let out = cli(
        &root.join("unused"),
        &[],
        &["--config", &bad.to_string_lossy(), "serve"],
    )
    .await;
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.stderr.contains("parsing config file"), "{out:?}");
    let out = cli(
        &root.join("unused"),
        &[],
        &[
            "--config",
            &root.join("missing.toml").to_string_lossy(),
            "serve",
        ],
    )
    .await;
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains("reading config file"), "{out:?}");
}
