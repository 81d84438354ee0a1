//! Key checking shared by the build file and the device-type files.
//!
//! serde's `deny_unknown_fields` rejects unknown keys, but its messages name neither the file nor
//! the allowed keys, and type errors do not name the key. So a file is first parsed into a
//! [`toml::Table`] and checked against a [`Key`] list here; only then is it deserialized into its
//! serde type, which can no longer fail on anything this check covers.

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::Error;

/// The TOML type a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Integer,
    Bool,
    StringArray,
}

impl Kind {
    fn matches(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_str(),
            Kind::Integer => value.is_integer(),
            Kind::Bool => value.is_bool(),
            Kind::StringArray => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_str)),
        }
    }
}

/// One allowed key of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// What the key accepts, phrased to follow "expected".
    pub expected: &'static str,
}

/// Builds a [`Key`] (a `const fn`, for key tables).
pub(crate) const fn key(
    name: &'static str,
    kind: Kind,
    required: bool,
    expected: &'static str,
) -> Key {
    Key {
        name,
        kind,
        required,
        expected,
    }
}

/// Parses `text` and checks it against `keys`: no unknown keys, no missing required keys, every
/// value of the right TOML type. Then deserializes it into `T`.
pub(crate) fn parse<T: DeserializeOwned>(
    text: &str,
    origin: &str,
    keys: &[Key],
) -> Result<T, Error> {
    let table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| syntax_error(text, origin, &e))?;
    for (name, value) in &table {
        let Some(key) = keys.iter().find(|k| k.name == name) else {
            return Err(Error::UnknownKey {
                origin: origin.to_owned(),
                key: name.clone(),
                allowed: keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
            });
        };
        if !key.kind.matches(value) {
            return Err(invalid(origin, key.name, render(value), key.expected));
        }
    }
    if let Some(missing) = keys
        .iter()
        .find(|k| k.required && !table.contains_key(k.name))
    {
        return Err(Error::MissingKey {
            origin: origin.to_owned(),
            key: missing.name,
        });
    }
    // The checks above cover every way deserialization can fail; keep the error anyway.
    Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| syntax_error(text, origin, &e))
}

/// Turns a TOML parser error into an [`Error::Syntax`] that gives the line and column on one line
/// (the parser's own `Display` draws a multi-line snippet).
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> Error {
    // The parser's message may span lines ("invalid array\nexpected `]`") or be empty at the
    // end of the input.
    let lines: Vec<&str> = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let message = match lines.join("; ") {
        m if m.is_empty() => "unexpected end of file".to_owned(),
        m => m,
    };
    let message = match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    };
    Error::Syntax {
        origin: origin.to_owned(),
        message,
    }
}

/// Validates every entry of a name list, naming the first bad entry as `key[index]`.
pub(crate) fn names<T>(
    origin: &str,
    key: &str,
    values: &[String],
    expected: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, Error> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            parse(value)
                .ok_or_else(|| invalid(origin, format!("{key}[{i}]"), quote(value), expected))
        })
        .collect()
}

/// Builds an [`Error::InvalidValue`].
pub(crate) fn invalid(
    origin: &str,
    key: impl Into<String>,
    value: String,
    expected: &str,
) -> Error {
    Error::InvalidValue {
        origin: origin.to_owned(),
        key: key.into(),
        value,
        expected: expected.to_owned(),
    }
}

/// Renders a value on one line, close to how it is written in TOML.
pub(crate) fn render(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

/// Quotes a string on one line, escaping quotes and control characters (`"a\nb"`).
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}
