//! The official TypeScript MCP SDK client (`@modelcontextprotocol/sdk`) against the real server
//! (tests/ts/mcp_e2e.mjs). The SDK validates the tool list with its zod schemas and every
//! `structuredContent` against the tool's output schema, as TypeScript clients do.
//!
//! Node comes from `$MCP_NODE` (default `node`). Without `tests/ts/node_modules` (see the install
//! command below) the test skips with a note, except under REQUIRE_SERVICES=1 (CI), where it
//! fails.

use std::path::{Path, PathBuf};

use crate::support::{BOOK, databases, start};

const INSTALL: &str = "npm ci --no-audit --no-fund --prefix crates/pfs-mcp/tests/ts";

fn node() -> String {
    std::env::var("MCP_NODE").unwrap_or_else(|_| "node".into())
}

fn required() -> bool {
    std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ts")
}

fn has_sdk(dir: &Path) -> bool {
    dir.join("node_modules/@modelcontextprotocol/sdk/package.json")
        .is_file()
}

#[tokio::test]
async fn official_typescript_client_end_to_end() {
    let dir = script_dir();
    if !has_sdk(&dir) {
        assert!(
            !required(),
            "REQUIRE_SERVICES=1 but {} has no @modelcontextprotocol/sdk: {INSTALL}",
            dir.display()
        );
        eprintln!("SKIP: the TypeScript MCP SDK is not installed; run {INSTALL}");
        return;
    }
    for db in databases().await {
        let server = start(db).await;
        let out = tokio::process::Command::new(node())
            .current_dir(&dir)
            .arg("mcp_e2e.mjs")
            .arg(&server.base)
            .arg(BOOK)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {}: {e}", node()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "mcp_e2e.mjs failed on {:?}:\n{stdout}\n{stderr}",
            server.kind
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        eprintln!(
            "mcp_e2e.mjs on {:?}: {}",
            server.kind,
            stdout.lines().last().unwrap_or("")
        );
    }
}
