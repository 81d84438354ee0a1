//! The one error type of this crate.

/// Everything that can be wrong with an environment block or the balena keys in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The block is not exactly [`BLOCK_SIZE`](crate::BLOCK_SIZE) bytes long.
    #[error("environment block is {len} bytes, expected exactly 1024")]
    WrongLength {
        /// The length found.
        len: usize,
    },
    /// The block does not start with `# GRUB Environment Block\n`.
    #[error("environment block does not start with the header \"# GRUB Environment Block\"")]
    MissingHeader,
    /// A variable line is not valid UTF-8.
    #[error("line {line} of the environment block is not valid UTF-8")]
    NotUtf8 {
        /// 1-based line number (the header is line 1).
        line: usize,
    },
    /// A variable line has no `=`.
    #[error("line {line} of the environment block has no '=': {text:?}")]
    MissingEquals {
        /// 1-based line number (the header is line 1).
        line: usize,
        /// The line as found, without its newline.
        text: String,
    },
    /// The last variable line reaches the end of the block without a newline.
    #[error("line {line} of the environment block runs to the end of the block without a newline")]
    UnterminatedLine {
        /// 1-based line number (the header is line 1).
        line: usize,
    },
    /// Something other than `#` follows the padding's first `#`.
    #[error(
        "environment block has byte {byte:#04x} at offset {offset} in the padding, expected only '#' after the last variable"
    )]
    BadPadding {
        /// Byte offset from the start of the block.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The same variable appears twice.
    #[error("environment block sets {key:?} more than once (again on line {line})")]
    DuplicateKey {
        /// The repeated variable name.
        key: String,
        /// 1-based line number of the repetition.
        line: usize,
    },
    /// A variable name GRUB cannot store or read back.
    #[error("invalid environment variable name {key:?}: {reason}")]
    InvalidKey {
        /// The name as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value this crate refuses to store.
    #[error("invalid value for environment variable {key:?}: {reason}")]
    InvalidValue {
        /// The variable the value belongs to.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The variables do not fit in one block.
    #[error("environment variables need {needed} bytes, more than the 1024 of a block")]
    TooLarge {
        /// Bytes the header and the variable lines need, before padding.
        needed: usize,
    },
    /// A balena key holds a value the boot picker does not understand.
    #[error("invalid bootenv value {key}={value:?}: expected {expected}")]
    BadBootVar {
        /// The balena key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What the key may hold.
        expected: &'static str,
    },
}
