//! Keeping the answer key out of every streamed character.
//!
//! The streamed models never see the key (it lives only in the persisted state and in the
//! non-streamed judge call), so these filters are defence in depth: [`redact`] cleans whole strings
//! (the judge's hint, the explanation), [`KeyFilter`] cleans a stream of deltas without losing or
//! reordering any other character, holding back only text that could be the start of the key.

/// Keys shorter than this are not filtered inside streamed prose (a one-letter or two-digit key
/// would censor ordinary words); the streamed models never see the key anyway.
pub const MIN_STREAM_KEY_CHARS: usize = 4;

/// What replaces a key occurrence.
pub const MASK: &str = "…";

fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Replace every case-insensitive occurrence of `key` in `text` by [`MASK`]. Short keys are
/// matched as whole words only.
pub fn redact(text: &str, key: &str) -> String {
    let key = key.trim();
    if key.is_empty() {
        return text.to_string();
    }
    let k: Vec<char> = key.chars().map(fold).collect();
    let t: Vec<char> = text.chars().collect();
    let whole_word = k.len() < MIN_STREAM_KEY_CHARS;
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < t.len() {
        let matches = i + k.len() <= t.len()
            && t[i..i + k.len()]
                .iter()
                .zip(&k)
                .all(|(a, b)| fold(*a) == *b)
            && (!whole_word
                || ((i == 0 || !t[i - 1].is_alphanumeric())
                    && (i + k.len() == t.len() || !t[i + k.len()].is_alphanumeric())));
        if matches {
            out.push_str(MASK);
            i += k.len();
        } else {
            out.push(t[i]);
            i += 1;
        }
    }
    out
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// True when `text` contains `key` once spacing, punctuation and case are ignored (for keys of at
/// least [`MIN_STREAM_KEY_CHARS`] letters/digits): "E-a-c-h v a l u e" disguises "each value".
pub fn disguises(text: &str, key: &str) -> bool {
    let k = squash(key);
    k.chars().count() >= MIN_STREAM_KEY_CHARS && squash(text).contains(&k)
}

/// A streaming filter removing a secret from a sequence of text deltas.
#[derive(Debug)]
pub struct KeyFilter {
    key: Vec<char>,
    pending: Vec<char>,
}

impl KeyFilter {
    /// A filter for `key` (inactive for keys shorter than [`MIN_STREAM_KEY_CHARS`]).
    pub fn new(key: &str) -> KeyFilter {
        let key: Vec<char> = key.trim().chars().map(fold).collect();
        KeyFilter {
            key: if key.len() >= MIN_STREAM_KEY_CHARS {
                key
            } else {
                Vec::new()
            },
            pending: Vec::new(),
        }
    }

    /// A filter that lets everything through.
    pub fn none() -> KeyFilter {
        KeyFilter {
            key: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Feed a delta; returns the text that is safe to emit now (possibly empty).
    pub fn push(&mut self, delta: &str) -> String {
        if self.key.is_empty() {
            return delta.to_string();
        }
        self.pending.extend(delta.chars());
        let mut out = String::new();
        let k = self.key.len();
        let mut i = 0;
        while i < self.pending.len() {
            let avail = self.pending.len() - i;
            let n = avail.min(k);
            let prefix_match = self.pending[i..i + n]
                .iter()
                .zip(&self.key)
                .all(|(a, b)| fold(*a) == *b);
            if prefix_match && n == k {
                out.push_str(MASK);
                i += k;
            } else if prefix_match {
                // Could be the start of the key: hold it back.
                break;
            } else {
                out.push(self.pending[i]);
                i += 1;
            }
        }
        self.pending.drain(..i);
        out
    }

    /// Flush what is held back at the end of the stream (it was not the key).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_filter_masks_split_keys_and_keeps_everything_else() {
        let mut f = KeyFilter::new("Ownership Rules");
        let deltas = [
            "It is ",
            "about own",
            "ership rul",
            "es, and ",
            "own",
            " things. ",
        ];
        let mut out = String::new();
        for d in deltas {
            out.push_str(&f.push(d));
        }
        out.push_str(&f.finish());
        assert_eq!(out, "It is about …, and own things. ");
    }

    #[test]
    fn disguised_keys_are_detected() {
        assert!(disguises(
            "it is O-W-N-E-R s h i p rules!",
            "ownership rules"
        ));
        assert!(!disguises("it is about owners", "ownership rules"));
        assert!(!disguises("a b", "b"));
    }

    #[test]
    fn redact_whole_words_for_short_keys() {
        assert_eq!(redact("B is right, not Bob", "b"), "… is right, not Bob");
        assert_eq!(redact("the heap and HEAP", "heap"), "the … and …");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However the text is split into deltas, the streamed output equals the one-shot
        /// redaction: nothing lost, nothing reordered, no key occurrence survives.
        #[test]
        fn streaming_equals_redaction(
            parts in proptest::collection::vec(
                prop_oneof![
                    "[a-zA-Z ,.!\n]{0,12}",
                    Just("Secret Key".to_string()),
                    Just("secret ke".to_string()),
                    Just("SECRET KEYS".to_string()),
                    Just("sec".to_string()),
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..20),
        ) {
            let key = "secret key";
            let text: String = parts.concat();
            let chars: Vec<char> = text.chars().collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (chars.len() + 1)).collect();
            cuts.push(0);
            cuts.push(chars.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut f = KeyFilter::new(key);
            let mut out = String::new();
            for w in cuts.windows(2) {
                let delta: String = chars[w[0]..w[1]].iter().collect();
                out.push_str(&f.push(&delta));
            }
            out.push_str(&f.finish());
            prop_assert_eq!(&out, &redact(&text, key));
            prop_assert!(!out.to_lowercase().contains(key));
        }
    }
}
