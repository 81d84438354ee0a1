//! `/etc/os-release` with the balenaOS fields, rendered as text.

/// The facts os-release states about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsRelease {
    /// HOSTOS_VERSION, `X.Y.Z[-betaN][+revN]`.
    pub version: String,
    /// The meta version, `X.Y.Z[-betaN]`.
    pub meta_version: String,
    pub board_revision: u32,
    /// Device type slug, e.g. `qemux86-64`.
    pub slug: String,
    /// Yocto-style machine name.
    pub machine: String,
    pub development: bool,
    /// Debian release the root is composed from.
    pub debian_release: String,
}

/// Quotes a value unless it is purely alphanumeric, as meta-balena does.
pub fn quote(value: &str) -> String {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl OsRelease {
    /// `(key, value)` pairs in file order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let (variant, variant_id) = if self.development {
            ("Development", "dev")
        } else {
            ("Production", "prod")
        };
        vec![
            ("ID", "balena-os".into()),
            ("NAME", "balenaOS".into()),
            ("VERSION", self.version.clone()),
            ("VERSION_ID", self.version.clone()),
            ("PRETTY_NAME", format!("balenaOS {} (baleen)", self.version)),
            ("ID_LIKE", "debian".into()),
            ("HOME_URL", "https://www.balena.io/os/".into()),
            ("MACHINE", self.machine.clone()),
            ("VARIANT", variant.into()),
            ("VARIANT_ID", variant_id.into()),
            ("META_BALENA_VERSION", self.meta_version.clone()),
            ("META_BALENA_REV", "0".into()),
            ("BALENA_BOARD_REV", self.board_revision.to_string()),
            ("SLUG", self.slug.clone()),
            ("BALEEN_DEBIAN_RELEASE", self.debian_release.clone()),
        ]
    }

    pub fn render(&self) -> String {
        self.fields()
            .into_iter()
            .map(|(k, v)| format!("{k}={}\n", quote(&v)))
            .collect()
    }

    /// `/etc/issue`: the console greeting (agetty escapes kept).
    pub fn issue(&self) -> String {
        format!("balenaOS {} (baleen) \\n \\l\n\n", self.version)
    }

    /// `/etc/issue.net`: the network greeting, no escapes.
    pub fn issue_net(&self) -> String {
        format!("balenaOS {} (baleen)\n", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(development: bool) -> OsRelease {
        OsRelease {
            version: "1.2.3+rev4".into(),
            meta_version: "1.2.3".into(),
            board_revision: 4,
            slug: "qemux86-64".into(),
            machine: "qemux86-64".into(),
            development,
            debian_release: "bookworm".into(),
        }
    }

    #[test]
    fn renders_balena_fields_quoting_non_alphanumerics() {
        assert_eq!(
            sample(true).render(),
            "ID=\"balena-os\"\nNAME=balenaOS\nVERSION=\"1.2.3+rev4\"\nVERSION_ID=\"1.2.3+rev4\"\n\
PRETTY_NAME=\"balenaOS 1.2.3+rev4 (baleen)\"\nID_LIKE=debian\nHOME_URL=\"https://www.balena.io/os/\"\n\
MACHINE=\"qemux86-64\"\nVARIANT=Development\nVARIANT_ID=dev\nMETA_BALENA_VERSION=\"1.2.3\"\nMETA_BALENA_REV=0\n\
BALENA_BOARD_REV=4\nSLUG=\"qemux86-64\"\nBALEEN_DEBIAN_RELEASE=bookworm\n"
        );
        assert!(
            sample(false)
                .render()
                .contains("VARIANT=Production\nVARIANT_ID=prod\n")
        );
    }

    #[test]
    fn quoting_escapes_shell_specials() {
        assert_eq!(quote("a\"b$c"), "\"a\\\"b\\$c\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("abc1"), "abc1");
    }

    #[test]
    fn issue_names_os_and_version() {
        assert_eq!(sample(true).issue_net(), "balenaOS 1.2.3+rev4 (baleen)\n");
        assert!(
            sample(true)
                .issue()
                .starts_with("balenaOS 1.2.3+rev4 (baleen) \\n \\l")
        );
    }
}
