//! The `duplex` command line as a user meets it: the README's usage block against `--help`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn duplex_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The long flags (`--name`) that appear in `text`.
fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for (start, _) in text.match_indices("--") {
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.len() > 1 {
            flags.insert(format!("--{name}"));
        }
    }
    flags
}

/// The flags `duplex SUBCOMMAND --help` lists, `--help` itself aside.
fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let out = duplex_bin().args([subcommand, "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let options: String = help
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut flags = long_flags(&options);
    flags.remove("--help");
    assert!(flags.len() > 10, "too few flags parsed from\n{help}");
    flags
}

/// The first ```sh block after `heading` in the README.
fn readme_usage(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let section = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} not in README"))..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    block[..block.find("```").unwrap()].to_string()
}

#[test]
fn the_readme_serve_usage_lists_every_flag() {
    let usage = readme_usage("## The real-time server: `duplex serve`");
    let listed = long_flags(&usage);
    let missing: Vec<_> = help_flags("serve").difference(&listed).cloned().collect();
    assert!(
        missing.is_empty(),
        "README's `duplex serve` usage lacks {missing:?}"
    );
    let unknown: Vec<_> = listed.difference(&help_flags("serve")).cloned().collect();
    assert!(
        unknown.is_empty(),
        "README lists flags that do not exist: {unknown:?}"
    );
}

#[test]
fn the_license_files_the_manifests_name_are_shipped() {
    let manifest = std::fs::read_to_string(repo_file("Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    let mit = std::fs::read_to_string(repo_file("LICENSE-MIT")).unwrap();
    assert!(mit.starts_with("MIT License") && mit.contains("The Duplex developers"));
    let apache = std::fs::read_to_string(repo_file("LICENSE-APACHE")).unwrap();
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
}

#[test]
fn the_readme_cites_no_ignored_files() {
    // `reports/` is git-ignored: a reader of a fresh clone cannot open what is cited there.
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let ignore = std::fs::read_to_string(repo_file(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/reports"));
    assert!(
        !readme.contains("reports/"),
        "README cites a file under reports/"
    );
}
