//! The parts of a connectivity URI the probe needs.

use std::net::Ipv6Addr;

/// A parsed `http://` or `https://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `https`.
    pub tls: bool,
    /// The host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    /// The port, 80 or 443 when not given.
    pub port: u16,
    /// The authority as written, for the `Host` header.
    pub authority: String,
    /// The path and query, `/` when empty.
    pub path: String,
}

impl Target {
    /// Parses `uri`; the error says what is wrong with it.
    pub fn parse(uri: &str) -> Result<Target, String> {
        if let Some(c) = uri.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("it contains the character {c:?}"));
        }
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or("it has no scheme: expected http:// or https://")?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, 80),
            "https" => (true, 443),
            _ => return Err(format!("the scheme {scheme:?} is not http or https")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let path = path.split('#').next().unwrap_or("");
        let path = match path.chars().next() {
            None => "/".to_owned(),
            Some('?') => format!("/{path}"),
            Some(_) => path.to_owned(),
        };
        if authority.is_empty() {
            return Err("it has no host".to_owned());
        }
        if authority.contains('@') {
            return Err("user information (user@host) is not supported".to_owned());
        }

        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or("the IPv6 address has no closing bracket")?;
            address
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("{address:?} is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("expected :port after the IPv6 address")?,
                ),
            };
            (address, port)
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("an IPv6 address must be in brackets: [2001:db8::1]".to_owned());
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("it has no host".to_owned());
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("the port {port:?} is not a number from 1 to 65535"))?,
        };
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }

    /// The `HEAD` request for this target.
    pub fn request(&self) -> String {
        format!(
            "HEAD {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: baleen-time\r\nConnection: close\r\n\r\n",
            self.path, self.authority
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(tls: bool, host: &str, port: u16, authority: &str, path: &str) -> Target {
        Target {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path: path.to_owned(),
        }
    }

    #[test]
    fn uris_are_split() {
        let cases = [
            (
                "https://api.balena-cloud.com/connectivity-check",
                target(
                    true,
                    "api.balena-cloud.com",
                    443,
                    "api.balena-cloud.com",
                    "/connectivity-check",
                ),
            ),
            (
                "http://example.com",
                target(false, "example.com", 80, "example.com", "/"),
            ),
            (
                "HTTP://example.com:8080?a=b#frag",
                target(false, "example.com", 8080, "example.com:8080", "/?a=b"),
            ),
            (
                "https://127.0.0.1:8443/x/y#z",
                target(true, "127.0.0.1", 8443, "127.0.0.1:8443", "/x/y"),
            ),
            (
                "https://[2001:db8::1]/",
                target(true, "2001:db8::1", 443, "[2001:db8::1]", "/"),
            ),
            (
                "https://[::1]:444/t",
                target(true, "::1", 444, "[::1]:444", "/t"),
            ),
        ];
        for (uri, expected) in cases {
            assert_eq!(Target::parse(uri), Ok(expected), "{uri}");
        }
    }

    #[test]
    fn bad_uris_say_why() {
        let cases = [
            (
                "api.balena-cloud.com",
                "it has no scheme: expected http:// or https://",
            ),
            (
                "ftp://example.com/",
                "the scheme \"ftp\" is not http or https",
            ),
            ("https:///path", "it has no host"),
            ("https://:443/", "it has no host"),
            (
                "https://user@example.com/",
                "user information (user@host) is not supported",
            ),
            (
                "https://example.com:0/",
                "the port \"0\" is not a number from 1 to 65535",
            ),
            (
                "https://example.com:99999/",
                "the port \"99999\" is not a number from 1 to 65535",
            ),
            (
                "https://example.com:/",
                "the port \"\" is not a number from 1 to 65535",
            ),
            (
                "https://2001:db8::1/",
                "an IPv6 address must be in brackets: [2001:db8::1]",
            ),
            (
                "https://[2001:db8::1/",
                "the IPv6 address has no closing bracket",
            ),
            ("https://[nope]/", "\"nope\" is not an IPv6 address"),
            ("https://[::1]x/", "expected :port after the IPv6 address"),
            ("https://example.com/a b", "it contains the character ' '"),
            (
                "https://example.com/\r\nX: y",
                "it contains the character '\\r'",
            ),
        ];
        for (uri, problem) in cases {
            assert_eq!(Target::parse(uri), Err(problem.to_owned()), "{uri}");
        }
    }

    #[test]
    fn the_request_is_a_plain_head() {
        let t = Target::parse("https://example.com:8443/check?x=1").unwrap();
        assert_eq!(
            t.request(),
            "HEAD /check?x=1 HTTP/1.1\r\nHost: example.com:8443\r\nUser-Agent: baleen-time\r\n\
             Connection: close\r\n\r\n"
        );
    }
}
