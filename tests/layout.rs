//! Every lesson is complete: both programs (with their `[[bin]]`), its test, its
//! chapter listed in SUMMARY.md, and every `{{#include}}` of every chapter points at
//! a file (and an ANCHOR) that exists.

use std::fs;
use std::path::{Path, PathBuf};

use regex::Regex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn lessons() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("lessons"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.len() > 3 && name[..2].bytes().all(|b| b.is_ascii_digit()))
        .collect();
    names.sort();
    names
}

#[test]
fn lessons_are_numbered_without_gaps() {
    let names = lessons();
    assert!(names.len() >= 3, "{names:?}");
    for (index, name) in names.iter().enumerate() {
        assert_eq!(name[..2].parse::<usize>().unwrap(), index + 1, "{names:?}");
    }
}

#[test]
fn every_lesson_has_its_programs_test_and_chapter() {
    let cargo = read(&root().join("Cargo.toml"));
    let summary = read(&root().join("book/src/SUMMARY.md"));
    let readme = read(&root().join("README.md"));
    let mut missing = Vec::new();
    for name in lessons() {
        for part in ["server", "client"] {
            let file = format!("lessons/{name}/{part}.rs");
            if !root().join(&file).exists() {
                missing.push(format!("{file} is missing"));
            }
            let entry = format!("name = \"{name}_{part}\"\npath = \"{file}\"");
            if !cargo.contains(&entry) {
                missing.push(format!("Cargo.toml has no [[bin]] {name}_{part} at {file}"));
            }
            let command = format!("cargo run --bin {name}_{part}");
            // Lesson 11 measures, so the README runs it in release mode.
            let release = format!("cargo run --release --bin {name}_{part}");
            if part == "server" && !readme.contains(&command) && !readme.contains(&release) {
                missing.push(format!("README.md does not show `{command}`"));
            }
        }
        if !root().join(format!("tests/{name}.rs")).exists() {
            missing.push(format!("tests/{name}.rs is missing"));
        }
        let chapter = root().join(format!("book/src/{name}.md"));
        if !chapter.exists() {
            missing.push(format!("book/src/{name}.md is missing"));
        } else if !read(&chapter).contains(&format!("{{{{#include ../../lessons/{name}/")) {
            missing.push(format!(
                "book/src/{name}.md includes no code from lessons/{name}/"
            ));
        }
        if !summary.contains(&format!("({name}.md)")) {
            missing.push(format!("SUMMARY.md does not list {name}.md"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_include_in_the_book_resolves() {
    let include =
        Regex::new(r"\{\{#(?:include|rustdoc_include) ([^}:\s]+)(?::([A-Za-z0-9_-]+))?\s*\}\}")
            .unwrap();
    let src = root().join("book/src");
    let mut broken = Vec::new();
    let mut count = 0;
    for entry in fs::read_dir(&src).unwrap() {
        let chapter = entry.unwrap().path();
        if chapter.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let text = read(&chapter);
        for found in include.captures_iter(&text) {
            count += 1;
            let target = src.join(&found[1]);
            let chapter_name = chapter.file_name().unwrap().to_string_lossy();
            if !target.exists() {
                broken.push(format!("{chapter_name}: {} does not exist", &found[1]));
                continue;
            }
            if let Some(anchor) = found.get(2) {
                // A numeric suffix is a line number, not an anchor.
                if anchor.as_str().bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let code = read(&target);
                let marks = |mark: &str| {
                    let wanted = format!("{mark}: {}", anchor.as_str());
                    code.lines().any(|line| line.trim_end().ends_with(&wanted))
                };
                if !marks("ANCHOR") || !marks("ANCHOR_END") {
                    broken.push(format!(
                        "{chapter_name}: {} has no anchor {}",
                        &found[1],
                        anchor.as_str()
                    ));
                }
            }
        }
    }
    assert!(count > 0, "no includes found in the book");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
