//! The kernel command line: parsing what the boot stage reads from it, and
//! building the command line of the kernel it kexecs.

/// Parameters the boot stage itself reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// Seconds to wait for the boot disk to appear (`roottimeout=`, default 10).
    pub root_timeout_secs: u64,
    /// `baleen.shell`: drop to a shell before doing anything (development images only).
    pub shell: bool,
}

impl Default for BootParams {
    fn default() -> Self {
        BootParams {
            root_timeout_secs: 10,
            shell: false,
        }
    }
}

/// Splits a command line into words, keeping double-quoted values together
/// (`foo="a b"` is one word), as the kernel does.
pub fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Reads the parameters the boot stage reacts to; unknown words are ignored.
pub fn parse(cmdline: &str) -> BootParams {
    let mut params = BootParams::default();
    for word in split(cmdline) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        match (key, value) {
            ("roottimeout", Some(v)) => {
                if let Ok(secs) = v.parse() {
                    params.root_timeout_secs = secs;
                }
            }
            ("baleen.shell", None) => params.shell = true,
            _ => {}
        }
    }
    params
}

/// The UUID in `root=UUID=…`, lower-case.
pub fn root_uuid(cmdline: &str) -> Option<String> {
    split(cmdline)
        .into_iter()
        .find_map(|w| w.strip_prefix("root=UUID=").map(str::to_lowercase))
}

/// Words removed from the boot stage's own command line before it is handed
/// on: they describe how this kernel was started, not the next one.
fn is_stage_only(word: &str) -> bool {
    let key = word.split_once('=').map_or(word, |(k, _)| k);
    matches!(key, "root" | "ro" | "rw" | "initrd" | "BOOT_IMAGE") || key.starts_with("baleen.")
}

/// The command line of the root's kernel: the boot stage's own words minus
/// the stage-only ones, then `root=UUID=<uuid> ro`, then `extra`.
pub fn for_root(own: &str, root_uuid: &str, extra: &[String]) -> String {
    let mut words: Vec<String> = split(own)
        .into_iter()
        .filter(|w| !is_stage_only(w))
        .collect();
    words.push(format!("root=UUID={root_uuid}"));
    words.push("ro".to_string());
    words.extend(extra.iter().cloned());
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uuid_is_read_from_the_command_line() {
        assert_eq!(
            root_uuid("quiet root=UUID=BA1EADEF-1 ro").as_deref(),
            Some("ba1eadef-1")
        );
        assert_eq!(root_uuid("root=/dev/vda2"), None);
    }

    #[test]
    fn split_keeps_quoted_values() {
        assert_eq!(split(" a b=\"x y\"  c "), vec!["a", "b=\"x y\"", "c"]);
    }

    #[test]
    fn parse_reads_known_parameters() {
        let p = parse("console=ttyS0 roottimeout=30 baleen.shell quiet");
        assert_eq!(
            p,
            BootParams {
                root_timeout_secs: 30,
                shell: true
            }
        );
        assert_eq!(parse("roottimeout=x"), BootParams::default());
    }

    #[test]
    fn root_cmdline_replaces_stage_words() {
        let own =
            "BOOT_IMAGE=/x root=LABEL=foo console=ttyS0,115200n8 panic=10 baleen.shell rw quiet";
        assert_eq!(
            for_root(own, "ba1eadef-0000-4000-8000-000000000001", &[]),
            "console=ttyS0,115200n8 panic=10 quiet root=UUID=ba1eadef-0000-4000-8000-000000000001 ro"
        );
    }

    #[test]
    fn root_cmdline_appends_extra() {
        assert_eq!(
            for_root("quiet", "u", &["a=b".into()]),
            "quiet root=UUID=u ro a=b"
        );
    }
}
