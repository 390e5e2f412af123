//! Lesson parsing: front matter, MDX reduction, title, fence-aware chunking.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Chunks above this size are split at paragraph boundaries (never inside a code fence).
pub const MAX_CHUNK_CHARS: usize = 2400;
/// Sections below this size are merged into the previous chunk.
pub const MIN_CHUNK_CHARS: usize = 160;

/// A parsed lesson as the tutor uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lesson {
    /// The lesson path it was loaded for.
    pub path: String,
    /// From front matter `title`, else `sidebar_label`, else the first `# heading`, else the path.
    pub title: String,
    /// The text the model sees: front matter stripped, MDX imports/exports/JSX reduced to text.
    pub body: String,
    /// Teaching units in order (see [`chunk_markdown`]).
    pub chunks: Vec<Chunk>,
}

/// One teaching unit of a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The section heading (markup removed).
    pub heading: String,
    /// The section text (markdown, including its heading line).
    pub text: String,
}

impl Lesson {
    /// Parse raw markdown/MDX into a lesson.
    pub fn parse(path: &str, raw: &str) -> Lesson {
        let (front, rest) = split_front_matter(raw);
        let body = reduce_mdx(rest);
        let title = front_matter_value(front, "title")
            .or_else(|| front_matter_value(front, "sidebar_label"))
            .or_else(|| first_h1(&body))
            .unwrap_or_else(|| title_from_path(path));
        let chunks = chunk_markdown(&body, &title);
        Lesson {
            path: path.to_string(),
            title,
            body,
            chunks,
        }
    }
}

/// Split `---`-delimited YAML front matter off the start of the document.
/// Returns (front matter text, rest). Without front matter the first part is empty.
pub fn split_front_matter(raw: &str) -> (&str, &str) {
    let s = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let Some(after_open) = s
        .strip_prefix("---\n")
        .or_else(|| s.strip_prefix("---\r\n"))
    else {
        return ("", s);
    };
    let mut offset = 0;
    for line in after_open.split_inclusive('\n') {
        let t = line.trim_end_matches(['\n', '\r']);
        if t == "---" || t == "..." {
            let front = &after_open[..offset];
            let rest = &after_open[offset + line.len()..];
            return (front, rest);
        }
        offset += line.len();
    }
    // Unterminated: not front matter.
    ("", s)
}

/// A top-level scalar from simple YAML front matter (`key: value`, quotes removed).
pub fn front_matter_value(front: &str, key: &str) -> Option<String> {
    for line in front.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v
        };
        if !v.is_empty() && v != "|" && v != ">" {
            return Some(v.to_string());
        }
    }
    None
}

/// The fence marker of a line that opens or closes a fenced code block (``` or ~~~, ≥3).
fn fence_marker(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None; // indented code, not a fence
    }
    let c = t.chars().next()?;
    if c != '`' && c != '~' {
        return None;
    }
    let n = t.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// Tracks whether we are inside a fenced code block while walking lines.
#[derive(Default)]
struct FenceState {
    open: Option<(char, usize)>,
}

impl FenceState {
    /// Feed one line; returns true if the line is part of a fence (including the markers).
    fn feed(&mut self, line: &str) -> bool {
        match (self.open, fence_marker(line)) {
            (None, Some(m)) => {
                self.open = Some(m);
                true
            }
            (Some((c, n)), Some((c2, n2)))
                if c == c2 && n2 >= n && {
                    let t = line.trim();
                    t.chars().all(|x| x == c)
                } =>
            {
                self.open = None;
                true
            }
            (Some(_), _) => true,
            (None, None) => false,
        }
    }
}

static JSX_TAG: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?s)</?[A-Za-z][\w.:-]*(?:\s(?:[^<>{}]|\{[^{}]*\})*)?/?>").ok());
static JSX_COMMENT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?s)\{/\*.*?\*/\}|<!--.*?-->").ok());
static ADMONITION: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*:::+\s*([A-Za-z]+)?(?:\[(.*)\])?\s*(.*)$").ok());

/// Reduce MDX to markdown text: drop `import`/`export` statements, JSX/HTML comments and tags
/// (their inner text is kept), turn admonitions (`:::tip Title`) into a bold label. Code fences
/// are left untouched.
pub fn reduce_mdx(text: &str) -> String {
    // Process outside-fence segments separately so code keeps every `<`, `import`, `:::`.
    let mut out = String::with_capacity(text.len());
    let mut segment = String::new();
    let mut fence = FenceState::default();
    let mut skipping_statement = false;
    let mut brace_depth: i64 = 0;
    for line in text.split_inclusive('\n') {
        let was_open = fence.open.is_some();
        let in_fence = fence.feed(line);
        if in_fence {
            if !was_open {
                out.push_str(&reduce_prose(&segment));
                segment.clear();
            }
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        let trimmed = line.trim_start();
        if skipping_statement {
            brace_depth += count_braces(line);
            if brace_depth <= 0 {
                skipping_statement = false;
            }
            continue;
        }
        if is_mdx_statement(trimmed) {
            brace_depth = count_braces(line);
            let complete = trimmed.starts_with("export ")
                || trimmed.contains(" from ")
                || trimmed.trim_end().ends_with(';')
                || trimmed.starts_with("import '")
                || trimmed.starts_with("import \"");
            if brace_depth > 0 || !complete {
                skipping_statement = true;
            }
            continue;
        }
        segment.push_str(line);
    }
    out.push_str(&reduce_prose(&segment));
    collapse_blank_lines(out.trim_matches('\n'))
}

/// An ESM `import`/`export` line of MDX (not prose that happens to start with the word).
fn is_mdx_statement(trimmed: &str) -> bool {
    if let Some(rest) = trimmed.strip_prefix("import ") {
        let rest = rest.trim_start();
        return rest.starts_with(['{', '*', '\'', '"'])
            || rest.contains(" from ")
            || (rest.split_whitespace().count() == 1 && rest.ends_with(';'));
    }
    if let Some(rest) = trimmed.strip_prefix("export ") {
        let first = rest.split_whitespace().next().unwrap_or("");
        return matches!(
            first,
            "const" | "let" | "var" | "function" | "default" | "class" | "async" | "{" | "*"
        ) || first.starts_with('{');
    }
    false
}

fn count_braces(line: &str) -> i64 {
    line.chars().fold(0, |d, c| match c {
        '{' | '(' | '[' => d + 1,
        '}' | ')' | ']' => d - 1,
        _ => d,
    })
}

fn reduce_prose(seg: &str) -> String {
    if seg.is_empty() {
        return String::new();
    }
    let mut s = seg.to_string();
    if let Some(re) = JSX_COMMENT.as_ref() {
        s = re.replace_all(&s, "").into_owned();
    }
    // Inline code spans keep their `<tags>`: protect them.
    let mut protected: Vec<String> = Vec::new();
    let mut buf = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(start) = rest.find('`') {
        buf.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('`') {
            Some(end) if !after[..end].contains('\n') => {
                protected.push(rest[start..start + end + 2].to_string());
                buf.push_str(&format!("\u{0}{}\u{0}", protected.len() - 1));
                rest = &after[end + 1..];
            }
            _ => {
                buf.push('`');
                rest = after;
            }
        }
    }
    buf.push_str(rest);
    s = buf;
    if let Some(re) = JSX_TAG.as_ref() {
        s = re.replace_all(&s, "").into_owned();
    }
    let mut lines = Vec::new();
    for line in s.lines() {
        if let Some(caps) = ADMONITION.as_ref().and_then(|re| re.captures(line)) {
            let kind = caps.get(1).map(|m| m.as_str()).unwrap_or("");
            let title = caps
                .get(2)
                .map(|m| m.as_str())
                .filter(|t| !t.trim().is_empty())
                .or_else(|| caps.get(3).map(|m| m.as_str()))
                .unwrap_or("")
                .trim();
            let label = match (kind.is_empty(), title.is_empty()) {
                (true, _) => String::new(),
                (false, true) => format!("**{}:**", capitalize(kind)),
                (false, false) => format!("**{}: {}**", capitalize(kind), title),
            };
            lines.push(label);
            continue;
        }
        lines.push(line.trim_end().to_string());
    }
    let mut joined = lines.join("\n");
    if seg.ends_with('\n') {
        joined.push('\n');
    }
    for (i, p) in protected.iter().enumerate() {
        joined = joined.replace(&format!("\u{0}{i}\u{0}"), p);
    }
    joined
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn collapse_blank_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blanks = 0;
    let mut fence = FenceState::default();
    for line in s.split('\n') {
        let in_fence = fence.feed(line);
        if !in_fence && line.trim().is_empty() {
            blanks += 1;
            if blanks > 1 {
                continue;
            }
        } else {
            blanks = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// The first `# heading` outside code fences.
pub fn first_h1(body: &str) -> Option<String> {
    let mut fence = FenceState::default();
    for line in body.lines() {
        if fence.feed(line) {
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            let h = clean_heading(h);
            if !h.is_empty() {
                return Some(h);
            }
        }
    }
    None
}

/// `01-Part/02-my-lesson` → `My Lesson`.
pub fn title_from_path(path: &str) -> String {
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".mdx")
        .trim_end_matches(".md");
    let stripped = last.trim_start_matches(|c: char| c.is_ascii_digit());
    let stripped = stripped.trim_start_matches(['-', '_']);
    let base = if stripped.is_empty() { last } else { stripped };
    base.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(capitalize)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Remove `#`, emphasis and code markup from a heading.
pub fn clean_heading(h: &str) -> String {
    let h = h.trim().trim_start_matches('#').trim();
    // Trailing closing hashes (`## Title ##`) and `{#custom-id}` anchors.
    let h = h.trim_end_matches('#').trim_end();
    let h = match h.rfind("{#") {
        Some(i) if h.ends_with('}') => &h[..i],
        _ => h,
    };
    h.replace("**", "")
        .replace('`', "")
        .replace(['*', '_'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Heading level (1-6) of a markdown ATX heading line.
fn heading_level(line: &str) -> Option<usize> {
    let n = line.chars().take_while(|&c| c == '#').count();
    (1..=6)
        .contains(&n)
        .then(|| line[n..].starts_with(' ').then_some(n))
        .flatten()
}

struct Section {
    level: usize,
    heading: String,
    text: String,
}

/// Split a lesson body into teaching chunks.
///
/// Sections start at `#`, `##` and `###` headings found outside code fences (a fence is never
/// split, whatever it contains). `###` sections join the preceding chunk while it stays under
/// [`MAX_CHUNK_CHARS`]; sections under [`MIN_CHUNK_CHARS`] are merged into the previous chunk;
/// chunks over the limit are split at blank lines outside fences. Text before the first heading
/// is titled with the lesson title. An empty body gives no chunks.
pub fn chunk_markdown(body: &str, lesson_title: &str) -> Vec<Chunk> {
    let mut sections: Vec<Section> = Vec::new();
    let mut cur = Section {
        level: 0,
        heading: lesson_title.to_string(),
        text: String::new(),
    };
    let mut fence = FenceState::default();
    for line in body.split_inclusive('\n') {
        if !fence.feed(line)
            && let Some(level) = heading_level(line)
            && level <= 3
        {
            sections.push(std::mem::replace(
                &mut cur,
                Section {
                    level,
                    heading: clean_heading(line),
                    text: String::new(),
                },
            ));
        }
        cur.text.push_str(line);
    }
    sections.push(cur);
    // A lone H1 title line carries no teaching content of its own.
    sections.retain(|s| {
        let content: String = s
            .text
            .lines()
            .filter(|l| heading_level(l).is_none())
            .collect();
        !content.trim().is_empty()
    });

    let mut chunks: Vec<Chunk> = Vec::new();
    for s in sections {
        let size = s.text.trim().chars().count();
        let join_prev = chunks.last().is_some_and(|prev: &Chunk| {
            let prev_len = prev.text.chars().count();
            (size < MIN_CHUNK_CHARS || prev_len < MIN_CHUNK_CHARS || s.level >= 3)
                && prev_len + size <= MAX_CHUNK_CHARS
        });
        if join_prev && let Some(prev) = chunks.last_mut() {
            if !prev.text.ends_with("\n\n") {
                prev.text.truncate(prev.text.trim_end().len());
                prev.text.push_str("\n\n");
            }
            prev.text.push_str(s.text.trim());
            continue;
        }
        chunks.push(Chunk {
            heading: if s.heading.is_empty() {
                lesson_title.to_string()
            } else {
                s.heading
            },
            text: s.text.trim().to_string(),
        });
    }
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        out.extend(split_oversized(c));
    }
    out
}

fn split_oversized(c: Chunk) -> Vec<Chunk> {
    if c.text.chars().count() <= MAX_CHUNK_CHARS {
        return vec![c];
    }
    // Paragraphs: blank-line separated blocks, with fences kept whole.
    let mut paras: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut fence = FenceState::default();
    for line in c.text.split_inclusive('\n') {
        let in_fence = fence.feed(line);
        if !in_fence && line.trim().is_empty() {
            if !cur.trim().is_empty() {
                paras.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push_str(line);
    }
    if !cur.trim().is_empty() {
        paras.push(cur);
    }
    let mut out: Vec<Chunk> = Vec::new();
    let mut acc = String::new();
    for p in paras {
        let p = p.trim_end();
        if !acc.is_empty() && acc.chars().count() + p.chars().count() + 2 > MAX_CHUNK_CHARS {
            out.push(Chunk {
                heading: part_heading(&c.heading, out.len()),
                text: std::mem::take(&mut acc),
            });
        }
        if !acc.is_empty() {
            acc.push_str("\n\n");
        }
        acc.push_str(p);
    }
    if !acc.is_empty() {
        out.push(Chunk {
            heading: part_heading(&c.heading, out.len()),
            text: acc,
        });
    }
    out
}

fn part_heading(h: &str, idx: usize) -> String {
    if idx == 0 {
        h.to_string()
    } else {
        format!("{h} (part {})", idx + 1)
    }
}

/// Key terms of a text: bold phrases and inline code, in order of first appearance, deduplicated.
pub fn key_terms(text: &str) -> Vec<String> {
    static BOLD: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"\*\*([^*\n]{2,60}?)\*\*|`([^`\n]{2,40})`").ok());
    let mut out: Vec<String> = Vec::new();
    let Some(re) = BOLD.as_ref() else {
        return out;
    };
    let mut fence = FenceState::default();
    for line in text.lines() {
        if fence.feed(line) || heading_level(line).is_some() {
            continue;
        }
        for caps in re.captures_iter(line) {
            let t = caps
                .get(1)
                .or_else(|| caps.get(2))
                .map(|m| {
                    m.as_str()
                        .trim()
                        .trim_end_matches([':', '.', ','])
                        .to_string()
                })
                .unwrap_or_default();
            if t.chars().count() >= 2 && !out.iter().any(|o| o.eq_ignore_ascii_case(&t)) {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_and_title() {
        let raw = "---\ntitle: \"Hello: World\"\nsidebar_label: Hi\n---\n# Other\n\nBody";
        let l = Lesson::parse("01-a/02-b", raw);
        assert_eq!(l.title, "Hello: World");
        assert!(!l.body.contains("sidebar_label"));
        let l = Lesson::parse("01-a/02-my-lesson", "No heading here");
        assert_eq!(l.title, "My Lesson");
    }

    #[test]
    fn multi_line_exports_and_imports_are_dropped() {
        let src = "import {\n  A,\n  B,\n} from 'x';\nexport default function Demo() {\n  return <div>hi</div>;\n}\n\nKept text.\nexport const meta = {\n  a: 1,\n};\nAlso kept.\nimport the module, then export the result.\n";
        let out = reduce_mdx(src);
        assert_eq!(
            out,
            "Kept text.\nAlso kept.\nimport the module, then export the result."
        );
    }

    #[test]
    fn heading_cleanup() {
        assert_eq!(clean_heading("## **Bold** `code` {#anchor}"), "Bold code");
    }
}
