//! The loader fixture corpus (`tests/fixtures/repos`): every `fail_*`
//! repository must be rejected with the lines of its `expected.txt`, every
//! `ok_*` repository must validate cleanly.

use std::path::{Path, PathBuf};

use tidegate::cli;

fn corpus() -> Vec<PathBuf> {
    let root = super::support::repo_root().join("tests/fixtures/repos");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixture corpus exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn report(dir: &Path) -> Result<(), String> {
    let files = tidegate::load::read_dir(dir).expect("fixture readable");
    cli::check(&files).map(|_| ()).map_err(|r| r.to_string())
}

#[test]
fn every_failing_fixture_fails_with_its_expected_message() {
    let fails: Vec<PathBuf> = corpus()
        .into_iter()
        .filter(|p| name(p).starts_with("fail_"))
        .collect();
    assert!(fails.len() >= 20, "only {} fail_ fixtures", fails.len());
    let mut problems = Vec::new();
    for dir in &fails {
        let expected = std::fs::read_to_string(dir.join("expected.txt"))
            .unwrap_or_else(|_| panic!("{} has no expected.txt", name(dir)));
        match report(dir) {
            Ok(()) => problems.push(format!("{}: validated, expected a failure", name(dir))),
            Err(text) => {
                for line in expected.lines().filter(|l| !l.trim().is_empty()) {
                    if !text.contains(line.trim()) {
                        problems.push(format!(
                            "{}: missing `{line}` in report:\n{text}",
                            name(dir)
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn every_ok_fixture_validates() {
    let oks: Vec<PathBuf> = corpus()
        .into_iter()
        .filter(|p| name(p).starts_with("ok_"))
        .collect();
    assert!(!oks.is_empty());
    for dir in oks {
        if let Err(text) = report(&dir) {
            panic!("{} should validate:\n{text}", name(&dir));
        }
    }
}

#[test]
fn the_same_input_reports_the_same_way_every_time() {
    let dir = super::support::repo_root().join("tests/fixtures/repos/fail_cycle_across_modules");
    let first = report(&dir).unwrap_err();
    for _ in 0..3 {
        assert_eq!(report(&dir).unwrap_err(), first);
    }
}
