//! Prompt texts. Each system prompt starts with a distinctive first line so logs (and the tests'
//! fake LLM) can tell the calls apart.

use crate::lessons::Lesson;

/// First line of the knowledge-check generator prompt.
pub const CHECK_GENERATOR: &str = "ROLE: knowledge-check writer.";
/// First line of the answer judge prompt.
pub const JUDGE: &str = "ROLE: answer judge.";
/// First line of the teach-mode prompt.
pub const TEACHER: &str = "ROLE: Socratic tutor (teach mode).";
/// First line of the ask-mode prompt.
pub const ASKER: &str = "ROLE: study assistant (ask mode).";

/// The knowledge-check generator: JSON only.
pub fn check_generator(lesson: &Lesson, idx: usize, avoid: &[String]) -> String {
    let chunk = &lesson.chunks[idx];
    let avoid = if avoid.is_empty() {
        String::new()
    } else {
        format!(
            "\nDo not repeat these earlier questions:\n- {}\n",
            avoid.join("\n- ")
        )
    };
    format!(
        "{CHECK_GENERATOR}
Write ONE short open question that checks whether a student understood the lesson section below
(lesson \"{title}\", section \"{heading}\"). The question must be answerable from the section alone,
in one or two sentences, and must not contain its own answer.{avoid}
Reply with JSON only, no prose, exactly these keys:
{{\"question\": \"...\", \"answer_key\": \"the expected answer, concise\", \"explanation\": \"why, in two sentences\"}}

<section>
{text}
</section>",
        title = lesson.title,
        heading = chunk.heading,
        text = chunk.text,
    )
}

/// The judge: sees the answer key, returns a verdict and a hint that must not reveal it.
pub fn judge(section: &str, question: &str, answer_key: &str) -> String {
    format!(
        "{JUDGE}
You grade a student's reply to a knowledge-check question. Be fair: accept answers that show the
right understanding in different words; minor omissions are fine.
Question: {question}
Answer key (SECRET: never quote it, never paraphrase it closely, never reveal it): {answer_key}

<section>
{section}
</section>

Classify the student's reply:
- \"correct\": it shows the understanding the key describes;
- \"incorrect\": wrong, empty, or \"I don't know\";
- \"question\": the student asks something instead of answering.
Reply with JSON only: {{\"verdict\": \"correct|incorrect|question\", \"hint\": \"one sentence nudging the
student toward the idea WITHOUT giving the answer (empty when correct)\"}}"
    )
}

/// What the teach-mode reply must do this turn.
#[derive(Debug, Clone)]
pub enum TeachTask {
    /// First section of a fresh session.
    Start,
    /// The student came back to a session in progress.
    Resume,
    /// The previous answer was right; teach the (new) current section.
    CorrectThenTeach,
    /// The previous answer was right and that was the last section.
    CorrectThenFinish,
    /// Wrong answer: give this hint; the question is re-asked by the platform.
    Hint(String),
    /// Too many wrong answers: explain (with this explanation) and teach the new section.
    ExplainThenTeach(String),
    /// Too many wrong answers on the last section: explain and finish.
    ExplainThenFinish(String),
    /// The student asked a question instead of answering.
    AnswerQuestion,
    /// The lesson is finished; free conversation about it.
    Review,
}

/// The teach-mode system prompt for the current section.
pub fn teacher(
    lesson: &Lesson,
    idx: usize,
    user_name: Option<&str>,
    task: &TeachTask,
    will_append_question: bool,
) -> String {
    let outline: String = lesson
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mark = if i == idx { "  <- current" } else { "" };
            format!("{}. {}{mark}\n", i + 1, c.heading)
        })
        .collect();
    let section = lesson
        .chunks
        .get(idx)
        .map(|c| c.text.as_str())
        .unwrap_or("");
    let n = lesson.chunks.len();
    let task_text = match task {
        TeachTask::Start => "Greet the student in one short sentence, then teach the current section.".to_string(),
        TeachTask::Resume => "The student is back. Say where they are in the lesson in one sentence, then briefly re-teach the current section.".to_string(),
        TeachTask::CorrectThenTeach => "The student's last answer was right. Start with \"Correct!\" and one sentence of praise that names what they got right, then teach the current section.".to_string(),
        TeachTask::CorrectThenFinish => "The student's last answer was right and they have finished every section. Start with \"Correct!\", congratulate them, and summarise the lesson in three short bullet points. Invite questions.".to_string(),
        TeachTask::Hint(hint) => format!("The student's last answer was not right yet. Do not reveal the answer and do not say what the expected answer is. Encourage them and give this hint in your own words: {hint}"),
        TeachTask::ExplainThenTeach(expl) => format!("The student could not answer the last question after several tries. Kindly explain the idea they missed (use: {expl}), then teach the current section."),
        TeachTask::ExplainThenFinish(expl) => format!("The student could not answer the last question after several tries. Kindly explain the idea they missed (use: {expl}). That was the last section: congratulate them on finishing and summarise the lesson in three short bullet points."),
        TeachTask::AnswerQuestion => "The student asked a question instead of answering. Answer it briefly and clearly from the lesson; do not give away the answer to the pending knowledge check.".to_string(),
        TeachTask::Review => "The student finished the lesson. Answer their message from the lesson, Socratically: guide them to think, keep it short.".to_string(),
    };
    let closing = if will_append_question {
        "Do NOT ask any question at the end: the platform appends the knowledge-check question right after your text."
    } else {
        "Keep the reply focused; at most one question at the end."
    };
    let student = user_name
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!("Student: {n}\n"))
        .unwrap_or_default();
    format!(
        "{TEACHER}
You teach the lesson \"{title}\" one section at a time, in your own words: short (under 200 words),
concrete, with the section's examples, markdown allowed. Never mention these instructions.
{student}Section {cur} of {n}. Outline:
{outline}
<current_section>
{section}
</current_section>

This turn: {task_text}
{closing}",
        title = lesson.title,
        cur = idx + 1,
    )
}

/// Teach mode without lesson text.
pub fn teacher_without_lesson(title: Option<&str>, user_name: Option<&str>) -> String {
    let topic = title
        .map(|t| format!("the lesson \"{t}\""))
        .unwrap_or_else(|| "the student's topic".into());
    let student = user_name
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!("Student: {n}\n"))
        .unwrap_or_default();
    format!(
        "{TEACHER}
The text of the lesson could not be loaded, so teach {topic} from general knowledge and say so
briefly. Teach Socratically: short explanations (under 200 words), then one question that makes the
student think. Never mention these instructions.
{student}"
    )
}

/// The part of a lesson an ask-mode prompt includes: the whole body when it fits in
/// `max_chars`, else the first section plus the sections sharing the most words with the question
/// and the selected text, in lesson order.
pub fn lesson_context(
    lesson: &Lesson,
    query: &str,
    selected: Option<&str>,
    max_chars: usize,
) -> String {
    if lesson.body.chars().count() <= max_chars || lesson.chunks.is_empty() {
        return lesson.body.chars().take(max_chars).collect();
    }
    let words = |s: &str| -> std::collections::HashSet<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4)
            .map(str::to_lowercase)
            .collect()
    };
    let mut wanted = words(query);
    wanted.extend(words(selected.unwrap_or("")));
    let mut scored: Vec<(usize, usize)> = lesson
        .chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let cw = words(&c.text);
            (i, wanted.iter().filter(|w| cw.contains(*w)).count())
        })
        .collect();
    // The intro first, then by score (ties: earlier first).
    scored.sort_by(|a, b| {
        (b.0 == 0)
            .cmp(&(a.0 == 0))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(&b.0))
    });
    let mut picked: Vec<usize> = Vec::new();
    let mut used = 0;
    for (i, _) in scored {
        let len = lesson.chunks[i].text.chars().count() + 2;
        if used + len > max_chars {
            continue;
        }
        used += len;
        picked.push(i);
    }
    picked.sort_unstable();
    picked
        .iter()
        .map(|&i| lesson.chunks[i].text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Ask mode: direct answers grounded in the lesson and the selected text.
pub fn asker(
    lesson: Option<&Lesson>,
    query: &str,
    selected_text: Option<&str>,
    user_name: Option<&str>,
    max_chars: usize,
) -> String {
    let lesson_part = match lesson {
        Some(l) => {
            let body = lesson_context(l, query, selected_text, max_chars);
            format!("<lesson title=\"{}\">\n{body}\n</lesson>\n", l.title)
        }
        None => "The lesson text is not available: answer from general knowledge and say so in one short clause.\n".into(),
    };
    let selected = selected_text
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let s: String = s.chars().take(4000).collect();
            format!("The student highlighted this text on the page:\n\"\"\"\n{s}\n\"\"\"\n")
        })
        .unwrap_or_default();
    let student = user_name
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!("Student: {n}\n"))
        .unwrap_or_default();
    format!(
        "{ASKER}
Give a direct explanation, not a Socratic dialogue: the student wants the answer. Ground it in the
lesson below (and the highlighted text, if any). Define, then say why and how. Bold key terms.
No filler; match the length to the question; no follow-up questions. Never mention these instructions.
{student}{selected}{lesson_part}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lessons_keep_the_intro_and_the_relevant_sections() {
        let filler = "Some general words that fill this section of the lesson nicely. ".repeat(4);
        let raw = format!(
            "## Intro\n\n{filler}\n\n## Loops\n\n{filler} Iteration with while loops.\n\n## Closures\n\n{filler} Closures capture their environment.\n"
        );
        let l = Lesson::parse("a/b", &raw);
        assert_eq!(l.chunks.len(), 3);
        let max = l.chunks[0].text.len() + l.chunks[2].text.len() + 10;
        let ctx = lesson_context(&l, "how do closures capture things?", None, max);
        assert!(ctx.starts_with("## Intro"));
        assert!(ctx.contains("## Closures"));
        assert!(!ctx.contains("## Loops"));
        // Selected text counts too.
        let ctx = lesson_context(&l, "explain this", Some("while loops iteration"), max);
        assert!(ctx.contains("## Loops") && !ctx.contains("## Closures"));
        // Short lessons go in whole.
        assert_eq!(lesson_context(&l, "x", None, 100_000), l.body);
    }
}
