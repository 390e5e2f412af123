//! End-to-end tests of the `panaversity` binary: each test spawns the real executable (server,
//! CLI or stdio) with a temp data dir and talks to it the way an operator or a client does.

mod api_keys;
mod browser;
mod check_llm;
mod cli;
mod config_file;
mod crash_stream;
mod cutover;
mod dev_serve;
mod disk_full;
mod http_hardening;
mod jwt;
mod operator;
mod power_loss;
mod predecessor_env;
mod reconciler;
mod redis;
mod resume_replicas;
mod security;
mod settings_file;
mod shutdown;
mod stdio;
mod study_page;
mod support;
mod sync;
mod tutor_source;
