//! Parsing, editing and rendering of environment blocks, including every refusal.

use super::*;

/// A block whose content is `body` after the header, padded like grub-editenv does.
fn block_with(body: &str) -> Vec<u8> {
    let mut bytes = format!("{HEADER}{body}").into_bytes();
    bytes.resize(BLOCK_SIZE, b'#');
    bytes
}

#[test]
fn empty_block_is_header_and_padding() {
    let bytes = EnvBlock::new().to_bytes().unwrap();
    let expected = format!("# GRUB Environment Block\n{}", "#".repeat(999));
    assert_eq!(bytes.as_slice(), expected.as_bytes());
    assert!(EnvBlock::parse(&bytes).unwrap().is_empty());
}

#[test]
fn parses_variables_in_order() {
    let block = EnvBlock::parse(&block_with("resin_root_part=B\nbootcount=2\nempty=\n")).unwrap();
    let vars: Vec<_> = block.iter().collect();
    assert_eq!(
        vars,
        [("resin_root_part", "B"), ("bootcount", "2"), ("empty", "")]
    );
    assert_eq!(block.len(), 3);
    assert_eq!(block.get("bootcount"), Some("2"));
    assert_eq!(block.get("missing"), None);
}

#[test]
fn value_may_contain_equals_and_hash() {
    let block = EnvBlock::parse(&block_with("extra=firmware_class.path=/x#y\n")).unwrap();
    assert_eq!(block.get("extra"), Some("firmware_class.path=/x#y"));
}

#[test]
fn round_trips_bytes_exactly() {
    let bytes = block_with("a=1\nkernel_override_abi=abc\nb=\n");
    let block = EnvBlock::parse(&bytes).unwrap();
    assert_eq!(block.to_bytes().unwrap().as_slice(), bytes.as_slice());
}

#[test]
fn set_replaces_in_place_and_appends_new_keys() {
    let mut block = EnvBlock::parse(&block_with("a=1\nb=2\n")).unwrap();
    block.set("a", "10").unwrap();
    block.set("c", "3").unwrap();
    assert_eq!(
        block.to_bytes().unwrap().as_slice(),
        block_with("a=10\nb=2\nc=3\n").as_slice()
    );
}

#[test]
fn remove_returns_old_value() {
    let mut block = EnvBlock::parse(&block_with("a=1\nb=2\n")).unwrap();
    assert_eq!(block.remove("a"), Some("1".to_owned()));
    assert_eq!(block.remove("a"), None);
    assert_eq!(
        block.to_bytes().unwrap().as_slice(),
        block_with("b=2\n").as_slice()
    );
}

#[test]
fn backslashes_are_escaped_on_write_and_read_back() {
    let mut block = EnvBlock::new();
    block.set("path", r"C:\boot").unwrap();
    let bytes = block.to_bytes().unwrap();
    assert_eq!(bytes.as_slice(), block_with("path=C:\\\\boot\n").as_slice());
    assert_eq!(EnvBlock::parse(&bytes).unwrap(), block);
}

#[test]
fn grub_escapes_are_read_like_grub() {
    let block = EnvBlock::parse(&block_with("a=x\\\\y\\z\n")).unwrap();
    assert_eq!(block.get("a"), Some(r"x\yz"));
}

#[test]
fn content_filling_the_block_exactly_is_accepted() {
    let key_line_len = BLOCK_SIZE - HEADER.len();
    let body = format!("k={}\n", "v".repeat(key_line_len - 3));
    let bytes = block_with(&body);
    assert_eq!(bytes.len(), BLOCK_SIZE);
    assert_eq!(*bytes.last().unwrap(), b'\n');
    let block = EnvBlock::parse(&bytes).unwrap();
    assert_eq!(block.to_bytes().unwrap().as_slice(), bytes.as_slice());
}

#[test]
fn content_too_large_is_refused() {
    let mut block = EnvBlock::new();
    block.set("k", &"v".repeat(BLOCK_SIZE)).unwrap();
    let err = block.to_bytes().unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variables need 1052 bytes, more than the 1024 of a block"
    );
}

#[test]
fn wrong_length_is_refused() {
    let mut bytes = block_with("a=1\n");
    bytes.truncate(1000);
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err().to_string(),
        "environment block is 1000 bytes, expected exactly 1024"
    );
    bytes.resize(1025, b'#');
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err(),
        Error::WrongLength { len: 1025 }
    );
}

#[test]
fn missing_header_is_refused() {
    let mut bytes = b"bootcount=0\n".to_vec();
    bytes.resize(BLOCK_SIZE, b'#');
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err().to_string(),
        "environment block does not start with the header \"# GRUB Environment Block\""
    );
    assert_eq!(
        EnvBlock::parse(&[0; BLOCK_SIZE]).unwrap_err(),
        Error::MissingHeader
    );
}

#[test]
fn line_without_equals_is_refused() {
    let err = EnvBlock::parse(&block_with("a=1\nbootcount\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3 of the environment block has no '=': \"bootcount\""
    );
    let err = EnvBlock::parse(&block_with("\n")).unwrap_err();
    assert_eq!(
        err,
        Error::MissingEquals {
            line: 2,
            text: String::new()
        }
    );
}

#[test]
fn non_utf8_is_refused() {
    let mut bytes = block_with("a=1\nb=?\n");
    let pos = HEADER.len() + 6;
    bytes[pos] = 0xff;
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err().to_string(),
        "line 3 of the environment block is not valid UTF-8"
    );
}

#[test]
fn garbage_in_padding_is_refused() {
    let mut bytes = block_with("a=1\n");
    bytes[900] = b'x';
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err().to_string(),
        "environment block has byte 0x78 at offset 900 in the padding, expected only '#' after the last variable"
    );
    // A comment line followed by more variables is not what grub-editenv writes.
    let err = EnvBlock::parse(&block_with("#c\nb=2\n")).unwrap_err();
    assert_eq!(
        err,
        Error::BadPadding {
            offset: HEADER.len() + 1,
            byte: b'c'
        }
    );
}

#[test]
fn sed_edited_block_with_zero_padding_is_refused() {
    let mut bytes = block_with("bootcount=0\n");
    bytes[BLOCK_SIZE - 1] = 0;
    assert_eq!(
        EnvBlock::parse(&bytes).unwrap_err(),
        Error::BadPadding {
            offset: BLOCK_SIZE - 1,
            byte: 0
        }
    );
}

#[test]
fn unterminated_last_line_is_refused() {
    let body = format!("k={}", "v".repeat(BLOCK_SIZE - HEADER.len() - 2));
    let err = EnvBlock::parse(&block_with(&body)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2 of the environment block runs to the end of the block without a newline"
    );
}

#[test]
fn duplicate_key_is_refused() {
    let err = EnvBlock::parse(&block_with("a=1\nb=2\na=3\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment block sets \"a\" more than once (again on line 4)"
    );
}

#[test]
fn bad_keys_are_refused_on_parse() {
    let err = EnvBlock::parse(&block_with("=1\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid environment variable name \"\": it is empty"
    );
    let err = EnvBlock::parse(&block_with("a\0=1\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid environment variable name \"a\\0\": it contains a NUL byte"
    );
}

#[test]
fn escaped_newline_is_refused_on_parse() {
    let err = EnvBlock::parse(&block_with("a=x\\\ny\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value for environment variable \"a\": it contains an escaped newline"
    );
}

#[test]
fn bad_keys_are_refused_on_set() {
    let mut block = EnvBlock::new();
    for (key, reason) in [
        ("", "it is empty"),
        ("#x", "it starts with '#', which GRUB reads as a comment"),
        ("a=b", "it contains '='"),
        ("a\nb", "it contains a newline"),
        ("a\0b", "it contains a NUL byte"),
    ] {
        assert_eq!(
            block.set(key, "v"),
            Err(Error::InvalidKey {
                key: key.to_owned(),
                reason
            })
        );
    }
    assert!(block.is_empty());
}

#[test]
fn bad_values_are_refused_on_set() {
    let mut block = EnvBlock::new();
    assert_eq!(
        block.set("a", "x\ny").unwrap_err().to_string(),
        "invalid value for environment variable \"a\": it contains a newline"
    );
    assert_eq!(
        block.set("a", "x\0y").unwrap_err().to_string(),
        "invalid value for environment variable \"a\": it contains a NUL byte"
    );
    assert!(block.is_empty());
}
