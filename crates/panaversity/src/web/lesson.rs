//! Lesson rendering: markdown (and the markdown of MDX) to safe HTML.
//!
//! Front matter is stripped; headings get anchor ids (a `{#id}` attribute wins); Docusaurus
//! admonitions (`:::tip Title` … `:::`) become labelled asides; tables are wrapped in a
//! scrollable, focusable region; links to other lessons (`./02-loops.md`) point at their study
//! pages and images at the book's own files. Lesson text cannot inject markup: raw HTML and JSX
//! are omitted (their inner text stays), link schemes other than http(s)/mailto are dropped, and
//! images from other origins become links, so a lesson never makes the page load anything from
//! elsewhere.

use std::collections::HashSet;

use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use study::lessons::parse::{front_matter_value, split_front_matter, title_from_path};

use super::esc;

/// A rendered lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    /// The article body, starting with its `<h1>`.
    pub html: String,
}

/// Where a lesson lives, to resolve its relative links and images.
#[derive(Debug, Clone, Copy)]
pub struct LessonRef<'a> {
    pub book: &'a str,
    /// The book path of the lesson file, `content/01-Part/02-Chapter/03-lesson.md`.
    pub file: &'a str,
}

impl LessonRef<'_> {
    /// The lesson's directory inside the book (`content/01-Part/02-Chapter`).
    fn dir(&self) -> &str {
        self.file.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
    }
}

/// The title of a lesson file: front matter `title`, `sidebar_label`, the first `# heading`, or
/// the file name.
pub fn title_of(file: &str, raw: &str) -> String {
    let (front, body) = split_front_matter(raw);
    front_matter_value(front, "title")
        .or_else(|| front_matter_value(front, "sidebar_label"))
        .or_else(|| first_heading(body))
        .unwrap_or_else(|| title_from_path(&lesson_route(file)))
}

/// `sidebar_position` from the front matter, if any.
pub fn position_of(raw: &str) -> Option<f64> {
    let (front, _) = split_front_matter(raw);
    front_matter_value(front, "sidebar_position").and_then(|v| v.parse().ok())
}

/// The lesson path of a lesson file as the tutor and the page URLs name it: `content/` and the
/// extension removed (`01-Part/02-Chapter/03-lesson`).
pub fn lesson_route(file: &str) -> String {
    let p = file.strip_prefix("content/").unwrap_or(file);
    p.strip_suffix(".mdx")
        .or_else(|| p.strip_suffix(".md"))
        .unwrap_or(p)
        .to_string()
}

fn first_heading(body: &str) -> Option<String> {
    let mut in_h1 = false;
    let mut text = String::new();
    for ev in Parser::new_ext(body, options()) {
        match ev {
            Event::Start(Tag::Heading {
                level: HeadingLevel::H1,
                ..
            }) => in_h1 = true,
            Event::End(TagEnd::Heading(HeadingLevel::H1)) => {
                let t = text.trim().to_string();
                return (!t.is_empty()).then_some(t);
            }
            Event::Text(t) | Event::Code(t) if in_h1 => text.push_str(&t),
            _ => {}
        }
    }
    None
}

fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_HEADING_ATTRIBUTES
        | Options::ENABLE_GFM
}

/// Render a lesson file's text.
pub fn render(at: LessonRef<'_>, raw: &str) -> Rendered {
    let title = title_of(at.file, raw);
    let (_, body) = split_front_matter(raw);
    let body = if at.file.ends_with(".mdx") {
        strip_mdx_statements(body)
    } else {
        body.to_string()
    };
    let mut r = Renderer {
        at,
        ids: HashSet::new(),
        has_h1: false,
    };
    let mut html = String::with_capacity(body.len() * 2);
    for block in split_admonitions(&body) {
        r.block(&block, &mut html);
    }
    if !r.has_h1 {
        html.insert_str(0, &format!("<h1>{}</h1>\n", esc(&title)));
    }
    Rendered { title, html }
}

// ------------------------------------------------------------------ admonitions

/// A run of markdown, or a Docusaurus admonition holding more blocks.
#[derive(Debug, PartialEq)]
enum Block {
    Markdown(String),
    Admonition {
        kind: String,
        title: Option<String>,
        body: Vec<Block>,
    },
}

/// Whether `line` opens or closes a fenced code block (``` or ~~~), and with which marker.
fn fence(line: &str) -> Option<(char, usize)> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 {
        return None;
    }
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = t.chars().take_while(|x| *x == c).count();
    (n >= 3).then_some((c, n))
}

/// `:::kind Title` / `:::kind[Title]` → (colons, kind, title); `:::` alone → (colons, "", None).
fn admonition_line(line: &str) -> Option<(usize, String, Option<String>)> {
    let t = line.trim();
    let colons = t.chars().take_while(|c| *c == ':').count();
    if colons < 3 {
        return None;
    }
    let rest = t[colons..].trim();
    let kind: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let after = rest[kind.len()..].trim();
    let title = after
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(after)
        .trim();
    if kind.is_empty() && !title.is_empty() {
        return None; // `::: text` is not an admonition line
    }
    Some((colons, kind, (!title.is_empty()).then(|| title.to_string())))
}

fn split_admonitions(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    parse_blocks(&lines)
}

fn parse_blocks(lines: &[&str]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut md = String::new();
    let mut open_fence: Option<(char, usize)> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some((c, n)) = open_fence {
            if fence(line)
                .is_some_and(|(c2, n2)| c2 == c && n2 >= n && line.trim().chars().all(|x| x == c))
            {
                open_fence = None;
            }
            md.push_str(line);
            i += 1;
            continue;
        }
        if let Some(f) = fence(line) {
            open_fence = Some(f);
            md.push_str(line);
            i += 1;
            continue;
        }
        match admonition_line(line) {
            Some((colons, kind, title)) if !kind.is_empty() => {
                // Find the matching close: a bare line of at least as many colons at depth 0.
                let mut depth = 0usize;
                let mut inner_fence: Option<(char, usize)> = None;
                let mut end = None;
                for (j, l) in lines.iter().enumerate().skip(i + 1) {
                    if let Some((c, n)) = inner_fence {
                        if fence(l).is_some_and(|(c2, n2)| c2 == c && n2 >= n) {
                            inner_fence = None;
                        }
                        continue;
                    }
                    if let Some(f) = fence(l) {
                        inner_fence = Some(f);
                        continue;
                    }
                    match admonition_line(l) {
                        Some((_, k, _)) if !k.is_empty() => depth += 1,
                        Some((c, k, None)) if k.is_empty() => {
                            if depth == 0 && c >= colons.min(3) {
                                end = Some(j);
                                break;
                            }
                            depth = depth.saturating_sub(1);
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else {
                    md.push_str(line); // never closed: plain text
                    i += 1;
                    continue;
                };
                if !md.is_empty() {
                    out.push(Block::Markdown(std::mem::take(&mut md)));
                }
                out.push(Block::Admonition {
                    kind: kind.to_ascii_lowercase(),
                    title,
                    body: parse_blocks(&lines[i + 1..end]),
                });
                i = end + 1;
            }
            _ => {
                md.push_str(line);
                i += 1;
            }
        }
    }
    if !md.is_empty() {
        out.push(Block::Markdown(md));
    }
    out
}

/// MDX `import`/`export` statements (outside code) are module code, not text.
fn strip_mdx_statements(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut open: Option<(char, usize)> = None;
    for line in body.split_inclusive('\n') {
        match (open, fence(line)) {
            (None, Some(f)) => open = Some(f),
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => open = None,
            (None, None) if line.starts_with("import ") || line.starts_with("export ") => continue,
            _ => {}
        }
        out.push_str(line);
    }
    out
}

// ------------------------------------------------------------------ markdown

struct Renderer<'a> {
    at: LessonRef<'a>,
    /// Heading ids used so far (unique within the article).
    ids: HashSet<String>,
    has_h1: bool,
}

impl Renderer<'_> {
    fn block(&mut self, block: &Block, out: &mut String) {
        match block {
            Block::Markdown(md) => self.markdown(md, out),
            Block::Admonition { kind, title, body } => {
                let kind = match kind.as_str() {
                    "note" | "tip" | "info" | "warning" | "danger" | "caution" | "important" => {
                        kind.as_str()
                    }
                    _ => "note",
                };
                let label = title.clone().unwrap_or_else(|| {
                    let mut c = kind.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                });
                out.push_str(&format!(
                    "<aside class=\"admonition admonition-{kind}\" role=\"note\" aria-label=\"{}\">\n<p class=\"admonition-title\">{}</p>\n",
                    esc(&label),
                    esc(&label)
                ));
                for b in body {
                    self.block(b, out);
                }
                out.push_str("</aside>\n");
            }
        }
    }

    fn markdown(&mut self, md: &str, out: &mut String) {
        let mut events: Vec<Event<'_>> = Vec::new();
        // Index of the open heading's Start event and its text so far.
        let mut heading: Option<(usize, String)> = None;
        // Whether each open link was kept (an unsafe scheme drops the tag, keeps the text).
        let mut links: Vec<bool> = Vec::new();
        // An open image: its destination, title and alt text.
        let mut image: Option<(String, String, String)> = None;
        for ev in Parser::new_ext(md, options()) {
            if let Some((_, _, alt)) = &mut image {
                match ev {
                    Event::End(TagEnd::Image) => {
                        let Some((dest, title, alt)) = image.take() else {
                            continue;
                        };
                        events.push(Event::Html(CowStr::from(self.image(&dest, &title, &alt))));
                    }
                    Event::Text(t) | Event::Code(t) => alt.push_str(&t),
                    _ => {}
                }
                continue;
            }
            match ev {
                Event::Html(_) | Event::InlineHtml(_) => {}
                Event::Start(Tag::HtmlBlock) | Event::End(TagEnd::HtmlBlock) => {}
                Event::Start(Tag::Heading {
                    level,
                    id,
                    classes,
                    attrs,
                }) => {
                    if level == HeadingLevel::H1 {
                        self.has_h1 = true;
                    }
                    heading = Some((events.len(), String::new()));
                    events.push(Event::Start(Tag::Heading {
                        level,
                        id,
                        classes,
                        attrs,
                    }));
                }
                Event::End(TagEnd::Heading(level)) => {
                    if let Some((at, text)) = heading.take()
                        && let Event::Start(Tag::Heading { id, .. }) = &mut events[at]
                    {
                        let wanted = id.as_deref().map(slug).unwrap_or_else(|| slug(&text));
                        *id = Some(CowStr::from(self.unique_id(wanted)));
                    }
                    events.push(Event::End(TagEnd::Heading(level)));
                }
                Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title,
                    id,
                }) => match self.link(&dest_url) {
                    Some(href) => {
                        links.push(true);
                        events.push(Event::Start(Tag::Link {
                            link_type,
                            dest_url: CowStr::from(href),
                            title,
                            id,
                        }));
                    }
                    None => links.push(false),
                },
                Event::End(TagEnd::Link) => {
                    if links.pop().unwrap_or(false) {
                        events.push(Event::End(TagEnd::Link));
                    }
                }
                Event::Start(Tag::Image {
                    dest_url, title, ..
                }) => image = Some((dest_url.to_string(), title.to_string(), String::new())),
                Event::Start(Tag::Table(a)) => {
                    events.push(Event::Html(CowStr::Borrowed(
                        "<div class=\"table-wrap\" role=\"region\" aria-label=\"Table\" tabindex=\"0\">",
                    )));
                    events.push(Event::Start(Tag::Table(a)));
                }
                Event::End(TagEnd::Table) => {
                    events.push(Event::End(TagEnd::Table));
                    events.push(Event::Html(CowStr::Borrowed("</div>")));
                }
                ev => {
                    if let Some((_, text)) = &mut heading
                        && let Event::Text(t) | Event::Code(t) = &ev
                    {
                        text.push_str(t);
                    }
                    events.push(ev);
                }
            }
        }
        pulldown_cmark::html::push_html(out, events.into_iter());
    }

    fn unique_id(&mut self, wanted: String) -> String {
        let base = if wanted.is_empty() {
            "section".to_string()
        } else {
            wanted
        };
        let mut id = base.clone();
        let mut n = 1;
        while !self.ids.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Where a lesson link points, or `None` to drop it (unsafe scheme, outside the book).
    fn link(&self, dest: &str) -> Option<String> {
        match classify(dest) {
            Target::Anchor | Target::External => Some(dest.to_string()),
            Target::Unsafe => None,
            Target::Local { path, suffix } => {
                let last = path.rsplit('/').next().unwrap_or("");
                let is_file = last
                    .rsplit_once('.')
                    .is_some_and(|(_, ext)| !matches!(ext, "md" | "mdx"));
                if is_file {
                    let file = self.resolve(path)?;
                    Some(format!("{}{suffix}", files_url(self.at.book, &file)))
                } else if path.is_empty() {
                    Some(suffix.to_string())
                } else {
                    // Another lesson: `./02-loops.md`, `../03-Chapter/01-x`, `/docs/01-Part/…`.
                    let p = path.strip_prefix("/docs/").map(|p| format!("/{p}"));
                    let file = self.resolve(p.as_deref().unwrap_or(path))?;
                    let route = lesson_route(&file);
                    Some(format!("{}{suffix}", lesson_url(self.at.book, &route)))
                }
            }
        }
    }

    /// The `<img>` (a book file) or, for other origins, a link to the image.
    fn image(&self, dest: &str, title: &str, alt: &str) -> String {
        let title_attr = if title.is_empty() {
            String::new()
        } else {
            format!(" title=\"{}\"", esc(title))
        };
        match classify(dest) {
            Target::External => format!(
                "<a class=\"external-image\" href=\"{}\"{title_attr}>{} (image on another site)</a>",
                esc(dest),
                esc(if alt.is_empty() { "Image" } else { alt })
            ),
            Target::Local { path, .. } if !path.is_empty() => match self.resolve_image(path) {
                Some(file) => format!(
                    "<img src=\"{}\" alt=\"{}\"{title_attr} loading=\"lazy\" decoding=\"async\">",
                    esc(&files_url(self.at.book, &file)),
                    esc(alt)
                ),
                None => format!("<span class=\"missing-image\">{}</span>", esc(alt)),
            },
            _ => format!("<span class=\"missing-image\">{}</span>", esc(alt)),
        }
    }

    /// A book path for a local link: `/x` from the book's `content/`, others from the lesson's
    /// directory. `None` when it climbs out of the book.
    fn resolve(&self, path: &str) -> Option<String> {
        match path.strip_prefix('/') {
            Some(abs) => normalize("content", abs),
            None => normalize(self.at.dir(), path),
        }
    }

    /// A book path for an image: `/img/x.png` is the site's static directory (`static/img/x.png`);
    /// relative ones sit next to the lesson.
    fn resolve_image(&self, path: &str) -> Option<String> {
        match path.strip_prefix('/') {
            Some(abs) => normalize("static", abs),
            None => normalize(self.at.dir(), path),
        }
    }
}

/// What a link destination is.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// `#section`.
    Anchor,
    /// `https://…`, `mailto:…`, `//host/…`.
    External,
    /// `javascript:`, `data:` and every other scheme.
    Unsafe,
    /// A path in this book, with its `?query#fragment` suffix.
    Local { path: &'a str, suffix: &'a str },
}

fn classify(dest: &str) -> Target<'_> {
    let d = dest.trim();
    if d.starts_with('#') {
        return Target::Anchor;
    }
    if d.starts_with("//") {
        return Target::External;
    }
    let scheme_end = d.find([':', '/', '?', '#']);
    if let Some(i) = scheme_end
        && d[i..].starts_with(':')
    {
        let scheme = d[..i].to_ascii_lowercase();
        return if matches!(scheme.as_str(), "http" | "https" | "mailto") {
            Target::External
        } else {
            Target::Unsafe
        };
    }
    let split = d.find(['?', '#']).unwrap_or(d.len());
    Target::Local {
        path: &d[..split],
        suffix: &d[split..],
    }
}

/// `base` joined with `rel`, `.`/`..` resolved; `None` when `..` leaves `base`'s area or a
/// segment is empty.
fn normalize(base: &str, rel: &str) -> Option<String> {
    let area = base.split('/').next().unwrap_or("");
    let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.len() <= 1 {
                    return None;
                }
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    (parts.len() > 1 && parts[0] == area).then(|| parts.join("/"))
}

/// Characters escaped in a URL path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode_path(p: &str) -> String {
    p.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The study page of a lesson: `/learn/{book}/{lesson path}`.
pub fn lesson_url(book: &str, route: &str) -> String {
    format!("/learn/{}/{}", encode_path(book), encode_path(route))
}

/// A book file (image, download) as the page fetches it: `/learn-files/{book}/{book path}`.
pub fn files_url(book: &str, file: &str) -> String {
    format!("/learn-files/{}/{}", encode_path(book), encode_path(file))
}

/// A heading's anchor: lower-case letters and digits, words joined by `-`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in text.trim().chars() {
        if c.is_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.extend(c.to_lowercase());
        } else if c.is_whitespace() || c == '-' || c == '_' {
            dash = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: LessonRef<'static> = LessonRef {
        book: "sample-book",
        file: "content/01-Part/02-Chapter/03-lesson.md",
    };

    #[test]
    fn front_matter_is_stripped_and_the_title_comes_from_it() {
        let r = render(
            AT,
            "---\ntitle: Loops \"and\" <more>\nsidebar_position: 2\n---\n\nSome *text*.\n",
        );
        assert_eq!(r.title, "Loops \"and\" <more>");
        assert!(
            r.html
                .starts_with("<h1>Loops &quot;and&quot; &lt;more&gt;</h1>"),
            "{}",
            r.html
        );
        assert!(!r.html.contains("sidebar_position"));
        assert!(r.html.contains("<em>text</em>"));
    }

    #[test]
    fn raw_html_and_script_cannot_get_through() {
        let r = render(
            AT,
            "# T\n\n<script>alert(1)</script>\n\nHi <img src=x onerror=alert(1)> <b>bold</b>\n\n[x](javascript:alert(1)) [y](JaVaScRiPt:alert(1)) [z](data:text/html,hi)\n\n![a](data:image/png;base64,AAAA)\n",
        );
        let h = r.html.to_ascii_lowercase();
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("onerror"), "{h}");
        assert!(!h.contains("javascript:"), "{h}");
        assert!(!h.contains("data:"), "{h}");
        assert!(h.contains("bold"), "inner text stays: {h}");
        assert!(
            h.contains("<p>x y z</p>"),
            "unsafe links keep their text: {h}"
        );
    }

    #[test]
    fn code_tables_and_headings() {
        let r = render(
            AT,
            "# Title\n\n## Steps run top to bottom\n\n```python\nprint(\"<b>\")\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Steps run top to bottom\n\n### Custom {#my-id}\n",
        );
        assert!(
            r.html.contains("<h2 id=\"steps-run-top-to-bottom\">"),
            "{}",
            r.html
        );
        assert!(
            r.html.contains("<h2 id=\"steps-run-top-to-bottom-1\">"),
            "{}",
            r.html
        );
        assert!(r.html.contains("<h3 id=\"my-id\">"), "{}", r.html);
        assert!(
            r.html
                .contains("<code class=\"language-python\">print(\"&lt;b&gt;\")"),
            "{}",
            r.html
        );
        assert!(r.html.contains("<div class=\"table-wrap\""), "{}", r.html);
        assert!(r.html.contains("<td>1</td>"), "{}", r.html);
        assert_eq!(r.html.matches("<h1").count(), 1, "{}", r.html);
    }

    #[test]
    fn links_and_images_stay_in_the_book() {
        let r = render(
            AT,
            "# T\n\n[next](./04-next.md#part) [up](../../02-Other/01-Ch/01-a.md) [doc](/docs/01-Part/02-Chapter/05-x) [ext](https://example.com/a) [mail](mailto:a@b.c) [out](../../../../etc/passwd.md)\n\n![flow](/images/program-flow.png) ![local](./img/diagram.png \"Diagram\") ![remote](https://example.com/x.png)\n",
        );
        let h = &r.html;
        assert!(
            h.contains("href=\"/learn/sample-book/01-Part/02-Chapter/04-next#part\""),
            "{h}"
        );
        assert!(
            h.contains("href=\"/learn/sample-book/02-Other/01-Ch/01-a\""),
            "{h}"
        );
        assert!(
            h.contains("href=\"/learn/sample-book/01-Part/02-Chapter/05-x\""),
            "{h}"
        );
        assert!(h.contains("href=\"https://example.com/a\""), "{h}");
        assert!(h.contains("href=\"mailto:a@b.c\""), "{h}");
        assert!(!h.contains("passwd\""), "{h}");
        assert!(
            h.contains(
                "<img src=\"/learn-files/sample-book/static/images/program-flow.png\" alt=\"flow\""
            ),
            "{h}"
        );
        assert!(h.contains("<img src=\"/learn-files/sample-book/content/01-Part/02-Chapter/img/diagram.png\" alt=\"local\" title=\"Diagram\""), "{h}");
        assert!(!h.contains("<img src=\"https://"), "{h}");
        assert!(
            h.contains("class=\"external-image\" href=\"https://example.com/x.png\""),
            "{h}"
        );
    }

    #[test]
    fn admonitions_become_asides_and_mdx_statements_go() {
        let at = LessonRef {
            book: "b",
            file: "content/a/b.mdx",
        };
        let r = render(
            at,
            "import Tabs from '@theme/Tabs';\n\n# T\n\n:::tip Remember this\n\nOrder **matters**.\n\n```\n:::\n```\n\n:::\n\nAfter.\n\n:::warning\nCareful\n:::\n",
        );
        let h = &r.html;
        assert!(!h.contains("import Tabs"), "{h}");
        assert!(h.contains("<aside class=\"admonition admonition-tip\" role=\"note\" aria-label=\"Remember this\">"), "{h}");
        assert!(h.contains("<strong>matters</strong>"), "{h}");
        assert!(
            h.contains("<code>:::\n</code>"),
            "a fence inside keeps its colons: {h}"
        );
        assert!(h.contains("<p>After.</p>"), "{h}");
        assert!(h.contains("admonition-warning"), "{h}");
        assert!(
            h.contains("<p class=\"admonition-title\">Warning</p>"),
            "{h}"
        );
    }

    #[test]
    fn titles_and_routes() {
        assert_eq!(lesson_route("content/01-a/02-b.md"), "01-a/02-b");
        assert_eq!(lesson_route("content/01-a/index.mdx"), "01-a/index");
        assert_eq!(title_of("content/a/01-intro.md", "Text only"), "Intro");
        assert_eq!(
            title_of("content/a/x.md", "# Heading *one*\n"),
            "Heading one"
        );
        assert_eq!(position_of("---\nsidebar_position: 3\n---\n"), Some(3.0));
    }
}
