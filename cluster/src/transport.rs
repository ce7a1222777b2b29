//! How members, relays and the `graunt cluster` commands reach a node's
//! HTTP port: plain `http://`, or `https://` checked against the cluster's
//! CA ([`Transport`]). Every member of a cluster uses the same one.

use std::path::Path;
use std::time::Duration;

/// Plain HTTP, or HTTPS trusting one CA bundle.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// The CA bundle (PEM) peers' certificates must chain to; none: plain HTTP.
    ca: Option<Vec<reqwest::Certificate>>,
}

impl Transport {
    /// Plain HTTP.
    pub fn plain() -> Transport {
        Transport::default()
    }

    /// HTTPS, trusting the CAs in `ca_file` (PEM).
    pub fn tls(ca_file: &Path) -> Result<Transport, String> {
        let pem = std::fs::read(ca_file)
            .map_err(|e| format!("cannot read the CA file {}: {e}", ca_file.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not PEM certificates: {e}", ca_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                ca_file.display()
            ));
        }
        Ok(Transport { ca: Some(certs) })
    }

    /// Whether calls use HTTPS.
    pub fn is_tls(&self) -> bool {
        self.ca.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The URL of `path` (starting with `/`) on the node at `addr` (`host:port`).
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme())
    }

    /// An HTTP client for these calls, giving up after `timeout`.
    pub fn client(&self, timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(certs) = &self.ca {
            builder = builder
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .https_only(true);
            for c in certs {
                builder = builder.add_root_certificate(c.clone());
            }
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_scheme() {
        assert_eq!(
            Transport::plain().url("n1:8080", "/cluster/state"),
            "http://n1:8080/cluster/state"
        );
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = Transport::tls(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
