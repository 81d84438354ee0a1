//! The GRUB environment block, byte for byte as `grub-editenv` writes it.
//!
//! A block is exactly [`BLOCK_SIZE`] bytes: the [`HEADER`] line, one `key=value\n` line per
//! variable in the order they were first set, then `#` padding up to the end. GRUB's `save_env`
//! rewrites the block in place and depends on that fixed size, which is why balenaOS's habit of
//! editing it with `sed` (changing its length) is a bug this crate does not repeat.
//!
//! Parsing is strict: anything `grub-editenv` would not have produced is an error rather than a
//! guess, because a silently misread `bootenv` picks the wrong root partition.
//!
//! Escaping: GRUB stores a backslash in a value as `\\` and a newline as `\` followed by a real
//! newline, and on reading drops any backslash and keeps the byte after it. This module reads
//! backslash escapes the same way and writes backslashes escaped, but refuses newlines in values
//! (and NUL bytes anywhere), so a value is always one line.

use crate::Error;

/// Size of every environment block, in bytes.
pub const BLOCK_SIZE: usize = 1024;

/// The first line of every environment block, including its newline.
pub const HEADER: &str = "# GRUB Environment Block\n";

/// The variables of a GRUB environment block, in file order.
///
/// Unknown variables are kept, so a block can be read, changed and written back without losing
/// keys other tools own (`kernel_override_abi`, `extra_os_firmware_class_path`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvBlock {
    vars: Vec<(String, String)>,
}

impl EnvBlock {
    /// An empty block, as `grub-editenv create` makes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a block, refusing anything `grub-editenv` would not have written.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != BLOCK_SIZE {
            return Err(Error::WrongLength { len: bytes.len() });
        }
        let mut rest = bytes
            .strip_prefix(HEADER.as_bytes())
            .ok_or(Error::MissingHeader)?;
        let mut offset = HEADER.len();
        let mut line = 1;
        let mut block = Self::new();
        while let Some(&first) = rest.first() {
            if first == b'#' {
                return match rest.iter().position(|&b| b != b'#') {
                    Some(i) => Err(Error::BadPadding {
                        offset: offset + i,
                        byte: rest[i],
                    }),
                    None => Ok(block),
                };
            }
            line += 1;
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(Error::UnterminatedLine { line })?;
            let text = std::str::from_utf8(&rest[..end]).map_err(|_| Error::NotUtf8 { line })?;
            let (key, escaped) = text.split_once('=').ok_or_else(|| Error::MissingEquals {
                line,
                text: text.to_owned(),
            })?;
            validate_key(key)?;
            let value = unescape(key, escaped)?;
            validate_value(key, &value)?;
            if block.get(key).is_some() {
                return Err(Error::DuplicateKey {
                    key: key.to_owned(),
                    line,
                });
            }
            block.vars.push((key.to_owned(), value));
            offset += end + 1;
            rest = &rest[end + 1..];
        }
        // The variable lines fill the block exactly; GRUB accepts that too.
        Ok(block)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` to `value`, in place if it exists, otherwise appended at the end.
    ///
    /// Refuses names that are empty, start with `#` or contain `=`, a newline or NUL, and values
    /// containing a newline or NUL. Whether the block still fits is checked by
    /// [`to_bytes`](Self::to_bytes).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        validate_key(key)?;
        validate_value(key, value)?;
        self.set_valid(key, value.to_owned());
        Ok(())
    }

    /// [`set`](Self::set) for names and values already known to be valid.
    pub(crate) fn set_valid(&mut self, key: &str, value: String) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.vars.push((key.to_owned(), value)),
        }
    }

    /// Removes `key`, returning its value if it was set.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.vars.iter().position(|(k, _)| k == key)?;
        Some(self.vars.remove(index).1)
    }

    /// The variables in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether no variable is set.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Renders the block: header, variable lines, `#` padding to exactly [`BLOCK_SIZE`] bytes.
    pub fn to_bytes(&self) -> Result<[u8; BLOCK_SIZE], Error> {
        let mut content = HEADER.as_bytes().to_vec();
        for (key, value) in &self.vars {
            content.extend_from_slice(key.as_bytes());
            content.push(b'=');
            for byte in value.bytes() {
                if byte == b'\\' {
                    content.push(b'\\');
                }
                content.push(byte);
            }
            content.push(b'\n');
        }
        if content.len() > BLOCK_SIZE {
            return Err(Error::TooLarge {
                needed: content.len(),
            });
        }
        let mut block = [b'#'; BLOCK_SIZE];
        block[..content.len()].copy_from_slice(&content);
        Ok(block)
    }
}

fn validate_key(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() {
        "it is empty"
    } else if key.starts_with('#') {
        "it starts with '#', which GRUB reads as a comment"
    } else if key.contains('=') {
        "it contains '='"
    } else if key.contains('\n') {
        "it contains a newline"
    } else if key.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

fn validate_value(key: &str, value: &str) -> Result<(), Error> {
    let reason = if value.contains('\n') {
        "it contains a newline"
    } else if value.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidValue {
        key: key.to_owned(),
        reason,
    })
}

/// Undoes GRUB's escaping: a backslash is dropped and the character after it kept. A backslash
/// at the very end of the line escapes the line's newline, which this crate does not support.
fn unescape(key: &str, escaped: &str) -> Result<String, Error> {
    let mut value = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let next = chars.next().ok_or_else(|| Error::InvalidValue {
                key: key.to_owned(),
                reason: "it contains an escaped newline",
            })?;
            value.push(next);
        } else {
            value.push(c);
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
