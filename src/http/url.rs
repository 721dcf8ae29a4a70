//! The `http://host:port/prefix` URLs conntest is pointed at.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path, starting with `/`, without a trailing `/` unless it is the root:
    /// the prefix routes are joined to.
    pub path: String,
    /// The request target exactly as written: path (trailing `/` kept) and
    /// query, without the fragment; `/` when empty. What an upstream GET asks.
    pub target: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        // The scheme is case-insensitive (RFC 3986 section 3.1): HTTP:// too.
        let (scheme, rest) = match s.split_once("://") {
            Some((name, rest)) if name.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((name, rest)) if name.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            _ => return Err(format!("'{s}' is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!("'{s}': credentials in the URL are not supported"));
        }
        let default_port = if scheme == Scheme::Http { 80 } else { 443 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("'{s}': unclosed '[' in host"))?;
            let port = match &v6[end + 1..] {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("'{s}': bad port"))?,
                ),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("'{s}' has no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("'{s}': bad port '{p}'"))?,
        };
        let target = match path.split('#').next().unwrap_or("") {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let path = match path.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(Url {
            scheme,
            host: host.to_owned(),
            port,
            path,
            target,
        })
    }

    /// The Host header value.
    pub fn host_header(&self) -> String {
        let default = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        match (self.host.contains(':'), default) {
            (true, true) => format!("[{}]", self.host),
            (true, false) => format!("[{}]:{}", self.host, self.port),
            (false, true) => self.host.clone(),
            (false, false) => format!("{}:{}", self.host, self.port),
        }
    }

    /// `path` joined with a route such as `/test-groups/ID`.
    pub fn join(&self, route: &str) -> String {
        if self.path == "/" {
            route.to_owned()
        } else {
            format!("{}{}", self.path, route)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.scheme == Scheme::Http {
            "http"
        } else {
            "https"
        };
        write!(f, "{scheme}://")?;
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.path != "/" {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_conntest_is_given() {
        let u = Url::parse("http://conntest-server:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("conntest-server", 8080, "/")
        );
        assert_eq!(u.join("/test-groups/x"), "/test-groups/x");
        let u = Url::parse("https://internal.example.net").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.host_header()),
            (Scheme::Https, 443, "internal.example.net".to_owned())
        );
        let u = Url::parse("http://[::1]:9000/prefix/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/prefix")
        );
        assert_eq!(u.join("/test-groups"), "/prefix/test-groups");
        assert_eq!(u.host_header(), "[::1]:9000");
        assert_eq!(u.to_string(), "http://[::1]:9000/prefix");
        assert_eq!(Url::parse("http://h/a?b=1").unwrap().path, "/a");
        assert_eq!(Url::parse("HTTP://h:1").unwrap().scheme, Scheme::Http);
        assert_eq!(Url::parse("HttpS://h").unwrap().port, 443);
    }

    #[test]
    fn the_target_keeps_the_query_and_trailing_slash() {
        for (url, target) in [
            ("http://h:1/health/?deep=1&x=2", "/health/?deep=1&x=2"),
            ("http://h/a/b/", "/a/b/"),
            ("http://h/a#frag", "/a"),
            ("http://h?x=1", "/?x=1"),
            ("http://h", "/"),
            ("https://[::1]:9/p?q=%20#f", "/p?q=%20"),
        ] {
            assert_eq!(Url::parse(url).unwrap().target, target, "{url}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in [
            "ftp://x",
            "localhost:8080",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u:p@h",
            "http://[::1",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }
}
