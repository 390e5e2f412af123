//! Ids with the ChatKit prefixes and 128 random bits (32 lowercase hex digits).

use rand::RngCore;

/// Prefix of thread ids.
pub const THREAD: &str = "thr";
/// Prefix of message item ids (user and assistant).
pub const MESSAGE: &str = "msg";
/// Prefix of client tool call items.
pub const TOOL_CALL: &str = "tc";
/// Prefix of workflow items.
pub const WORKFLOW: &str = "wf";
/// Prefix of task items.
pub const TASK: &str = "tsk";
/// Prefix of hidden context items.
pub const HIDDEN: &str = "shcx";

/// A new id `"{prefix}_{32 hex digits}"` from 16 bytes of the OS-seeded CSPRNG.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The id prefix ChatKit uses for an item of this wire type.
pub fn prefix_for_item_type(item_type: &str) -> &'static str {
    match item_type {
        "client_tool_call" => TOOL_CALL,
        "workflow" => WORKFLOW,
        "task" => TASK,
        "hidden_context_item" | "sdk_hidden_context" => HIDDEN,
        _ => MESSAGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_long() {
        let a = new_id(THREAD);
        let b = new_id(THREAD);
        assert!(a.starts_with("thr_"));
        assert_eq!(a.len(), 4 + 32);
        assert_ne!(a, b);
        assert_eq!(prefix_for_item_type("client_tool_call"), "tc");
    }
}
