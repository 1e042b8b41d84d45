//! The HTTP client of one sink, built from its `[sinks.network]` table: which certificate
//! authorities it trusts, the client certificate it presents (mutual TLS), its proxy and
//! its connect timeout. One client per sink, so a city's private CA or proxy for one
//! vendor never applies to another.
//!
//! Proxies come only from the configuration: `HTTP_PROXY`/`HTTPS_PROXY` in the environment
//! are ignored unless the sink says `proxy = "env"`.

use crate::secret::{SecretError, SecretRef};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[sinks.network]`: how one sink reaches its vendor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// PEM file of certificate authorities trusted for the vendor's HTTPS (a city's private
    /// CA), relative to the config file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Whether the bundled public web roots stay trusted besides `ca_file`.
    #[serde(default = "default_true")]
    pub public_roots: bool,
    /// PEM certificate chain presented to vendors that require mutual TLS.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The PEM private key of `client_cert_file` (`{ file = "..." }` or `{ env = "..." }`).
    #[serde(default)]
    pub client_key: Option<SecretRef>,
    /// `"none"` (direct), `"env"` (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) or a proxy URL.
    #[serde(default = "default_proxy")]
    pub proxy: String,
    /// Longest wait for a TCP connection and TLS handshake, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            ca_file: None,
            public_roots: true,
            client_cert_file: None,
            client_key: None,
            proxy: default_proxy(),
            connect_timeout_ms: default_connect_timeout_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_proxy() -> String {
    "none".into()
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}

/// Why a sink's HTTP client cannot be built. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A certificate file could not be read.
    #[error("cannot read {key} {path}: {source}")]
    Read {
        /// `ca_file` or `client_cert_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The client key could not be resolved.
    #[error("client_key: {0}")]
    Key(#[from] SecretError),
    /// A file is not the PEM it should be, or the proxy is not a URL.
    #[error("{key}: {message}")]
    Invalid {
        /// The key at fault.
        key: &'static str,
        /// What is wrong (from the TLS library, never the file's content).
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> NetworkError {
    NetworkError::Invalid { key, message: message.into() }
}

impl NetworkConfig {
    /// Checks what can be checked without reading files.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if self.client_cert_file.is_some() != self.client_key.is_some() {
            return Err(invalid("client_cert_file", "client_cert_file and client_key go together"));
        }
        if !self.public_roots && self.ca_file.is_none() {
            return Err(invalid("public_roots", "false needs a ca_file, or nothing is trusted"));
        }
        if self.connect_timeout_ms == 0 {
            return Err(invalid("connect_timeout_ms", "must be at least 1"));
        }
        self.proxy_setting().map(drop)
    }

    fn proxy_setting(&self) -> Result<Proxy, NetworkError> {
        match self.proxy.as_str() {
            "none" => Ok(Proxy::None),
            "env" => Ok(Proxy::Env),
            url => {
                let hint = "write \"none\", \"env\" or a proxy URL like http://proxy:3128";
                let scheme = url.split_once("://").map(|(s, _)| s);
                if !matches!(scheme, Some("http" | "https")) {
                    return Err(invalid("proxy", hint));
                }
                reqwest::Proxy::all(url).map(|p| Proxy::Url(Box::new(p))).map_err(|_| invalid("proxy", hint))
            }
        }
    }

    /// A client for this sink; files are read relative to `base`.
    pub fn client(&self, base: &Path) -> Result<reqwest::Client, NetworkError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("lotbridge/", env!("CARGO_PKG_VERSION")))
            .tls_built_in_root_certs(self.public_roots);
        builder = match self.proxy_setting()? {
            Proxy::None => builder.no_proxy(),
            Proxy::Env => builder,
            Proxy::Url(proxy) => builder.proxy(*proxy),
        };
        if let Some(path) = &self.ca_file {
            let pem = read(base, path, "ca_file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| invalid("ca_file", e.to_string()))?;
            if certs.is_empty() {
                return Err(invalid("ca_file", format!("{} holds no PEM certificate", path.display())));
            }
            builder = certs.into_iter().fold(builder, |b, cert| b.add_root_certificate(cert));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key) {
            let mut pem = read(base, cert, "client_cert_file")?;
            pem.push(b'\n');
            pem.extend_from_slice(key.resolve(base)?.expose().as_bytes());
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| invalid("client_key", e.to_string()))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|e| invalid("network", e.to_string()))
    }

    /// The settings in config words, for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = format!("proxy={} connect_timeout_ms={}", without_userinfo(&self.proxy), self.connect_timeout_ms);
        if let Some(ca) = &self.ca_file {
            out.push_str(&format!(" ca_file={} public_roots={}", ca.display(), self.public_roots));
        }
        if let Some(cert) = &self.client_cert_file {
            out.push_str(&format!(" client_cert_file={} client_key=***", cert.display()));
        }
        out
    }
}

/// A proxy URL with its `user:password@` part shown as `***@`.
fn without_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_string(),
    }
}

enum Proxy {
    None,
    Env,
    Url(Box<reqwest::Proxy>),
}

fn read(base: &Path, path: &Path, key: &'static str) -> Result<Vec<u8>, NetworkError> {
    let full = base.join(path);
    std::fs::read(&full).map_err(|source| NetworkError::Read { key, path: full, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> NetworkConfig {
        toml::from_str(text).expect("network table")
    }

    #[test]
    fn defaults_are_direct_with_public_roots() {
        let n = parse("");
        assert_eq!(n, NetworkConfig::default());
        assert_eq!((n.proxy.as_str(), n.public_roots, n.connect_timeout_ms), ("none", true, 5_000));
        n.validate().unwrap();
        n.client(Path::new(".")).unwrap();
    }

    #[test]
    fn mistakes_are_named_without_key_material() {
        let half = parse("client_cert_file = \"c.pem\"");
        assert!(half.validate().unwrap_err().to_string().contains("client_key"));
        let nothing_trusted = parse("public_roots = false");
        assert!(nothing_trusted.validate().unwrap_err().to_string().contains("ca_file"));
        let bad_proxy = parse("proxy = \"proxy.example\"");
        assert!(bad_proxy.validate().unwrap_err().to_string().contains("proxy"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let garbage = parse("ca_file = \"ca.pem\"").client(dir.path()).unwrap_err().to_string();
        assert!(garbage.contains("ca_file") && !garbage.contains("not a certificate"), "{garbage}");
        std::fs::write(dir.path().join("c.pem"), "x").unwrap();
        std::fs::write(dir.path().join("k.pem"), "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
            .unwrap();
        let mtls = parse("client_cert_file = \"c.pem\"\nclient_key = { file = \"k.pem\" }");
        let err = mtls.client(dir.path()).unwrap_err().to_string();
        assert!(err.contains("client_key") && !err.contains("c2VjcmV0"), "{err}");
        let missing = parse("ca_file = \"nowhere.pem\"").client(dir.path()).unwrap_err().to_string();
        assert!(missing.contains("nowhere.pem"), "{missing}");
    }

    #[test]
    fn an_explicit_proxy_is_accepted() {
        let n = parse("proxy = \"http://127.0.0.1:3128\"");
        n.validate().unwrap();
        assert!(n.summary().contains("proxy=http://127.0.0.1:3128"));
        let with_password = parse("proxy = \"http://me:pa55@127.0.0.1:3128\"");
        assert!(with_password.summary().contains("proxy=http://***@127.0.0.1:3128"), "{}", with_password.summary());
    }
}
