//! The sample book written for this project (`sample-book/`), embedded in the binary so a fresh
//! `panaversity serve` has a book to read, write and study at once. Regenerate this list when files
//! are added under `crates/panaversity/sample-book/`.

/// The sample book's id.
pub const BOOK_ID: &str = "sample-book";

/// Every file of the sample book: book-relative path and bytes.
pub const FILES: &[(&str, &[u8])] = &[
    ("content/01-Foundations/01-What-Is-A-Program/01-instructions.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/01-instructions.md")),
    ("content/01-Foundations/01-What-Is-A-Program/01-instructions.summary.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/01-instructions.summary.md")),
    ("content/01-Foundations/01-What-Is-A-Program/02-values-and-names.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/02-values-and-names.md")),
    ("content/01-Foundations/01-What-Is-A-Program/02-values-and-names.summary.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/02-values-and-names.summary.md")),
    ("content/01-Foundations/01-What-Is-A-Program/03-decisions.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/03-decisions.md")),
    ("content/01-Foundations/01-What-Is-A-Program/03-decisions.summary.md", include_bytes!("../sample-book/content/01-Foundations/01-What-Is-A-Program/03-decisions.summary.md")),
    ("content/01-Foundations/02-Working-With-Data/01-lists.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/01-lists.md")),
    ("content/01-Foundations/02-Working-With-Data/01-lists.summary.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/01-lists.summary.md")),
    ("content/01-Foundations/02-Working-With-Data/02-loops.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/02-loops.md")),
    ("content/01-Foundations/02-Working-With-Data/02-loops.summary.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/02-loops.summary.md")),
    ("content/01-Foundations/02-Working-With-Data/03-dictionaries.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/03-dictionaries.md")),
    ("content/01-Foundations/02-Working-With-Data/03-dictionaries.summary.md", include_bytes!("../sample-book/content/01-Foundations/02-Working-With-Data/03-dictionaries.summary.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/01-goals-and-constraints.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/01-goals-and-constraints.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/01-goals-and-constraints.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/01-goals-and-constraints.summary.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/02-examples.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/02-examples.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/02-examples.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/02-examples.summary.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/03-checking-work.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/03-checking-work.md")),
    ("content/02-Working-With-Agents/01-Prompts-As-Programs/03-checking-work.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/01-Prompts-As-Programs/03-checking-work.summary.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/01-versions.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/01-versions.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/01-versions.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/01-versions.summary.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/02-audit-trails.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/02-audit-trails.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/02-audit-trails.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/02-audit-trails.summary.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/03-personal-copies.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/03-personal-copies.md")),
    ("content/02-Working-With-Agents/02-Collaborating-Safely/03-personal-copies.summary.md", include_bytes!("../sample-book/content/02-Working-With-Agents/02-Collaborating-Safely/03-personal-copies.summary.md")),
    ("static/images/program-flow.png", include_bytes!("../sample-book/static/images/program-flow.png")),
];
