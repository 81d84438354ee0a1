//! Debian-side values: release, architecture, package names and mirror URLs.

use std::fmt;

/// What a package-name key accepts, for error messages.
pub(crate) const PACKAGE: &str = "a Debian package name ([a-z0-9][a-z0-9+.-]+)";
/// What a package-list key accepts, for error messages.
pub(crate) const PACKAGES: &str = "an array of Debian package names";
/// What a URL key accepts, for error messages.
pub(crate) const URL: &str = "an http:// or https:// URL without whitespace";

/// The Debian release the root filesystem is composed from (the analogue of the Yocto release a
/// balenaOS board builds on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DebianRelease {
    /// Debian 12.
    #[default]
    Bookworm,
    /// Debian 13.
    Trixie,
}

impl DebianRelease {
    /// Every supported release, oldest first.
    pub const ALL: [DebianRelease; 2] = [DebianRelease::Bookworm, DebianRelease::Trixie];

    /// The codename, as mmdebstrap and `sources.list` take it.
    pub fn codename(self) -> &'static str {
        match self {
            DebianRelease::Bookworm => "bookworm",
            DebianRelease::Trixie => "trixie",
        }
    }

    /// The major version number (`VERSION_ID` of Debian's own os-release).
    pub fn version(self) -> u32 {
        match self {
            DebianRelease::Bookworm => 12,
            DebianRelease::Trixie => 13,
        }
    }

    /// Looks a release up by codename.
    pub fn from_codename(codename: &str) -> Option<DebianRelease> {
        Self::ALL.into_iter().find(|r| r.codename() == codename)
    }
}

impl fmt::Display for DebianRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.codename())
    }
}

/// A CPU architecture, with its Debian and balena names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARM, hard float.
    Armhf,
    /// 32-bit x86.
    I386,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 4] = [Arch::Amd64, Arch::Arm64, Arch::Armhf, Arch::I386];

    /// The Debian architecture name (`dpkg --print-architecture`), as device-type files write it.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::I386 => "i386",
        }
    }

    /// The name balena uses in `device-type.json` and its cloud (`arch`).
    pub fn balena(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "aarch64",
            Arch::Armhf => "armv7hf",
            Arch::I386 => "i386",
        }
    }

    /// Looks an architecture up by its Debian name.
    pub fn from_debian(name: &str) -> Option<Arch> {
        Self::ALL.into_iter().find(|a| a.debian() == name)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian())
    }
}

/// A Debian package name: `[a-z0-9][a-z0-9+.-]+` (Debian Policy §5.6.1), which also rules out
/// whitespace and shell metacharacters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName(String);

impl PackageName {
    /// The rule, for error messages.
    pub const RULE: &'static str = "[a-z0-9][a-z0-9+.-]+";

    /// Returns the name if it follows Debian's package-name rule.
    pub fn parse(name: &str) -> Option<PackageName> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = name.len() >= 2
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
        (first_ok && rest_ok).then(|| PackageName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An `http://` or `https://` URL with something after the scheme and no whitespace or control
/// characters (used for the Debian mirror and documentation links).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Returns the URL if it is an acceptable `http://` or `https://` URL.
    pub fn parse(url: &str) -> Option<HttpUrl> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))?;
        let host_ok = rest.split('/').next().is_some_and(|host| !host.is_empty());
        let chars_ok = !url.chars().any(|c| c.is_whitespace() || c.is_control());
        (host_ok && chars_ok).then(|| HttpUrl(url.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_follow_debian_policy() {
        for good in [
            "network-manager",
            "libc6",
            "g++",
            "libstdc++6",
            "0ad",
            "lib.x-1+2",
        ] {
            assert!(PackageName::parse(good).is_some(), "{good}");
        }
        for bad in [
            "", "a", "-x", "+x", ".x", "Foo", "foo bar", "foo;rm", "foo$(x)", "foo_bar", "é1",
            "x\n",
        ] {
            assert!(PackageName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn urls_need_http_scheme_host_and_no_whitespace() {
        assert!(HttpUrl::parse("http://deb.debian.org/debian").is_some());
        assert!(HttpUrl::parse("https://10.0.2.2:8080/debian/").is_some());
        for bad in [
            "ftp://deb.debian.org/debian",
            "deb.debian.org/debian",
            "http://",
            "http:///debian",
            "http://deb.debian.org/deb ian",
            "http://deb.debian.org/debian\n",
        ] {
            assert!(HttpUrl::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn release_and_arch_names() {
        assert_eq!(DebianRelease::default(), DebianRelease::Bookworm);
        assert_eq!(
            DebianRelease::from_codename("trixie"),
            Some(DebianRelease::Trixie)
        );
        assert_eq!(DebianRelease::from_codename("buster"), None);
        assert_eq!(DebianRelease::Trixie.version(), 13);
        assert_eq!(
            Arch::from_debian("arm64").map(Arch::balena),
            Some("aarch64")
        );
        assert_eq!(Arch::from_debian("x86_64"), None);
    }
}
