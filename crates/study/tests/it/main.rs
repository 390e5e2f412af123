//! Integration tests for the study crate (one test binary).

mod fake_llm;
mod tutor_llm;
