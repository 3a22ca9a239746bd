//! `cargo run -- exercise [NN.K] [--hint]`: the book's exercises and their checks.
//!
//! An exercise that changes behaviour has an id (`05.3`), an `#[ignore]`d test
//! `exercise_3_...` in `tests/05_poll.rs` that fails on the lesson as shipped and
//! passes once the exercise is done, and a hint in its chapter, in a
//! `<details><summary>Hint</summary> ... </details>` block after the exercise.

use std::process::Command;

use crate::lessons::{LESSONS, Lesson};
use crate::{error, package_dir, print_or_exit, usage_error};

pub struct Exercise {
    pub lesson: u32,
    pub number: u32,
    /// The test's name, e.g. `exercise_3_read_one_byte`.
    pub test: String,
}

impl Exercise {
    fn id(&self) -> String {
        format!("{:02}.{}", self.lesson, self.number)
    }

    fn lesson(&self) -> &'static Lesson {
        LESSONS
            .iter()
            .find(|lesson| lesson.number == self.lesson)
            .unwrap_or(&LESSONS[0])
    }
}

/// Every exercise with a check, found in the lessons' test files.
pub fn all() -> Vec<Exercise> {
    let mut found = Vec::new();
    for lesson in LESSONS {
        let path = package_dir()
            .join("tests")
            .join(format!("{}.rs", lesson.name));
        let Ok(source) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in source.lines() {
            let Some(rest) = line.trim_start().strip_prefix("fn exercise_") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let Some((number, _)) = name.split_once('_') else {
                continue;
            };
            if let Ok(number) = number.parse() {
                found.push(Exercise {
                    lesson: lesson.number,
                    number,
                    test: format!("exercise_{name}"),
                });
            }
        }
    }
    found.sort_by_key(|exercise| (exercise.lesson, exercise.number));
    found
}

pub fn command(args: &[String]) -> i32 {
    let exercises = all();
    let hint = args.iter().any(|arg| arg == "--hint");
    let ids: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    if let Some(unknown) = args
        .iter()
        .find(|arg| arg.starts_with("--") && *arg != "--hint")
    {
        return usage_error(&format!("unknown option '{unknown}' for exercise"));
    }
    match ids.as_slice() {
        [] => list(&exercises),
        [id] => {
            let Some(exercise) = find(&exercises, id) else {
                return error(&format!(
                    "no exercise '{id}' with a check; `cargo run -- exercise` lists them"
                ));
            };
            if hint {
                show_hint(exercise)
            } else {
                check(exercise)
            }
        }
        _ => usage_error("one exercise at a time, e.g. `exercise 05.3`"),
    }
}

fn find<'a>(exercises: &'a [Exercise], id: &str) -> Option<&'a Exercise> {
    let (lesson, number) = id.split_once('.')?;
    let lesson: u32 = lesson.parse().ok()?;
    let number: u32 = number.parse().ok()?;
    exercises
        .iter()
        .find(|exercise| exercise.lesson == lesson && exercise.number == number)
}

/// Runs every exercise's test in one `cargo test` and shows which pass.
fn list(exercises: &[Exercise]) -> i32 {
    if exercises.is_empty() {
        print_or_exit("no exercise has a check yet\n");
        return 0;
    }
    print_or_exit("checking every exercise (cargo test -- --ignored exercise_) ...\n");
    let output = Command::new(cargo())
        .args([
            "test",
            "--quiet",
            "--no-fail-fast",
            "--tests",
            "--",
            "--ignored",
            "exercise_",
        ])
        .current_dir(package_dir())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => return error(&format!("cannot run cargo test: {err}")),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut shown = String::new();
    let mut done = 0;
    for exercise in exercises {
        let passed = text.lines().any(|line| {
            line.starts_with(&format!("test {} ", exercise.test)) && line.ends_with("ok")
        });
        done += usize::from(passed);
        shown.push_str(&format!(
            "{:6} {:8} {}  (book/src/{}.md)\n",
            exercise.id(),
            if passed { "done" } else { "not yet" },
            exercise.test,
            exercise.lesson().name
        ));
    }
    shown.push_str(&format!(
        "{done} of {} done. One exercise: cargo run -- exercise NN.K [--hint]\n",
        exercises.len()
    ));
    print_or_exit(&shown);
    0
}

/// Runs one exercise's test: passed (exit 0) or not yet (exit 1).
fn check(exercise: &Exercise) -> i32 {
    let lesson = exercise.lesson();
    let filter = format!("exercise_{}_", exercise.number);
    print_or_exit(&format!(
        "checking {} with: cargo test --test {} -- --ignored {filter}\n",
        exercise.id(),
        lesson.name
    ));
    let mut command = Command::new(cargo());
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        // The test's own message says what it saw; a backtrace only buries it.
        command.env("RUST_BACKTRACE", "0");
    }
    let status = command
        .args([
            "test",
            "--quiet",
            "--test",
            lesson.name,
            "--",
            "--ignored",
            &filter,
        ])
        .current_dir(package_dir())
        .status();
    match status {
        Ok(status) if status.success() => {
            print_or_exit(&format!("{}: passed. Well done.\n", exercise.id()));
            0
        }
        Ok(_) => {
            print_or_exit(&format!(
                "{}: not yet (the test's message above says what it saw). \
                 A hint: cargo run -- exercise {} --hint\n",
                exercise.id(),
                exercise.id()
            ));
            1
        }
        Err(err) => error(&format!("cannot run cargo test: {err}")),
    }
}

/// The `Hint` block after the exercise's id in its chapter.
fn show_hint(exercise: &Exercise) -> i32 {
    let lesson = exercise.lesson();
    let path = package_dir()
        .join("book/src")
        .join(format!("{}.md", lesson.name));
    let chapter = std::fs::read_to_string(&path).unwrap_or_default();
    let id = format!("**{}", exercise.id());
    let Some(start) = chapter.find(&id) else {
        return error(&format!(
            "{} does not mention {}",
            path.display(),
            exercise.id()
        ));
    };
    let after = &chapter[start..];
    let next = after[id.len()..]
        .find(&format!("**{:02}.", exercise.lesson))
        .map_or(after.len(), |at| at + id.len());
    let section = &after[..next];
    let hint = section.find("<summary>Hint</summary>").and_then(|at| {
        let body = &section[at + "<summary>Hint</summary>".len()..];
        body.find("</details>")
            .map(|end| body[..end].trim().to_string())
    });
    match hint {
        Some(hint) => {
            // The chapter indents the hint under its list item: show it flush left.
            let lines: Vec<&str> = hint.lines().map(str::trim).collect();
            print_or_exit(&format!("{} hint:\n{}\n", exercise.id(), lines.join("\n")));
            0
        }
        None => error(&format!(
            "{} has no hint in {}",
            exercise.id(),
            path.display()
        )),
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
