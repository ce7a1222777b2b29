//! The cluster secret: every call between members (raft RPC, the admin API,
//! peer reads) and from relays and `graunt cluster` carries a credential
//! made from it, and a member refuses a call without a valid one with 401.
//!
//! The credential is an HMAC, never the secret: `Authorization:
//! Graunt-HMAC-SHA256 <unix seconds>:<hex>`, the HMAC-SHA256 under the
//! secret of the method, the path with its query, the time and the SHA-256
//! of the body. A
//! member accepts it within [`WINDOW`] seconds of its own clock. Without TLS
//! a listener on the wire learns neither the secret nor a way to sign
//! another call; it could only replay a captured call, unchanged (same
//! body), within the window.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Seconds a credential stays valid either side of the member's clock.
pub const WINDOW: i64 = 300;

/// The scheme in the `Authorization` header.
const SCHEME: &str = "Graunt-HMAC-SHA256";

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the cluster secret {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds too little to be a secret.
    #[error("the cluster secret in {0} is shorter than 16 bytes: write a long random string there (say `head -c 32 /dev/urandom | base64`)")]
    TooShort(String),
}

/// A cluster's shared secret.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

impl ClusterSecret {
    /// The secret in `path` (surrounding white space dropped).
    pub fn read(path: &Path) -> Result<ClusterSecret, SecretError> {
        let text = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let trimmed = text.trim_ascii();
        if trimmed.len() < 16 {
            return Err(SecretError::TooShort(path.display().to_string()));
        }
        Ok(ClusterSecret(trimmed.to_vec()))
    }

    fn mac(&self, method: &str, path: &str, at: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        let body_hash = Sha256::digest(body);
        mac.update(format!("{method} {path}\n{at}\n").as_bytes());
        mac.update(&body_hash);
        mac
    }

    /// The `Authorization` value for a call made now.
    pub fn sign(&self, method: &str, path: &str, body: &[u8]) -> String {
        let at = unix_now();
        let tag = self.mac(method, path, at, body).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("{SCHEME} {at}:{hex}")
    }

    /// Whether `header` has a credential's shape and time: checked before
    /// a body is read, so a caller without one costs nothing.
    pub fn plausible(header: &str) -> bool {
        Self::parts(header).is_some()
    }

    fn parts(header: &str) -> Option<(i64, &str)> {
        let rest = header.strip_prefix(SCHEME)?.trim_start();
        let (at, hex) = rest.split_once(':')?;
        let at = at.parse::<i64>().ok()?;
        let fresh = unix_now()
            .checked_sub(at)
            .is_some_and(|d| d.abs() <= WINDOW);
        (fresh && hex.len() == 64).then_some((at, hex))
    }

    /// Whether `header` is a valid credential for this call, now; `path` is
    /// the request target: the path and its query.
    pub fn verify(&self, header: &str, method: &str, path: &str, body: &[u8]) -> bool {
        let Some((at, hex)) = Self::parts(header) else {
            return false;
        };
        let Some(tag) = (0..32)
            .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        // Compared in constant time.
        self.mac(method, path, at, body).verify_slice(&tag).is_ok()
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Adds the credential (when there is a secret) to a call: `body` is the
/// exact body sent, empty for none.
pub fn signed(
    request: reqwest::RequestBuilder,
    secret: Option<&ClusterSecret>,
    method: &str,
    url: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    match secret {
        None => request,
        Some(s) => {
            let path = url_path(url);
            request.header("authorization", s.sign(method, path, body))
        }
    }
}

/// A POST or PUT of a JSON body, signed.
pub fn json_call<T: serde::Serialize + ?Sized>(
    client: &reqwest::Client,
    secret: Option<&ClusterSecret>,
    method: &str,
    url: &str,
    body: &T,
) -> reqwest::RequestBuilder {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let verb = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let request = client
        .request(verb, url)
        .header("content-type", "application/json");
    signed(request, secret, method, url, &bytes).body(bytes)
}

/// A GET, signed.
pub fn get(
    client: &reqwest::Client,
    secret: Option<&ClusterSecret>,
    url: &str,
) -> reqwest::RequestBuilder {
    signed(client.get(url), secret, "GET", url, b"")
}

/// The request target of `http://host:port/path?query`: `/path?query`
/// (what the server sees as the path and query; the whole of it is signed,
/// so a captured call cannot be replayed with another query).
fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let target = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    target.split('#').next().unwrap_or(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret(b"0123456789abcdef0123".to_vec())
    }

    #[test]
    fn a_signed_call_verifies_and_any_change_does_not() {
        let s = secret();
        let h = s.sign("POST", "/cluster/join", b"{}");
        assert!(s.verify(&h, "POST", "/cluster/join", b"{}"));
        assert!(
            !s.verify(&h, "POST", "/cluster/join", b"{\"id\":9}"),
            "another body"
        );
        assert!(
            !s.verify(&h, "POST", "/cluster/leave", b"{}"),
            "another path"
        );
        assert!(
            !s.verify(&h, "PUT", "/cluster/join", b"{}"),
            "another method"
        );
        let other = ClusterSecret(b"another secret, long enough".to_vec());
        assert!(
            !other.verify(&h, "POST", "/cluster/join", b"{}"),
            "another secret"
        );
        let old = format!("{SCHEME} {}:{}", unix_now() - 301, &h[h.len() - 64..]);
        assert!(
            !s.verify(&old, "POST", "/cluster/join", b"{}"),
            "out of the window"
        );
        assert!(!s.verify("Bearer x", "POST", "/cluster/join", b"{}"));
        assert!(!s.verify(&format!("{SCHEME} 1:zz"), "GET", "/", b""));
    }

    #[test]
    fn the_url_path_is_what_is_signed() {
        assert_eq!(
            url_path("http://a:1/cluster/find?query=x"),
            "/cluster/find?query=x"
        );
        let s = secret();
        let h = s.sign("GET", "/cluster/find?query=a.*", b"");
        assert!(s.verify(&h, "GET", "/cluster/find?query=a.*", b""));
        assert!(
            !s.verify(&h, "GET", "/cluster/find?query=**", b""),
            "another query"
        );
        assert!(!ClusterSecret::plausible(&format!(
            "{SCHEME} {}:{}",
            i64::MIN,
            "0".repeat(64)
        )));
        assert_eq!(url_path("http://a:1"), "/");
    }
}
