//! Integration tests for the study crate (one test binary).

mod chatkit_protocol;
mod chatkit_validate;
mod fake_llm;
mod store;
mod support;
mod tutor_llm;
mod lessons_source;
mod lessons_cache;
mod tutor_teach;
mod lessons_http;
mod tutor_e2e;
mod lessons_pfs;
mod lessons_perf;
