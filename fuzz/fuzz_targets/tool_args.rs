//! MCP tool arguments from arbitrary JSON: decoding (flat or the legacy `{"params": …}` form, lax
//! numbers and booleans) never panics, for every argument type the tools take.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfs_mcp::args::*;
use serde_json::{Map, Value};

fn decode_all(obj: Map<String, Value>) {
    let _ = decode_args::<ReadContentArgs>(obj.clone());
    let _ = decode_args::<WriteContentArgs>(obj.clone());
    let _ = decode_args::<EditContentArgs>(obj.clone());
    let _ = decode_args::<UploadAssetArgs>(obj.clone());
    let _ = decode_args::<GetAssetArgs>(obj.clone());
    let _ = decode_args::<GlobSearchArgs>(obj.clone());
    let _ = decode_args::<GrepSearchArgs>(obj);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(data) {
        decode_all(obj);
    }
});
