//! Book paths, ids, directory prefixes, lesson paths and glob patterns from arbitrary text: no
//! panic, and whatever parses keeps the security rules (relative, no `..`/`.`/hidden segments,
//! no backslash, `%` or control characters).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = pfs::BookPath::parse(s) {
        let p = p.as_str();
        assert!(
            !p.starts_with('/') && !p.contains('\\') && !p.contains('%'),
            "{p:?}"
        );
        assert!(
            p.split('/')
                .all(|seg| !seg.is_empty() && !seg.starts_with('.')),
            "{p:?}"
        );
        assert!(!p.chars().any(char::is_control), "{p:?}");
    }
    let _ = pfs::DirPrefix::parse(s);
    let _ = pfs::BookId::parse(s);
    let _ = pfs::UserId::parse(s);
    if let Ok(l) = study::lessons::validate_lesson_path(s) {
        assert!(
            l.split('/')
                .all(|seg| !seg.is_empty() && seg != ".." && !seg.starts_with('.')),
            "{l:?}"
        );
        for c in study::lessons::candidates(&l) {
            assert!(!c.starts_with('/'), "{c:?}");
        }
    }
    if let Ok(g) = pfs::search::GlobMatcher::new(s) {
        let _ = g.is_match("content/01-Part/02-Chapter/03-lesson.md");
        let _ = g.literal_dir_prefix();
    }
});
