//! Integration tests for the study crate (one test binary).

mod chatkit_protocol;
mod chatkit_validate;
mod fake_llm;
mod lessons_cache;
mod lessons_http;
mod lessons_perf;
mod lessons_pfs;
mod lessons_source;
mod llm_e2e;
mod store;
mod support;
mod turns;
mod tutor_e2e;
mod tutor_llm;
mod tutor_teach;
