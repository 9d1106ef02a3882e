//! `--config FILE`: a TOML file holding the same settings as the command line.
//!
//! The keys are the long flags of the subcommand with `_` for `-` (`history_size = 100` is
//! `--history-size 100`). The file is turned into arguments placed before the real command line,
//! so clap parses and checks both the same way and a flag added to a subcommand later is a valid
//! key without any change here. What the command line (or a flag's environment variable) sets,
//! the file does not: a list given on the command line replaces the file's list rather than
//! extending it. Everything in the file is checked before the server starts, and a mistake is
//! reported with its line: an unknown key, a value of the wrong TOML type, or a value the flag
//! refuses.

use std::any::TypeId;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};
use toml::de::{DeTable, DeValue};

/// The id (and long name) of the argument that names the file.
pub const CONFIG_ARG: &str = "config";

/// Adds `--config FILE` to each of `subcommands` of `cmd`.
pub fn add_config_arg(mut cmd: Command, subcommands: &[&str]) -> Command {
    for name in subcommands {
        cmd = cmd.mut_subcommand(*name, |sub| {
            sub.arg(
                Arg::new(CONFIG_ARG)
                    .long(CONFIG_ARG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "Read settings from this TOML file: the long flags as keys with `_` for \
                         `-` (history_size = 100). Flags on the command line override it.",
                    ),
            )
        });
    }
    cmd
}

/// Returns `argv` with the settings of the `--config` file inserted after the subcommand, or
/// `argv` itself when the subcommand has no `--config` or it is not given. A command line that
/// clap refuses is returned unchanged, for clap to report.
pub fn expand(cmd: &Command, argv: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let Some(sub_name) = argv.get(1).and_then(|s| s.to_str()) else {
        return Ok(argv);
    };
    let Some(sub) = cmd.find_subcommand(sub_name) else {
        return Ok(argv);
    };
    if !sub.get_arguments().any(|a| a.get_id() == CONFIG_ARG) {
        return Ok(argv);
    }
    let Ok(matches) = cmd.clone().try_get_matches_from(&argv) else {
        return Ok(argv);
    };
    let Some((_, sub_matches)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Some(path) = sub_matches.get_one::<PathBuf>(CONFIG_ARG) else {
        return Ok(argv);
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let given_elsewhere = |id: &str| {
        matches!(
            sub_matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let file_args = file_arguments(cmd, sub, path, &text, given_elsewhere)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = argv;
    out.splice(2..2, file_args);
    Ok(out)
}

/// The TOML type a flag's values must have, from the type its value parser produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    Boolean,
    Integer,
    /// An integer or a float.
    Number,
    String,
}

impl Expected {
    fn of(arg: &Arg) -> Expected {
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Expected::Boolean;
        }
        let produced = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ];
        if integers.iter().any(|t| produced == *t) {
            Expected::Integer
        } else if produced == TypeId::of::<f64>() || produced == TypeId::of::<f32>() {
            Expected::Number
        } else {
            Expected::String
        }
    }

    fn name(self) -> &'static str {
        match self {
            Expected::Boolean => "a boolean (true or false)",
            Expected::Integer => "an integer",
            Expected::Number => "a number",
            Expected::String => "a string",
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn toml_type(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// One scalar as the argument text clap expects, or `None` when its type is not `expected`.
fn scalar_text(
    value: &DeValue<'_>,
    expected: Expected,
    base: &Path,
    path_typed: bool,
) -> Option<OsString> {
    match (value, expected) {
        (DeValue::Integer(n), Expected::Integer | Expected::Number) => {
            // Decimal, whatever base the file wrote it in (0x10, 0o20, 1_000).
            let n = i128::from_str_radix(n.as_str(), n.radix()).ok()?;
            Some(n.to_string().into())
        }
        (DeValue::Float(f), Expected::Number) => Some(f.as_str().into()),
        (DeValue::String(s), Expected::String) => {
            let s: &str = s;
            if path_typed && Path::new(s).is_relative() {
                // Paths in the file are relative to the file, wherever the server is started.
                Some(base.join(s).into_os_string())
            } else {
                Some(s.into())
            }
        }
        _ => None,
    }
}

fn file_arguments(
    cmd: &Command,
    sub: &Command,
    path: &Path,
    text: &str,
    given_elsewhere: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let table = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        format!("line {line}: {}", e.message().trim_end())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut args = Vec::new();
    for (key, value) in table.get_ref() {
        let line = line_of(text, key.span().start);
        let key: &str = key.get_ref();
        let value = value.get_ref();
        let at = |message: String| format!("line {line}: `{key}`: {message}");
        let flag = key.replace('_', "-");
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && a.get_id() != CONFIG_ARG)
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
        else {
            return Err(format!(
                "line {line}: unknown key `{key}` (the keys are the long flags of `duplex {} \
                 --help` with `_` for `-`)",
                sub.get_name()
            ));
        };
        let expected = Expected::of(arg);
        let list = matches!(arg.get_action(), ArgAction::Append);
        let path_typed = arg.get_value_parser().type_id() == TypeId::of::<PathBuf>();
        let mut values = Vec::new();
        let mut bare_flag = false;
        match (value, expected, list) {
            (DeValue::Boolean(on), Expected::Boolean, _) => bare_flag = *on,
            (_, Expected::Boolean, _) => {
                return Err(at(format!(
                    "expected {}, found {}",
                    expected.name(),
                    toml_type(value)
                )));
            }
            (DeValue::Array(items), _, true) => {
                for item in items {
                    let item = item.get_ref();
                    values.push(scalar_text(item, expected, base, path_typed).ok_or_else(
                        || {
                            at(format!(
                                "expected an array of {}s, found {} in it",
                                expected
                                    .name()
                                    .trim_start_matches("an ")
                                    .trim_start_matches("a "),
                                toml_type(item)
                            ))
                        },
                    )?);
                }
            }
            // A list flag that also takes comma-separated values (`--api-key K1,K2`) takes a
            // string too: `api_key = "K1"` reads like `DUPLEX_API_KEY=K1`.
            (DeValue::String(text), Expected::String, true)
                if arg.get_value_delimiter().is_some() =>
            {
                values.push(OsString::from(text.as_ref()));
            }
            (_, _, true) => {
                return Err(at(format!(
                    "expected an array of {}s, found {}",
                    expected
                        .name()
                        .trim_start_matches("an ")
                        .trim_start_matches("a "),
                    toml_type(value)
                )));
            }
            _ => values.push(
                scalar_text(value, expected, base, path_typed).ok_or_else(|| {
                    at(format!(
                        "expected {}, found {}",
                        expected.name(),
                        toml_type(value)
                    ))
                })?,
            ),
        }
        let long = OsString::from(format!("--{flag}"));
        // Let clap judge each value now, so a refusal names the file's line.
        for value in &values {
            check_value(cmd, sub.get_name(), &long, value).map_err(at)?;
        }
        if given_elsewhere(arg.get_id().as_str()) {
            continue;
        }
        if bare_flag {
            args.push(long.clone());
        }
        for value in values {
            // `--flag=value`: a value starting with `-` stays a value.
            let mut joined = long.clone();
            joined.push("=");
            joined.push(&value);
            args.push(joined);
        }
    }
    Ok(args)
}

/// Parses `duplex SUB --flag=value` alone: clap's own check of one value.
fn check_value(cmd: &Command, sub: &str, long: &OsStr, value: &OsStr) -> Result<(), String> {
    let mut joined = long.to_owned();
    joined.push("=");
    joined.push(value);
    let argv = [OsString::from("duplex"), OsString::from(sub), joined];
    match cmd.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            Err(first.trim_start_matches("error: ").to_string())
        }
    }
}
