//! The chapter tree of a book: its `content/` lessons (`.md`/`.mdx`, not `.summary.md`) grouped
//! by directory, labelled and ordered the way Docusaurus does it (`_category_.json` `label` and
//! `position`, front matter `title` and `sidebar_position`, else the names), with the student's
//! personalized lessons marked.
//!
//! Titles need each lesson's text. They are remembered by the file's SHA-256, which names its
//! bytes for good, so a tree costs one journal listing plus reads of the files that changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::StreamExt;
use pfs::{BookId, DirPrefix, Engine, JournalEntry, ListView, UserId};
use study::lessons::parse::title_from_path;

use super::esc;
use super::lesson::{lesson_route, lesson_url, position_of, title_of};

/// One lesson in the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonItem {
    /// `01-Part/02-Chapter/03-lesson`.
    pub route: String,
    pub title: String,
    position: Option<f64>,
    /// The student has a personalized copy.
    pub overlay: bool,
}

/// A directory (part, chapter) in the tree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Category {
    pub label: String,
    position: Option<f64>,
    /// The directory name, the tie-breaker of the order.
    name: String,
    pub items: Vec<Item>,
}

/// A tree entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Category(Category),
    Lesson(LessonItem),
}

impl Item {
    fn sort_key(&self) -> (f64, &str) {
        match self {
            Item::Category(c) => (c.position.unwrap_or(f64::MAX), c.name.as_str()),
            Item::Lesson(l) => (
                l.position.unwrap_or(f64::MAX),
                l.route.rsplit('/').next().unwrap_or(""),
            ),
        }
    }
}

/// What a file contributes, remembered by its hash.
#[derive(Debug, Clone)]
enum Meta {
    Lesson {
        title: String,
        position: Option<f64>,
    },
    Category {
        label: Option<String>,
        position: Option<f64>,
    },
}

/// Remembered [`Meta`] by `sha256:kind`; cleared when it grows past its bound.
#[derive(Default)]
pub struct MetaCache(Mutex<HashMap<String, Meta>>);

const META_CACHE_ENTRIES: usize = 50_000;
/// Files read at once while building a tree.
const READ_CONCURRENCY: usize = 16;

impl MetaCache {
    fn get(&self, key: &str) -> Option<Meta> {
        self.0.lock().ok()?.get(key).cloned()
    }
    fn put(&self, key: String, meta: Meta) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= META_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(key, meta);
        }
    }
}

/// Whether a book path is a lesson the page shows.
pub fn is_lesson_file(path: &str) -> bool {
    path.starts_with("content/")
        && (path.ends_with(".md") || path.ends_with(".mdx"))
        && !path.ends_with(".summary.md")
        && !path.ends_with(".summary.mdx")
}

fn is_category_file(path: &str) -> bool {
    path.starts_with("content/") && path.ends_with("/_category_.json")
}

async fn meta(engine: &Engine, cache: &MetaCache, e: &JournalEntry) -> Option<Meta> {
    let lesson = is_lesson_file(&e.path);
    let key = format!("{}:{}", e.sha256, if lesson { "l" } else { "c" });
    if let Some(m) = cache.get(&key) {
        return Some(m);
    }
    let bytes = match engine.read_entry(e).await {
        Ok(b) => b,
        Err(err) => {
            tracing::warn!(path = %e.path, error = %err, "chapter tree: file unreadable");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let m = if lesson {
        Meta::Lesson {
            title: title_of(&e.path, &text),
            position: position_of(&text),
        }
    } else {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Meta::Category {
            label: v["label"].as_str().map(str::to_string),
            position: v["position"].as_f64(),
        }
    };
    cache.put(key, m.clone());
    Some(m)
}

/// The chapter tree of `book` as `user` sees it (their personalized lessons included and marked).
pub async fn build(
    engine: &Engine,
    cache: &MetaCache,
    book: &BookId,
    user: Option<&UserId>,
) -> pfs::Result<Category> {
    let view = match user {
        Some(u) => ListView::Merged(u.clone()),
        None => ListView::Base,
    };
    let prefix = DirPrefix::parse("content")?;
    let entries: Vec<JournalEntry> = engine
        .list(book, view, Some(&prefix))
        .await?
        .into_iter()
        .filter(|e| is_lesson_file(&e.path) || is_category_file(&e.path))
        .collect();
    let metas: Vec<(JournalEntry, Option<Meta>)> = futures::stream::iter(entries)
        .map(|e| async move {
            let m = meta(engine, cache, &e).await;
            (e, m)
        })
        .buffered(READ_CONCURRENCY)
        .collect()
        .await;

    // A personalized copy without `sidebar_position` keeps the shared lesson's place.
    let mut base_positions: HashMap<String, Option<f64>> = HashMap::new();
    let unplaced: Vec<&str> = metas
        .iter()
        .filter(|(e, m)| e.is_overlay() && matches!(m, Some(Meta::Lesson { position: None, .. })))
        .map(|(e, _)| e.path.as_str())
        .collect();
    if !unplaced.is_empty() {
        for e in engine.list(book, ListView::Base, Some(&prefix)).await? {
            if unplaced.contains(&e.path.as_str())
                && let Some(Meta::Lesson { position, .. }) = meta(engine, cache, &e).await
            {
                base_positions.insert(e.path.clone(), position);
            }
        }
    }

    // Directory → (category meta, lessons); directories are created along every lesson's path.
    let mut dirs: BTreeMap<String, (Option<String>, Option<f64>)> = BTreeMap::new();
    let mut lessons: Vec<(String, LessonItem)> = Vec::new();
    for (e, m) in metas {
        let rel = e
            .path
            .strip_prefix("content/")
            .unwrap_or(&e.path)
            .to_string();
        let dir = rel
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        match m {
            Some(Meta::Category { label, position }) => {
                dirs.insert(dir, (label, position));
            }
            meta => {
                if !is_lesson_file(&e.path) {
                    continue;
                }
                let (title, position) = match meta {
                    Some(Meta::Lesson { title, position }) => (
                        title,
                        position.or_else(|| base_positions.get(&e.path).copied().flatten()),
                    ),
                    _ => (title_from_path(&lesson_route(&e.path)), None),
                };
                lessons.push((
                    dir,
                    LessonItem {
                        route: lesson_route(&e.path),
                        title,
                        position,
                        overlay: e.is_overlay(),
                    },
                ));
            }
        }
    }
    let mut root = Category::default();
    for (dir, lesson) in lessons {
        let mut node = &mut root;
        let mut so_far = String::new();
        for seg in dir.split('/').filter(|s| !s.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(seg);
            let idx = node
                .items
                .iter()
                .position(|i| matches!(i, Item::Category(c) if c.name == seg));
            let idx = match idx {
                Some(i) => i,
                None => {
                    let (label, position) = dirs.get(&so_far).cloned().unwrap_or((None, None));
                    node.items.push(Item::Category(Category {
                        label: label.unwrap_or_else(|| title_from_path(seg)),
                        position,
                        name: seg.to_string(),
                        items: Vec::new(),
                    }));
                    node.items.len() - 1
                }
            };
            let Item::Category(c) = &mut node.items[idx] else {
                unreachable!("just matched or pushed a category")
            };
            node = c;
        }
        node.items.push(Item::Lesson(lesson));
    }
    sort(&mut root);
    Ok(root)
}

fn sort(c: &mut Category) {
    c.items.sort_by(|a, b| {
        let (pa, na) = a.sort_key();
        let (pb, nb) = b.sort_key();
        pa.total_cmp(&pb).then_with(|| na.cmp(nb))
    });
    for i in &mut c.items {
        if let Item::Category(sub) = i {
            sort(sub);
        }
    }
}

impl Category {
    /// Every lesson in reading order.
    pub fn lessons(&self) -> Vec<&LessonItem> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Category, out: &mut Vec<&'a LessonItem>) {
            for i in &c.items {
                match i {
                    Item::Category(sub) => walk(sub, out),
                    Item::Lesson(l) => out.push(l),
                }
            }
        }
        walk(self, &mut out);
        out
    }

    fn contains(&self, route: &str) -> bool {
        self.items.iter().any(|i| match i {
            Item::Category(c) => c.contains(route),
            Item::Lesson(l) => l.route == route,
        })
    }
}

/// Books with at most this many lessons show every chapter open.
const OPEN_ALL_UP_TO: usize = 40;

/// The tree as nested lists; `current` is marked `aria-current="page"` and its chapters are open.
pub fn render(book: &str, tree: &Category, current: Option<&str>) -> String {
    let open_all = tree.lessons().len() <= OPEN_ALL_UP_TO;
    let mut out = String::new();
    render_items(book, &tree.items, current, open_all, &mut out);
    out
}

fn render_items(
    book: &str,
    items: &[Item],
    current: Option<&str>,
    open_all: bool,
    out: &mut String,
) {
    out.push_str("<ul class=\"tree\">");
    for i in items {
        match i {
            Item::Category(c) => {
                let open = open_all || current.is_some_and(|r| c.contains(r));
                out.push_str(&format!(
                    "<li><details{}><summary>{}</summary>",
                    if open { " open" } else { "" },
                    esc(&c.label)
                ));
                render_items(book, &c.items, current, open_all, out);
                out.push_str("</details></li>");
            }
            Item::Lesson(l) => {
                let here = current == Some(l.route.as_str());
                out.push_str(&format!(
                    "<li><a href=\"{}\"{}>{}</a>{}</li>",
                    esc(&lesson_url(book, &l.route)),
                    if here { " aria-current=\"page\"" } else { "" },
                    esc(&l.title),
                    if l.overlay {
                        " <span class=\"overlay-dot\" title=\"Personalized for you\"><span aria-hidden=\"true\">✦</span><span class=\"visually-hidden\">(personalized for you)</span></span>"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lesson(route: &str, pos: Option<f64>) -> Item {
        Item::Lesson(LessonItem {
            route: route.into(),
            title: route.rsplit('/').next().unwrap().into(),
            position: pos,
            overlay: false,
        })
    }

    #[test]
    fn order_and_rendering() {
        let mut root = Category {
            items: vec![Item::Category(Category {
                label: "Part <1>".into(),
                position: None,
                name: "01-Part".into(),
                items: vec![
                    lesson("01-Part/b", None),
                    lesson("01-Part/a", Some(5.0)),
                    lesson("01-Part/c", Some(1.0)),
                ],
            })],
            ..Default::default()
        };
        sort(&mut root);
        let order: Vec<&str> = root.lessons().iter().map(|l| l.route.as_str()).collect();
        assert_eq!(order, ["01-Part/c", "01-Part/a", "01-Part/b"]);
        let html = render("bk", &root, Some("01-Part/a"));
        assert!(html.contains("<summary>Part &lt;1&gt;</summary>"), "{html}");
        assert!(
            html.contains("<a href=\"/learn/bk/01-Part/a\" aria-current=\"page\">a</a>"),
            "{html}"
        );
        assert!(html.contains("<details open>"), "{html}");
    }

    #[test]
    fn lesson_files() {
        assert!(is_lesson_file("content/a/01-x.md"));
        assert!(is_lesson_file("content/a/01-x.mdx"));
        assert!(!is_lesson_file("content/a/01-x.summary.md"));
        assert!(!is_lesson_file("static/a.md"));
        assert!(is_category_file("content/a/_category_.json"));
    }
}
