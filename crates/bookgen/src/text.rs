//! The prose model: a Zipf-distributed vocabulary (common English words first, then invented
//! technical words), sentences of varied length, and the block kinds of a lesson.

use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::rng::Rng;

const COMMON: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "it",
    "for",
    "as",
    "with",
    "you",
    "on",
    "this",
    "be",
    "are",
    "by",
    "can",
    "your",
    "an",
    "or",
    "from",
    "at",
    "we",
    "not",
    "have",
    "which",
    "when",
    "will",
    "each",
    "one",
    "all",
    "but",
    "how",
    "if",
    "what",
    "more",
    "they",
    "their",
    "agent",
    "model",
    "data",
    "code",
    "function",
    "value",
    "system",
    "tool",
    "user",
    "file",
    "example",
    "step",
    "request",
    "response",
    "prompt",
    "context",
    "output",
    "input",
    "state",
    "memory",
    "task",
    "result",
    "error",
    "test",
    "type",
    "list",
    "string",
    "server",
    "client",
    "call",
    "return",
    "first",
    "then",
    "next",
    "also",
    "because",
    "so",
    "into",
    "there",
    "these",
    "use",
    "using",
    "used",
    "new",
    "make",
    "may",
    "should",
    "would",
    "could",
    "than",
    "only",
    "time",
    "way",
    "other",
    "some",
    "any",
    "two",
    "three",
    "most",
    "about",
    "after",
    "before",
    "between",
    "through",
    "while",
    "where",
    "here",
    "now",
    "often",
    "every",
    "same",
    "different",
    "important",
    "simple",
    "small",
    "large",
    "real",
    "local",
    "remote",
    "specific",
    "common",
    "lesson",
    "chapter",
    "section",
    "students",
    "learn",
    "build",
    "write",
    "read",
    "run",
    "see",
    "know",
    "think",
    "work",
    "change",
    "keep",
    "start",
    "stop",
    "need",
    "want",
    "show",
    "give",
];

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br",
    "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sc", "sh", "sl", "sp", "st", "str", "th", "tr",
    "ch", "qu",
];
const VOWELS: &[&str] = &[
    "a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y", "ia", "oa",
];
const CODAS: &[&str] = &[
    "", "", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "rk", "st", "ng", "x", "ck", "ll",
];
const SUFFIXES: &[&str] = &[
    "", "", "", "", "s", "ing", "ed", "er", "tion", "ment", "able", "ly", "ity", "ize", "al",
];
const KEYWORDS: &[&str] = &[
    "def", "return", "if", "else", "for", "in", "import", "from", "class", "async", "await", "let",
    "const", "fn", "pub", "match", "while", "None", "True", "False", "self", "print",
];

/// How many distinct words the prose uses.
const VOCABULARY: usize = 2000;
/// Zipf exponent (English is about 1).
const ZIPF_S: f64 = 1.1;

struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights, normalised to end at 1.
    cumulative: Vec<f64>,
}

fn vocabulary() -> &'static Vocabulary {
    static V: OnceLock<Vocabulary> = OnceLock::new();
    V.get_or_init(|| {
        let mut rng = Rng::new(0x0b00_c0de);
        let mut seen = std::collections::HashSet::new();
        let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
        for w in COMMON {
            if seen.insert(w.to_string()) {
                words.push(w.to_string());
            }
        }
        while words.len() < VOCABULARY {
            let syllables = 1 + rng.below(2) as usize + usize::from(rng.chance(0.15));
            let mut w = String::new();
            for _ in 0..syllables {
                w.push_str(rng.pick(ONSETS));
                w.push_str(rng.pick(VOWELS));
                w.push_str(rng.pick(CODAS));
            }
            w.push_str(rng.pick(SUFFIXES));
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut cumulative = Vec::with_capacity(words.len());
        let mut total = 0.0;
        for rank in 1..=words.len() {
            total += 1.0 / (rank as f64).powf(ZIPF_S);
            cumulative.push(total);
        }
        for c in &mut cumulative {
            *c /= total;
        }
        Vocabulary { words, cumulative }
    })
}

fn word(rng: &mut Rng) -> &'static str {
    let v = vocabulary();
    let u = rng.unit();
    let i = v
        .cumulative
        .partition_point(|&c| c < u)
        .min(v.words.len() - 1);
    &v.words[i]
}

fn capitalized(w: &str, out: &mut String) {
    let mut chars = w.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_uppercase());
        out.push_str(chars.as_str());
    }
}

fn sentence(rng: &mut Rng, out: &mut String) {
    let n = 5 + rng.below(22) as usize;
    for i in 0..n {
        let w = word(rng);
        if i == 0 {
            capitalized(w, out);
        } else {
            out.push(' ');
            if rng.chance(0.02) {
                let _ = write!(out, "`{w}()`");
                continue;
            }
            if rng.chance(0.015) {
                let _ = write!(out, "{}", rng.below(2000));
                continue;
            }
            out.push_str(w);
        }
        if i + 1 < n && rng.chance(0.07) {
            out.push(',');
        }
    }
    out.push_str(if rng.chance(0.08) {
        "?"
    } else if rng.chance(0.03) {
        "!"
    } else {
        "."
    });
}

fn paragraph(rng: &mut Rng, out: &mut String) {
    let n = 2 + rng.below(6);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        sentence(rng, out);
    }
    out.push_str("\n\n");
}

fn list(rng: &mut Rng, out: &mut String, numbered: bool) {
    let n = 3 + rng.below(5);
    for i in 0..n {
        if numbered {
            let _ = write!(out, "{}. ", i + 1);
        } else {
            out.push_str("- ");
        }
        if rng.chance(0.4) {
            out.push_str("**");
            capitalized(word(rng), out);
            out.push_str("**: ");
        }
        sentence(rng, out);
        out.push('\n');
    }
    out.push('\n');
}

fn identifier(rng: &mut Rng) -> String {
    let mut s = word(rng).to_string();
    if rng.chance(0.5) {
        s.push('_');
        s.push_str(word(rng));
    }
    s
}

fn code(rng: &mut Rng, out: &mut String) {
    out.push_str(rng.pick(&["```python\n", "```typescript\n", "```bash\n", "```rust\n"]));
    let lines = 4 + rng.below(14);
    let mut indent = 0usize;
    for _ in 0..lines {
        for _ in 0..indent {
            out.push_str("    ");
        }
        match rng.below(5) {
            0 => {
                let _ = write!(out, "{} {}(", rng.pick(KEYWORDS), identifier(rng));
                let _ = writeln!(out, "{}, {}):", identifier(rng), identifier(rng));
                indent = (indent + 1).min(3);
            }
            1 => {
                let _ = writeln!(
                    out,
                    "{} = {}({}, {})",
                    identifier(rng),
                    identifier(rng),
                    rng.below(10_000),
                    identifier(rng)
                );
            }
            2 => {
                let _ = writeln!(out, "# {}", {
                    let mut c = String::new();
                    sentence(rng, &mut c);
                    c
                });
            }
            3 => {
                let _ = writeln!(out, "{} {}", rng.pick(KEYWORDS), identifier(rng));
                indent = indent.saturating_sub(usize::from(rng.chance(0.5)));
            }
            _ => {
                let _ = writeln!(out, "print(f\"{} {{{}}}\")", word(rng), identifier(rng));
            }
        }
    }
    out.push_str("```\n\n");
}

fn table(rng: &mut Rng, out: &mut String) {
    let cols = 2 + rng.below(3) as usize;
    let mut header = Vec::new();
    for _ in 0..cols {
        let mut h = String::new();
        capitalized(word(rng), &mut h);
        header.push(h);
    }
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(cols));
    for _ in 0..(2 + rng.below(5)) {
        let cells: Vec<String> = (0..cols)
            .map(|_| match rng.below(3) {
                0 => rng.below(100_000).to_string(),
                _ => format!("{} {}", word(rng), word(rng)),
            })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

/// A title of two to five words.
pub fn title(rng: &mut Rng) -> String {
    let mut t = String::new();
    for i in 0..(2 + rng.below(4)) {
        if i > 0 {
            t.push(' ');
        }
        capitalized(word(rng), &mut t);
    }
    t
}

/// A path segment from a title.
pub fn slug(title: &str) -> String {
    let s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(40).collect()
}

/// A whole lesson of about `target` bytes.
pub fn lesson(rng: &mut Rng, title: &str, index: usize, target: usize) -> String {
    let mut out = String::with_capacity(target + 4096);
    let _ = writeln!(
        out,
        "---\ntitle: \"{title}\"\nsidebar_position: {}",
        index + 1
    );
    let _ = writeln!(
        out,
        "description: \"{}\"\nkeywords: [{}, {}, {}]\n---\n",
        {
            let mut d = String::new();
            sentence(rng, &mut d);
            d.replace('"', "")
        },
        word(rng),
        word(rng),
        word(rng)
    );
    let _ = writeln!(out, "# {title}\n");
    paragraph(rng, &mut out);
    while out.len() < target {
        out.push_str("## ");
        out.push_str(&self::title(rng));
        out.push_str("\n\n");
        for _ in 0..(2 + rng.below(4)) {
            match rng.below(10) {
                0 | 1 => {
                    let numbered = rng.chance(0.4);
                    list(rng, &mut out, numbered)
                }
                2 => code(rng, &mut out),
                3 if rng.chance(0.4) => table(rng, &mut out),
                4 if rng.chance(0.3) => {
                    let _ = writeln!(out, ":::tip\n\n{}\n:::\n", {
                        let mut s = String::new();
                        sentence(rng, &mut s);
                        s
                    });
                }
                5 if rng.chance(0.2) => {
                    let _ = writeln!(
                        out,
                        "![{}](/img/figure-{:03}.png)\n",
                        word(rng),
                        rng.below(10)
                    );
                }
                _ => paragraph(rng, &mut out),
            }
        }
    }
    out
}
