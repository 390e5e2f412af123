//! `panaversity study …`: Study Mode operator commands.

use std::process::ExitCode;

use clap::Subcommand;

/// Study Mode commands.
#[derive(Debug, Subcommand)]
pub enum StudyCmd {
    /// Make one tiny call to the configured LLM provider for each mode's model (OPENAI_BASE_URL,
    /// OPENAI_API_KEY, STUDY_TEACH_MODEL, STUDY_ASK_MODEL) and say exactly what is wrong:
    /// auth, model not found, unreachable, timeout. Exit 0 when every model answered.
    CheckLlm(crate::study_args::LlmArgs),
    /// Import the Python Study Mode's threads and items (its `study_mode_chat` schema) into this
    /// store, per user, with their ids (old links keep working). Idempotent; --dry-run.
    Import(Box<crate::cli_study_import::StudyImportArgs>),
}

/// Run a study command.
pub async fn run(common: &crate::config::Common, cmd: StudyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        StudyCmd::CheckLlm(llm) => check_llm(&llm).await,
        StudyCmd::Import(a) => crate::cli_study_import::run(common, *a).await,
    }
}

async fn check_llm(llm: &crate::study_args::LlmArgs) -> anyhow::Result<ExitCode> {
    let Some(cfg) = llm.config() else {
        println!(
            "no LLM provider configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a provider other than OpenAI)"
        );
        return Ok(ExitCode::from(2));
    };
    println!("provider {}", cfg.base_url);
    let client = study::llm::LlmClient::new(cfg)?;
    let lines = study::provider::check(&client).await;
    let mut ok = true;
    for l in &lines {
        match &l.failure {
            None => println!("{:<5} {:<24} ok", l.mode, l.model),
            Some(d) => {
                ok = false;
                println!(
                    "{:<5} {:<24} FAIL {}: {}",
                    l.mode, l.model, d.code, d.operator
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
