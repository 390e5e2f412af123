//! Exact-text edits of a file and unified diffs: the text side of `edit_content` and of the diff
//! a `CONFLICT` carries. Pure functions; the engine applies them under the hash protocol.

use crate::error::{PfsError, Result};

/// One replacement: `old_text` must occur exactly once in the text it is applied to, unless
/// `replace_all` (then at least once).
#[derive(Debug, Clone)]
pub struct TextEdit {
    pub old_text: String,
    pub new_text: String,
    pub replace_all: bool,
}

/// Largest diff returned to a caller; a longer one is cut at a line boundary and says so.
pub const MAX_DIFF_BYTES: usize = 64 * 1024;

/// How many match positions an `EDIT_AMBIGUOUS` error lists.
const MAX_LISTED_MATCHES: usize = 10;

/// Apply `edits` in order, each to the result of the previous ones. All or nothing: the first
/// edit that does not match exactly once (or at all, with `replace_all`) fails the whole call with
/// `EDIT_NO_MATCH` / `EDIT_AMBIGUOUS`, naming the edit and where it looked. Returns the new text
/// and the number of replacements made.
pub fn apply_edits(path: &str, text: &str, edits: &[TextEdit]) -> Result<(String, usize)> {
    if edits.is_empty() {
        return Err(PfsError::InvalidInput(
            "edits is empty; send at least one {old_text, new_text}".into(),
        ));
    }
    let mut out = text.to_string();
    let mut replacements = 0;
    for (i, e) in edits.iter().enumerate() {
        if e.old_text.is_empty() {
            return Err(PfsError::InvalidInput(format!(
                "edit {i}: old_text is empty; to add text, include the neighbouring text in old_text and new_text"
            )));
        }
        let starts: Vec<usize> = out.match_indices(&e.old_text).map(|(at, _)| at).collect();
        match (starts.len(), e.replace_all) {
            (0, _) => {
                return Err(PfsError::EditNoMatch {
                    path: path.to_string(),
                    edit: i,
                    hint: near_match_hint(&out, &e.old_text),
                });
            }
            (1, _) | (_, true) => {
                replacements += starts.len();
                out = out.replace(&e.old_text, &e.new_text);
            }
            (n, false) => {
                return Err(PfsError::EditAmbiguous {
                    path: path.to_string(),
                    edit: i,
                    count: n,
                    lines: starts
                        .iter()
                        .take(MAX_LISTED_MATCHES)
                        .map(|&at| line_of(&out, at))
                        .collect(),
                });
            }
        }
    }
    Ok((out, replacements))
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where `needle` nearly matches: ignoring whitespace differences, or its first line alone.
fn near_match_hint(text: &str, needle: &str) -> String {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = squash(needle);
    if !want.is_empty() {
        // Compare whitespace-squashed windows of as many lines as the needle has.
        let n = needle.lines().count().max(1);
        let lines: Vec<&str> = text.lines().collect();
        for start in 0..lines.len() {
            let end = (start + n).min(lines.len());
            if squash(&lines[start..end].join("\n")) == want {
                return format!(
                    "; a match that differs only in whitespace starts at line {}",
                    start + 1
                );
            }
        }
    }
    let first = needle.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if !first.trim().is_empty()
        && let Some(at) = text.find(first.trim())
    {
        return format!(
            "; its first line occurs at line {}, but the text after it differs",
            line_of(text, at)
        );
    }
    String::new()
}

/// A unified diff (3 lines of context) from `old` to `new`, labelled `a/{label}` and `b/{label}`;
/// empty when they are equal. Cut at [`MAX_DIFF_BYTES`] on a line boundary, ending with a note.
pub fn unified_diff(label: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label}"), &format!("b/{label}"))
        .to_string();
    if diff.len() <= MAX_DIFF_BYTES {
        return diff;
    }
    let cut = diff[..MAX_DIFF_BYTES].rfind('\n').map_or(0, |i| i + 1);
    format!(
        "{}… diff cut at {} bytes of {}; read the file for the rest\n",
        &diff[..cut],
        cut,
        diff.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed(old: &str, new: &str) -> TextEdit {
        TextEdit {
            old_text: old.into(),
            new_text: new.into(),
            replace_all: false,
        }
    }

    #[test]
    fn edits_apply_in_order_to_the_previous_result() {
        let (out, n) = apply_edits(
            "p.md",
            "alpha beta\ngamma\n",
            &[ed("beta", "BETA"), ed("BETA\ngamma", "delta")],
        )
        .unwrap();
        assert_eq!(out, "alpha delta\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn no_match_names_the_edit_and_a_whitespace_near_match() {
        let e = apply_edits(
            "p.md",
            "one\nthe  quick fox\nthree\n",
            &[ed("one", "1"), ed("the quick fox", "x")],
        )
        .unwrap_err();
        match e {
            PfsError::EditNoMatch { edit, hint, .. } => {
                assert_eq!(edit, 1);
                assert!(hint.contains("line 2"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            apply_edits("p.md", "abc", &[ed("zzz", "y")])
                .unwrap_err()
                .code()
                .as_str(),
            "EDIT_NO_MATCH"
        );
    }

    #[test]
    fn ambiguous_lists_lines_unless_replace_all() {
        let text = "x = 1\ny = 2\nx = 1\n";
        match apply_edits("p.md", text, &[ed("x = 1", "x = 3")]).unwrap_err() {
            PfsError::EditAmbiguous { count, lines, .. } => {
                assert_eq!(count, 2);
                assert_eq!(lines, vec![1, 3]);
            }
            other => panic!("{other:?}"),
        }
        let all = TextEdit {
            replace_all: true,
            ..ed("x = 1", "x = 3")
        };
        let (out, n) = apply_edits("p.md", text, &[all]).unwrap();
        assert_eq!(out, "x = 3\ny = 2\nx = 3\n");
        assert_eq!(n, 2);
    }

    #[test]
    fn empty_edits_and_empty_old_text_are_refused() {
        assert!(apply_edits("p.md", "a", &[]).is_err());
        assert_eq!(
            apply_edits("p.md", "a", &[ed("", "b")])
                .unwrap_err()
                .code()
                .as_str(),
            "INVALID_INPUT"
        );
    }

    #[test]
    fn diffs_are_unified_and_bounded() {
        let d = unified_diff("content/a.md", "one\ntwo\nthree\n", "one\n2\nthree\n");
        assert!(
            d.starts_with("--- a/content/a.md\n+++ b/content/a.md\n"),
            "{d}"
        );
        assert!(d.contains("-two\n+2\n"), "{d}");
        assert_eq!(unified_diff("x", "same", "same"), "");
        let old: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let new: String = (0..20_000).map(|i| format!("LINE {i}\n")).collect();
        let big = unified_diff("x", &old, &new);
        assert!(big.len() < MAX_DIFF_BYTES + 200, "{}", big.len());
        assert!(big.ends_with("read the file for the rest\n"));
    }
}
