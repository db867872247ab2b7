//! The text of a config file and the translation of TOML errors into [`ConfigError`]s with a line
//! and a fix.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{resolve_relative, ConfigError, ConfigErrorKind, SECTIONS};

/// Documentation of one table of the config file, used to explain schema errors.
///
/// Every section module exports one of these; [`SECTIONS`] lists the gateway config's, and the
/// client config has its own list.
pub(super) struct SectionDoc {
    /// The table's key at the top level, e.g. `"interface"`.
    pub(super) table: &'static str,
    /// Whether the table is an array of tables (`[[peer]]`) rather than a single one.
    pub(super) array: bool,
    /// For each key of the table, one line showing how it is written.
    pub(super) examples: &'static [(&'static str, &'static str)],
}

impl SectionDoc {
    /// How the table header is written: `[interface]` or `[[peer]]`.
    pub(super) fn header(&self) -> String {
        if self.array {
            format!("[[{}]]", self.table)
        } else {
            format!("[{}]", self.table)
        }
    }

    fn example(&self, key: &str) -> Option<&'static str> {
        self.examples
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, example)| *example)
    }
}

/// The config file being validated: its text, where it lives, and which tables it may have.
pub(super) struct Source<'a> {
    text: &'a str,
    path: &'a Path,
    sections: &'static [&'static SectionDoc],
    /// Byte offset of the start of every line after the first (one past each `\n`), so that
    /// finding a line is a binary search: a config with 10 000 clients locates errors and
    /// spans without rescanning the text each time.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    /// A gateway config file (its tables are [`SECTIONS`]).
    pub(super) fn new(text: &'a str, path: &'a Path) -> Self {
        Self::with_sections(text, path, SECTIONS)
    }

    /// A config file whose tables are `sections`, which explain its schema errors.
    pub(super) fn with_sections(
        text: &'a str,
        path: &'a Path,
        sections: &'static [&'static SectionDoc],
    ) -> Self {
        let line_starts = text
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        Self {
            text,
            path,
            sections,
            line_starts,
        }
    }

    /// The config file's path as the caller named it.
    pub(super) fn path(&self) -> &Path {
        self.path
    }

    /// `p` resolved against the config file's directory.
    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        resolve_relative(self.path, Path::new(p))
    }

    /// The 1-based line of a byte offset.
    pub(super) fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        // Lines that start at or before `end`, plus the first line.
        self.line_starts.partition_point(|&start| start <= end) + 1
    }

    /// An error located at the start of `span`.
    pub(super) fn error(
        &self,
        span: &Range<usize>,
        kind: ConfigErrorKind,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        ConfigError::new(self.path, Some(self.line(span.start)), kind, message, fix)
    }

    /// Parses the text as TOML into `T`, turning syntax and schema errors into [`ConfigError`]s.
    pub(super) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        // A first pass into an untyped table separates syntax errors from schema errors.
        if let Err(e) = toml::from_str::<toml::Table>(self.text) {
            return Err(self.syntax_error(&e));
        }
        toml::from_str::<T>(self.text).map_err(|e| self.schema_error(&e))
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end();
        let fix = if message.contains("duplicate key") {
            "each key may appear only once in a table (and each [table] only once); remove or \
             rename the repeated one"
        } else {
            "check the TOML syntax on this line: strings need double quotes, arrays are written \
             [\"a\", \"b\"], and each table header is [name] or [[name]]"
        };
        self.error(
            &span,
            ConfigErrorKind::Syntax,
            format!("invalid TOML: {message}"),
            fix,
        )
    }

    fn schema_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim_end();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (key, expected) = match rest.split_once("`, expected ") {
                Some((key, expected)) => (key, expected.trim_start_matches("one of ")),
                None => (rest.trim_end_matches('`'), ""),
            };
            // The unknown key is either a `key = value` inside a table or a table header itself.
            let table = if self.is_header_line(span.start) {
                self.header_parent(span.start)
            } else {
                self.table_at(span.start)
            };
            if table.is_empty() {
                let what = if self.is_header_line(span.start) {
                    "table"
                } else {
                    "top-level key"
                };
                let tables: Vec<String> = self.sections.iter().map(|s| s.header()).collect();
                return self.error(
                    &span,
                    ConfigErrorKind::UnknownKey,
                    format!("unknown {what} `{key}`"),
                    format!(
                        "remove it or correct its spelling; the valid tables are {}",
                        tables.join(", ")
                    ),
                );
            }
            let (label, where_) = self.describe(&table, span.start);
            return self.error(
                &span,
                ConfigErrorKind::UnknownKey,
                format!("{label}unknown key `{key}`"),
                format!(
                    "remove `{key}` or correct its spelling; valid keys {where_} are {expected}"
                ),
            );
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let key = rest.trim_end_matches('`');
            // toml points a missing key at the header of the table that lacks it.
            let table = if span.is_empty() {
                Vec::new()
            } else {
                self.header_path(span.start)
            };
            if table.is_empty() {
                let fix = match self.find_section(key) {
                    Some(section) => format!(
                        "add an {} table with the keys {}",
                        section.header(),
                        section
                            .examples
                            .iter()
                            .map(|(k, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => format!("add `{key}`"),
                };
                return self.error(
                    &span,
                    ConfigErrorKind::MissingKey,
                    format!("missing required table `{key}`"),
                    fix,
                );
            }
            let (label, where_) = self.describe(&table, span.start);
            let fix = match self.example_for(&table, key) {
                Some(example) => format!("add a line like `{example}` {where_}"),
                None => format!("add `{key} = ...` {where_}"),
            };
            return self.error(
                &span,
                ConfigErrorKind::MissingKey,
                format!("{label}missing required key `{key}`"),
                fix,
            );
        }
        // Type mismatches: "invalid type: string \"1\", expected i64" and friends.
        let (table, key) = if self.is_header_line(span.start) {
            let mut path = self.header_path(span.start);
            let key = path.pop().unwrap_or_default();
            (path, key)
        } else {
            (self.table_at(span.start), self.key_before(span.start))
        };
        let (label, where_) = self.describe(&table, span.start);
        let detail = describe_type_error(message);
        let fix = if table.is_empty() && self.find_section(&key).is_some_and(|s| s.array) {
            format!("write [[{key}]] (double brackets): there can be several {key}s")
        } else if table.is_empty() && self.find_section(&key).is_some() {
            format!("write `{key}` as a table: a line [{key}] followed by its keys")
        } else {
            match self.example_for(&table, &key) {
                Some(example) => format!("write it like `{example}`"),
                None => format!("check the documentation of the keys {where_}"),
            }
        };
        let subject = if key.is_empty() {
            String::from("a value")
        } else {
            format!("`{key}`")
        };
        self.error(
            &span,
            ConfigErrorKind::WrongType,
            format!("{label}{subject} has the wrong type: {detail}"),
            fix,
        )
    }

    /// A prefix for messages (`interface: `, `peer "office-b": `) and a phrase naming the table
    /// (`in [interface]`). An entry of an array of tables is labelled by its `name` when it has
    /// one.
    fn describe(&self, table: &[String], offset: usize) -> (String, String) {
        match table {
            [] => (String::new(), "at the top level".to_owned()),
            [name] => match self.find_section(name) {
                Some(section) if section.array => {
                    let label = match self.entry_name_at(offset) {
                        Some(entry) => format!("{name} {entry:?}: "),
                        None => format!("{name}: "),
                    };
                    (label, format!("in {}", section.header()))
                }
                Some(section) => (format!("{name}: "), format!("in {}", section.header())),
                None => (format!("{name}: "), format!("in [{name}]")),
            },
            path => {
                let joined = path.join(".");
                (format!("{joined}: "), format!("in [{joined}]"))
            }
        }
    }

    fn find_section(&self, table: &str) -> Option<&'static SectionDoc> {
        self.sections.iter().copied().find(|s| s.table == table)
    }

    fn example_for(&self, table: &[String], key: &str) -> Option<&'static str> {
        match table {
            [name] => self.find_section(name)?.example(key),
            _ => None,
        }
    }

    /// The lines of the text with their starting byte offsets.
    fn lines(&self) -> impl Iterator<Item = (usize, &'a str)> {
        let text = self.text;
        text.split_inclusive('\n').scan(0, |start, line| {
            let at = *start;
            *start += line.len();
            Some((at, line))
        })
    }

    /// The line containing `offset`, and where it starts.
    fn line_at(&self, offset: usize) -> (usize, &'a str) {
        self.lines()
            .take_while(|(start, _)| *start <= offset)
            .last()
            .unwrap_or((0, ""))
    }

    fn is_header_line(&self, offset: usize) -> bool {
        parse_header(self.line_at(offset).1).is_some()
    }

    /// The dotted path of the table header on the line containing `offset`.
    fn header_path(&self, offset: usize) -> Vec<String> {
        parse_header(self.line_at(offset).1).unwrap_or_default()
    }

    /// The table that contains a header line, i.e. the header's path without its last key.
    fn header_parent(&self, offset: usize) -> Vec<String> {
        let mut path = self.header_path(offset);
        path.pop();
        path
    }

    /// The table whose body contains `offset`: the last header before it (empty: top level).
    fn table_at(&self, offset: usize) -> Vec<String> {
        self.lines()
            .take_while(|(start, _)| *start <= offset)
            .filter_map(|(_, line)| parse_header(line))
            .last()
            .unwrap_or_default()
    }

    /// The key of the `key = value` whose value contains `offset`, looking back over the lines of
    /// a multi-line array if needed.
    fn key_before(&self, offset: usize) -> String {
        let (line_start, line) = self.line_at(offset);
        let head = line
            .get(..offset.saturating_sub(line_start))
            .unwrap_or(line);
        if let Some(key) = parse_key(head) {
            return key;
        }
        self.lines()
            .take_while(|(start, _)| *start < line_start)
            .filter_map(|(_, line)| {
                parse_key(line).or_else(|| parse_header(line).map(|_| String::new()))
            })
            .last()
            .unwrap_or_default()
    }

    /// The `name = "..."` of the `[[peer]]` (or other array entry) containing `offset`, if it is
    /// written simply.
    fn entry_name_at(&self, offset: usize) -> Option<String> {
        let header_start = self
            .lines()
            .filter(|(start, line)| *start <= offset && parse_header(line).is_some())
            .last()
            .map(|(start, _)| start)?;
        self.lines()
            .skip_while(|(start, _)| *start <= header_start)
            .take_while(|(_, line)| parse_header(line).is_none())
            .find_map(|(_, line)| {
                let (key, value) = line.split_once('=')?;
                if key.trim() != "name" {
                    return None;
                }
                let value = value.trim();
                let value = value.strip_prefix('"')?;
                let end = value.find('"')?;
                Some(value[..end].to_owned())
            })
    }
}

/// The dotted path of a table header line such as `[interface]` or `[[peer]]`.
fn parse_header(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let line = match line.find('#') {
        Some(comment) => line[..comment].trim_end(),
        None => line,
    };
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    let parts: Vec<String> = inner
        .split('.')
        .map(|p| p.trim().trim_matches('"').to_owned())
        .collect();
    let bare = |p: &String| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    parts.iter().all(bare).then_some(parts)
}

/// The bare key of a `key = ...` line, if the line starts with one.
fn parse_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(end);
    (!key.is_empty() && rest.trim_start().starts_with('=')).then(|| key.to_owned())
}

/// Rewrites serde's "invalid type: string \"1\", expected i64" in the config's vocabulary.
fn describe_type_error(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" => {
            "an integer"
        }
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    let found = found.replace(" as i128", "");
    let found = found
        .strip_prefix("map")
        .map_or(found.clone(), |rest| format!("table{rest}"));
    let found = found
        .strip_prefix("sequence")
        .map_or(found.clone(), |rest| format!("array{rest}"));
    format!("expected {expected}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("[interface]"),
            Some(vec!["interface".to_owned()])
        );
        assert_eq!(
            parse_header("  [[peer]]  # b"),
            Some(vec!["peer".to_owned()])
        );
        assert_eq!(
            parse_header("[interface.sub]"),
            Some(vec!["interface".to_owned(), "sub".to_owned()])
        );
        assert_eq!(parse_header("]"), None);
        assert_eq!(parse_header("[\"10.0.0.1/24\"]"), None);
        assert_eq!(parse_header("address = [\"x\"]"), None);
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("mtu = 5"), Some("mtu".to_owned()));
        assert_eq!(parse_key("  listen_port="), Some("listen_port".to_owned()));
        assert_eq!(parse_key("\"a\","), None);
    }

    #[test]
    fn type_messages() {
        assert_eq!(
            describe_type_error("invalid type: string \"1\", expected i64"),
            "expected an integer, found string \"1\""
        );
        assert_eq!(
            describe_type_error("invalid type: map, expected a sequence"),
            "expected an array, found table"
        );
    }

    #[test]
    fn line_numbers() {
        let source = Source::new("a\nb\n\nc", Path::new("x.toml"));
        assert_eq!(source.line(0), 1);
        assert_eq!(source.line(2), 2);
        assert_eq!(source.line(5), 4);
        assert_eq!(source.line(500), 4);
    }
}
