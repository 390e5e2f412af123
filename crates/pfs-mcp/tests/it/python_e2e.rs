//! The official Python `mcp` client against the real server (tests/mcp_e2e.py).
//!
//! Python comes from `$MCP_PYTHON` (default `python3`). Without the `mcp` package the test skips
//! with a note, except under REQUIRE_SERVICES=1 (CI), where it fails.

use std::path::PathBuf;
use std::process::Stdio;

use crate::support::{BOOK, databases, start};

fn python() -> String {
    std::env::var("MCP_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn required() -> bool {
    std::env::var("REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

async fn has_mcp() -> bool {
    tokio::process::Command::new(python())
        .args(["-c", "import mcp, httpx2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn official_python_client_end_to_end() {
    if !has_mcp().await {
        assert!(
            !required(),
            "REQUIRE_SERVICES=1 but {} cannot import mcp: pip install -r crates/pfs-mcp/tests/requirements.txt",
            python()
        );
        eprintln!(
            "SKIP: {} has no `mcp` package; install crates/pfs-mcp/tests/requirements.txt",
            python()
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_e2e.py");
    for db in databases().await {
        let server = start(db).await;
        let out = tokio::process::Command::new(python())
            .arg(&script)
            .arg(&server.base)
            .arg(BOOK)
            .output()
            .await
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "mcp_e2e.py failed on {:?}:\n{stdout}\n{stderr}",
            server.kind
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        eprintln!(
            "mcp_e2e.py on {:?}: {}",
            server.kind,
            stdout.lines().last().unwrap_or("")
        );
    }
}
