//! The documentation's promises about itself: every relative link in the
//! README and `docs/` reaches a file, and a heading in it when it names
//! one; `examples/` holds exactly the request bodies its manifest lists.
//! A moved or renamed section otherwise leaves links that only a reader
//! finds broken.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use serde_json::Value;

use crate::support::repo_root;

/// The README and every Markdown file under `docs/`, relative to the root.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let root = repo_root();
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-`
/// and `_` dropped, spaces made hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The link targets of a Markdown text and the anchors of its headings
/// (a repeated heading's anchor gets `-1`, `-2`, … as on GitHub).
fn links_and_anchors(text: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut links = Vec::new();
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(part) | Event::Code(part) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&part);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap());
                let count = seen.entry(base.clone()).or_default();
                anchors.insert(if *count == 0 { base.clone() } else { format!("{base}-{count}") });
                *count += 1;
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push(dest_url.into_string());
            }
            _ => {}
        }
    }
    (links, anchors)
}

/// `base/relative` with `.` and `..` resolved, without touching the disk.
fn join(base: &Path, relative: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(relative).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let root = repo_root();
    let documents = documents();
    assert!(documents.len() > 10, "docs/ went missing: {documents:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in &documents {
        let (links, _) = links_and_anchors(&fs::read_to_string(document).unwrap());
        let name = document.strip_prefix(&root).unwrap().display().to_string();
        for link in links {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target =
                if path.is_empty() { document.clone() } else { join(document.parent().unwrap(), path) };
            let relative = target.strip_prefix(&root).map(|t| t.display().to_string());
            let Ok(relative) = relative else {
                broken.push(format!("{name}: `{link}` leaves the repository"));
                continue;
            };
            if !target.exists() {
                broken.push(format!("{name}: `{link}`: no file `{relative}`"));
                continue;
            }
            if !anchor.is_empty() {
                let text = fs::read_to_string(&target).unwrap_or_default();
                let (_, anchors) = links_and_anchors(&text);
                if !anchors.contains(anchor) {
                    broken.push(format!("{name}: `{link}`: no heading `#{anchor}` in `{relative}`"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found: is the parser reading them?");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_a_broken_file_and_a_broken_anchor() {
    let (links, anchors) = links_and_anchors(
        "# Decision APIs\n## `POST /v1/is_authorized` (compatible with cedar-agent)\n## Limits\n## Limits\n\
         [a](#limits-1) [b](../x.md#y)\n```sh\n[not a link](nowhere.md)\n```\n",
    );
    assert_eq!(links, ["#limits-1", "../x.md#y"]);
    let expected =
        ["decision-apis", "post-v1is_authorized-compatible-with-cedar-agent", "limits", "limits-1"];
    assert_eq!(anchors, expected.iter().map(|a| (*a).to_owned()).collect());
    assert_eq!(join(Path::new("/r/docs/services"), "../../examples/a.json"), Path::new("/r/examples/a.json"));
}

/// `examples/index.json`: one entry per file in `examples/`.
fn manifest() -> Vec<Value> {
    let text = fs::read_to_string(repo_root().join("examples/index.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

#[test]
fn every_example_is_valid_and_listed_in_the_manifest_exactly_once() {
    let examples = repo_root().join("examples");
    let mut listed = BTreeSet::new();
    for entry in manifest() {
        let fields: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(fields, BTreeSet::from(["file", "method", "path", "description"]), "{entry}");
        let file = entry["file"].as_str().unwrap();
        assert!(listed.insert(file.to_owned()), "`{file}` is listed twice");
        let method = entry["method"].as_str().unwrap();
        assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method), "{entry}");
        let path = entry["path"].as_str().unwrap();
        assert!(path.starts_with('/') && !path.contains(char::is_whitespace), "{entry}");
        assert!(!entry["description"].as_str().unwrap().trim().is_empty(), "{entry}");
        let text = fs::read_to_string(examples.join(file))
            .unwrap_or_else(|e| panic!("`examples/{file}` is listed but cannot be read: {e}"));
        // JSON bodies must parse; a Cedar text body is checked by the server
        // in `examples::every_example_gets_the_answer_the_docs_give`.
        if file.ends_with(".json") {
            if let Err(e) = serde_json::from_str::<Value>(&text) {
                panic!("`examples/{file}` is not JSON: {e}");
            }
        } else {
            assert!(
                file.ends_with(".cedar"),
                "`examples/{file}`: only JSON and Cedar text bodies are expected"
            );
        }
    }
    let present: BTreeSet<String> = fs::read_dir(&examples)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "index.json")
        .collect();
    assert_eq!(present, listed, "files in examples/ and entries of examples/index.json differ");
}

#[test]
fn every_example_is_used_by_the_documentation() {
    let text: String = documents().iter().map(|d| fs::read_to_string(d).unwrap()).collect();
    for entry in manifest() {
        let file = entry["file"].as_str().unwrap();
        assert!(text.contains(&format!("examples/{file}")), "no document uses `examples/{file}`");
    }
}
