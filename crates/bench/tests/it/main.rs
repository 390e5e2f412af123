//! Integration tests of pv-bench's own machinery: the fake LLM (spawned as the real
//! `pv-bench fake-llm` process) must speak the OpenAI Chat Completions protocol well enough for
//! the server's real LLM client, and its hold/release gate must keep streams open.

mod fake_llm;
