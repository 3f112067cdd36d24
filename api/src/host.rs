//! `WHALE_HOST`: the address whaled listens on and whale talks to, parsed by one function for
//! both binaries, with the rules of Ollama's `OLLAMA_HOST` (`envconfig.Host`):
//!
//! | value                              | scheme  | host          | port    | path     |
//! |------------------------------------|---------|---------------|---------|----------|
//! | *(unset or empty)*                 | `http`  | `127.0.0.1`   | `11434` |          |
//! | `0.0.0.0`, `gpu-box.lan`           | `http`  | as given      | `11434` |          |
//! | `127.0.0.1:8080`                   | `http`  | `127.0.0.1`   | `8080`  |          |
//! | `:8080`                            | `http`  | `127.0.0.1`   | `8080`  |          |
//! | `[::1]:7000`, `[::1]`, `::1`       | `http`  | `::1`         | as given, else `11434` | |
//! | `http://example.com`               | `http`  | `example.com` | `80`    |          |
//! | `https://example.com`              | `https` | `example.com` | `443`   |          |
//! | `https://example.com:8443/whale/`  | `https` | `example.com` | `8443`  | `/whale` |
//!
//! Spaces and quotes around the value are ignored. A path is kept as the base path of every
//! request (behind a reverse proxy). Two differences from Ollama, both so that a typo is not
//! silently replaced by a default: a port that is not a number up to 65535 and a scheme other
//! than `http`/`https` are errors; and `:port` means loopback, never every interface.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::Error;

/// Environment variable naming the address (like `OLLAMA_HOST`).
pub const WHALE_HOST: &str = "WHALE_HOST";
/// Environment variable holding whaled's API key: whaled requires it of every request when set,
/// and whale sends it (the first, when it lists several separated by commas).
pub const WHALE_API_KEY: &str = "WHALE_API_KEY";
/// The address when `WHALE_HOST` is unset or empty: loopback, Ollama's port, so Ollama's clients
/// find whaled.
pub const DEFAULT_HOST: &str = "127.0.0.1:11434";
/// The port of an address that names none and no scheme.
pub const DEFAULT_PORT: u16 = 11434;
/// The host of an address that names none (`:8080`).
const DEFAULT_ADDRESS: &str = "127.0.0.1";

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// A parsed `WHALE_HOST`. `Display` gives `host:port` (what messages show); [`Host::url`] the
/// base URL a client sends requests to; [`Host::socket_addr`] the address a server binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    scheme: Scheme,
    /// A name or an IP address, IPv6 without brackets.
    name: String,
    port: u16,
    /// `""` or a path starting with `/`, without a trailing `/`.
    path: String,
}

impl Host {
    /// A plain `http` address.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            scheme: Scheme::Http,
            name: host.into(),
            port,
            path: String::new(),
        }
    }

    /// Parses a `WHALE_HOST` value (see the module documentation for the forms).
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidAddress {
            address: text.to_owned(),
            reason,
        };
        let value = text.trim().trim_matches(['"', '\'']).trim();
        let (scheme, rest, default_port) = match value.split_once("://") {
            None => (Scheme::Http, value, DEFAULT_PORT),
            Some((scheme, rest)) => {
                let scheme = match scheme.to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    other => return Err(invalid(format!("unsupported scheme {other:?}"))),
                };
                (scheme, rest, scheme.default_port())
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority);
        let port = match port {
            None => default_port,
            Some(port) => port.parse::<u16>().map_err(|_| {
                invalid(format!(
                    "invalid port {port:?}: expected a number from 0 to 65535"
                ))
            })?,
        };
        let host = if host.is_empty() {
            DEFAULT_ADDRESS
        } else {
            host
        };
        if host.contains(['/', '@', '?', '#', '[', ']', ' ']) {
            return Err(invalid(format!("invalid host {host:?}")));
        }
        Ok(Self {
            scheme,
            name: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    /// `$WHALE_HOST`, or [`DEFAULT_HOST`] when it is unset or empty.
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(&std::env::var(WHALE_HOST).unwrap_or_default())
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base path, `""` or `/…` without a trailing slash.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The base URL requests go to: `http://127.0.0.1:11434`, `https://example.com:443/whale`.
    pub fn url(&self) -> String {
        format!("{}://{self}{}", self.scheme.as_str(), self.path)
    }

    /// The address a server listens on: an IP address as it is, `localhost` as 127.0.0.1, a
    /// name as the system resolves it.
    pub fn socket_addr(&self) -> Result<SocketAddr, Error> {
        if let Ok(ip) = self.name.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        if self.name.eq_ignore_ascii_case("localhost") {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port));
        }
        let invalid = |reason: String| Error::InvalidAddress {
            address: self.to_string(),
            reason,
        };
        (self.name.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| invalid(format!("cannot resolve {:?}: {error}", self.name)))?
            .next()
            .ok_or_else(|| invalid(format!("{:?} resolves to no address", self.name)))
    }

    /// Whether the address is on this machine: loopback, `localhost`, or an unspecified address
    /// (`0.0.0.0`, `::`), which a client reaches on loopback.
    pub fn is_local(&self) -> bool {
        let host = self.name.to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        host.parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
    }
}

/// Go's `net.SplitHostPort`, falling back (as `envconfig.Host` does) to the whole authority as
/// the host when there is no port: `host:port`, `[v6]:port`, `:port`; `host`, `[v6]`, `v6`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(inner) = authority.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.split_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((_, port)) if port.contains(':') => (authority, None),
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

impl fmt::Display for Host {
    /// `host:port`, with an IPv6 address in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.contains(':') {
            write!(f, "[{}]:{}", self.name, self.port)
        } else {
            write!(f, "{}:{}", self.name, self.port)
        }
    }
}

impl FromStr for Host {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse(text)
    }
}

impl Default for Host {
    fn default() -> Self {
        Self::new(DEFAULT_ADDRESS, DEFAULT_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What whale (the client's base URL) and whaled (the address it binds) make of each form.
    #[test]
    fn parses_every_form_as_ollama_host_does() {
        let table = [
            // (value, base URL, listen address or None for a name)
            ("", "http://127.0.0.1:11434", Some("127.0.0.1:11434")),
            (
                "  \"127.0.0.1:8080\" ",
                "http://127.0.0.1:8080",
                Some("127.0.0.1:8080"),
            ),
            ("'0.0.0.0'", "http://0.0.0.0:11434", Some("0.0.0.0:11434")),
            (":9000", "http://127.0.0.1:9000", Some("127.0.0.1:9000")),
            (
                "127.0.0.1",
                "http://127.0.0.1:11434",
                Some("127.0.0.1:11434"),
            ),
            (
                "localhost:1234",
                "http://localhost:1234",
                Some("127.0.0.1:1234"),
            ),
            (
                "LOCALHOST",
                "http://LOCALHOST:11434",
                Some("127.0.0.1:11434"),
            ),
            ("gpu-box.lan:11434", "http://gpu-box.lan:11434", None),
            ("example.com", "http://example.com:11434", None),
            ("[::1]:7000", "http://[::1]:7000", Some("[::1]:7000")),
            ("[::1]", "http://[::1]:11434", Some("[::1]:11434")),
            ("::1", "http://[::1]:11434", Some("[::1]:11434")),
            ("::", "http://[::]:11434", Some("[::]:11434")),
            ("http://example.com", "http://example.com:80", None),
            (
                "HTTP://127.0.0.1",
                "http://127.0.0.1:80",
                Some("127.0.0.1:80"),
            ),
            ("https://example.com", "https://example.com:443", None),
            (
                "http://127.0.0.1:9000/",
                "http://127.0.0.1:9000",
                Some("127.0.0.1:9000"),
            ),
            (
                "https://example.com:8443/whale/",
                "https://example.com:8443/whale",
                None,
            ),
            (
                "http://example.com:1234/ollama",
                "http://example.com:1234/ollama",
                None,
            ),
            (
                "http://[::1]:5000/api",
                "http://[::1]:5000/api",
                Some("[::1]:5000"),
            ),
            (
                "http://:7000",
                "http://127.0.0.1:7000",
                Some("127.0.0.1:7000"),
            ),
        ];
        for (value, url, listen) in table {
            let host = Host::parse(value).unwrap_or_else(|error| panic!("{value:?}: {error}"));
            assert_eq!(host.url(), url, "{value:?}");
            if let Some(listen) = listen {
                assert_eq!(host.socket_addr().unwrap().to_string(), listen, "{value:?}");
            }
        }
        let https = Host::parse("https://models.example.com/v").unwrap();
        assert_eq!(
            (https.scheme(), https.host(), https.port(), https.path()),
            (Scheme::Https, "models.example.com", 443, "/v")
        );
        assert_eq!(Host::parse("[::1]:7000").unwrap().to_string(), "[::1]:7000");
        assert_eq!(Host::default(), Host::parse(DEFAULT_HOST).unwrap());
        assert_eq!("gpu-box.lan".parse::<Host>().unwrap().port(), DEFAULT_PORT);
    }

    #[test]
    fn typos_are_errors_that_name_the_value() {
        for (value, reason) in [
            ("ftp://x", "unsupported scheme \"ftp\""),
            ("host:port", "invalid port \"port\""),
            ("localhost:notaport", "invalid port \"notaport\""),
            ("nonsense:port", "invalid port \"port\""),
            ("host:99999", "invalid port \"99999\""),
            ("[::1]:x", "invalid port \"x\""),
            ("user@host:1", "invalid host \"user@host\""),
        ] {
            let error = Host::parse(value).unwrap_err().to_string();
            assert!(
                error.contains(reason) && error.contains(value),
                "{value:?}: {error}"
            );
        }
    }

    #[test]
    fn locality() {
        for local in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "LOCALHOST",
            "api.localhost",
            "::1",
            "0.0.0.0",
            "::",
        ] {
            assert!(Host::new(local, 1).is_local(), "{local}");
        }
        for remote in [
            "10.0.0.5",
            "192.168.1.2",
            "gpu-box.lan",
            "example.com",
            "fe80::1",
        ] {
            assert!(!Host::new(remote, 1).is_local(), "{remote}");
        }
    }
}
