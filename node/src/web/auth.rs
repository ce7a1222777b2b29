//! Who may read: optional users on the read API and the UI, and CORS for
//! browsers on other origins (Grafana). With no `[[user]]` configured the
//! API is open, as graphite-web's is. A user logs in with HTTP Basic (a
//! `password_hash`: an argon2 PHC string, `graunt passwd` prints one) or
//! `Authorization: Bearer <token>`; a user with `namespaces` is a tenant and
//! every read sees only series under them ([`graunt_query::source::Fenced`]).
//! With `[ldap]`, a Basic login that is no local user's binds to the
//! directory as that user (and must be in `required_group`), as the nginx
//! LDAP module in front of graphite-web did, over `ldaps://` or StartTLS
//! when configured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// A `[[user]]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// Login name.
    pub name: String,
    /// argon2 PHC string of the password (`graunt passwd`) [none: no Basic login].
    pub password_hash: Option<String>,
    /// A bearer token [none].
    pub token: Option<String>,
    /// Name prefixes this user may read (`cust.acme.`) [none: every series].
    pub namespaces: Option<Vec<String>>,
}

/// The `[ldap]` table: how a Basic login is checked against a directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapFile {
    /// `ldap://host:port` or `ldaps://host:port` of the directory.
    pub url: String,
    /// The user's DN, `{user}` standing for the login name
    /// (`uid={user},ou=people,dc=example,dc=com`).
    pub user_dn: String,
    /// A group (`groupOfNames` / `groupOfUniqueNames` / `posixGroup` DN) the
    /// user must be in [none: any user the directory knows].
    pub required_group: Option<String>,
    /// Name prefixes directory users may read [none: every series].
    pub namespaces: Option<Vec<String>>,
    /// Seconds a directory answer waits [5].
    pub timeout: Option<u64>,
    /// Upgrade an `ldap://` connection with StartTLS before binding [false].
    pub starttls: Option<bool>,
    /// CA bundle (PEM) the directory's certificate must chain to, for
    /// `ldaps://` and StartTLS [the system's CAs].
    pub ca_file: Option<std::path::PathBuf>,
}

/// Who a request comes from.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The user, when users are configured.
    pub user: Option<String>,
    /// Prefixes the user may read; `None` for every series.
    pub namespaces: Option<Vec<String>>,
}

/// Seconds a verified password is remembered (argon2 costs tens of
/// milliseconds by design; Grafana sends the password with every request).
const CACHE_SECONDS: u64 = 60;

/// The users and CORS settings, shared by the middleware.
#[derive(Debug, Default)]
pub struct Auth {
    users: Vec<UserFile>,
    cors_origins: Vec<String>,
    /// Verified Basic credentials: hash of the header value → (user index, when).
    verified: Mutex<HashMap<[u8; 32], (usize, Instant)>>,
    ldap: Option<LdapFile>,
    /// TLS to the directory with a configured CA.
    ldap_tls: Option<Arc<graunt_relay::tls::TlsClient>>,
    /// Directory logins verified: hash of the header value → (user, when).
    ldap_verified: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Auth {
    /// Checks the users: a unique name and a credential each, hashes that
    /// parse.
    pub fn new(
        users: Vec<UserFile>,
        cors_origins: Vec<String>,
        ldap: Option<LdapFile>,
    ) -> Result<Auth, String> {
        let mut ldap_tls = None;
        if let Some(l) = &ldap {
            let ldaps = l.url.starts_with("ldaps://");
            if !ldaps && !l.url.starts_with("ldap://") {
                return Err(format!(
                    "ldap url {:?}: use ldap://host:port or ldaps://host:port",
                    l.url
                ));
            }
            if ldaps && l.starttls == Some(true) {
                return Err(
                    "ldap: starttls is for ldap:// URLs; ldaps:// is TLS from the start".into(),
                );
            }
            if !l.user_dn.contains("{user}") {
                return Err("ldap user_dn needs {user} where the login name goes".into());
            }
            if let Some(ca) = &l.ca_file {
                let files = graunt_relay::tls::ClientFiles {
                    ca_file: ca.clone(),
                    ..Default::default()
                };
                ldap_tls = Some(
                    graunt_relay::tls::TlsClient::load(&files)
                        .map_err(|e| format!("ldap ca_file: {e}"))?,
                );
            }
        }
        for (i, u) in users.iter().enumerate() {
            if users[..i].iter().any(|o| o.name == u.name) {
                return Err(format!("user {:?} is listed twice", u.name));
            }
            if u.password_hash.is_none() && u.token.is_none() {
                return Err(format!(
                    "user {:?} has neither password_hash nor token",
                    u.name
                ));
            }
            if let Some(h) = &u.password_hash {
                argon2::PasswordHash::new(h).map_err(|e| {
                    format!("user {:?}: password_hash is not a PHC string ({e}): make one with `graunt passwd`", u.name)
                })?;
            }
            if u.token.as_ref().is_some_and(|t| t.len() < 16) {
                return Err(format!(
                    "user {:?}: a token needs 16 characters or more",
                    u.name
                ));
            }
        }
        Ok(Auth {
            users,
            cors_origins,
            verified: Mutex::new(HashMap::new()),
            ldap,
            ldap_tls,
            ldap_verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether logins are required.
    pub fn required(&self) -> bool {
        !self.users.is_empty() || self.ldap.is_some()
    }

    /// A Basic login checked against the directory: a bind as the user,
    /// then the group, remembered for [`CACHE_SECONDS`].
    pub async fn ldap_login(&self, headers: &HeaderMap) -> Option<Identity> {
        let ldap = self.ldap.as_ref()?;
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credential) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        let identity = |user: String| Identity {
            user: Some(user),
            namespaces: ldap.namespaces.clone(),
        };
        {
            let mut cache = self.ldap_verified.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(CACHE_SECONDS));
            if let Some((user, _)) = cache.get(&key) {
                return Some(identity(user.clone()));
            }
        }
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        // An empty password is an anonymous bind, which directories accept.
        if name.is_empty() || password.is_empty() {
            return None;
        }
        // A local user's name is never looked up in the directory: a wrong
        // local password stays wrong.
        if self.users.iter().any(|u| u.name == name) {
            return None;
        }
        let timeout = Duration::from_secs(ldap.timeout.unwrap_or(5));
        let checked = tokio::time::timeout(
            timeout,
            ldap_check(ldap, self.ldap_tls.as_deref(), name, password),
        )
        .await;
        match checked {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(user = name, error = %e, "LDAP login failed");
                return None;
            }
            Err(_) => {
                tracing::warn!(user = name, "LDAP did not answer in time");
                return None;
            }
        }
        let mut cache = self.ldap_verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() < 10_000 {
            cache.insert(key, (name.to_string(), Instant::now()));
        }
        Some(identity(name.to_string()))
    }

    fn identity(&self, i: usize) -> Identity {
        let u = &self.users[i];
        Identity {
            user: Some(u.name.clone()),
            namespaces: u.namespaces.clone(),
        }
    }

    /// The identity of a request's credentials; `None` when they are
    /// missing or wrong.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<Identity> {
        if !self.required() {
            return Some(Identity::default());
        }
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credential) = value.split_once(' ')?;
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let i = self.users.iter().position(|u| {
                u.token
                    .as_deref()
                    .is_some_and(|t| constant_time_eq(t.as_bytes(), credential.as_bytes()))
            })?;
            return Some(self.identity(i));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        {
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(CACHE_SECONDS));
            if let Some((i, _)) = cache.get(&key) {
                return Some(self.identity(*i));
            }
        }
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credential)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (name, password) = text.split_once(':')?;
        let i = self.users.iter().position(|u| u.name == name)?;
        let hash = argon2::PasswordHash::new(self.users[i].password_hash.as_deref()?).ok()?;
        use argon2::PasswordVerifier;
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()?;
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() < 10_000 {
            cache.insert(key, (i, Instant::now()));
        }
        Some(self.identity(i))
    }

    /// The CORS answer for a request's `Origin`: a listed origin is echoed
    /// with credentials allowed; under `"*"` any other origin gets `*`,
    /// without credentials (a page elsewhere must not read with the
    /// browser's stored login).
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<(HeaderValue, bool)> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        if self.cors_origins.iter().any(|o| o == text) {
            return Some((origin.clone(), true));
        }
        self.cors_origins
            .iter()
            .any(|o| o == "*")
            .then(|| (HeaderValue::from_static("*"), false))
    }
}

/// Binds as the user and checks the group: `Ok(false)` for a wrong
/// password or a user outside the group, `Err` when the directory cannot be
/// asked.
async fn ldap_check(
    ldap: &LdapFile,
    tls: Option<&graunt_relay::tls::TlsClient>,
    name: &str,
    password: &str,
) -> Result<bool, ldap3::LdapError> {
    let mut settings = ldap3::LdapConnSettings::new().set_starttls(ldap.starttls.unwrap_or(false));
    if let Some(tls) = tls {
        settings = settings.set_config(tls.config());
    }
    let (conn, mut client) = ldap3::LdapConnAsync::with_settings(settings, &ldap.url).await?;
    ldap3::drive!(conn);
    let dn = ldap.user_dn.replace("{user}", &ldap3::dn_escape(name));
    let bound = client.simple_bind(&dn, password).await?.success().is_ok();
    if !bound {
        let _ = client.unbind().await;
        return Ok(false);
    }
    let member = match &ldap.required_group {
        None => true,
        Some(group) => {
            let filter = format!(
                "(|(member={dn})(uniqueMember={dn})(memberUid={user}))",
                dn = ldap3::ldap_escape(&dn),
                user = ldap3::ldap_escape(name)
            );
            let (entries, _) = client
                .search(group, ldap3::Scope::Base, &filter, vec!["1.1"])
                .await?
                .success()?;
            !entries.is_empty()
        }
    };
    let _ = client.unbind().await;
    Ok(member)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An argon2 PHC string of `password` (`graunt passwd`).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The middleware: answers CORS preflights for allowed origins, refuses a
/// request without valid credentials (401 with a Basic challenge, so a
/// browser shows its login), and hands the identity to the handlers.
pub async fn guard(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let origin = auth.allowed_origin(request.headers());
    if request.method() == Method::OPTIONS {
        if let Some(origin) = origin {
            return cors(StatusCode::NO_CONTENT.into_response(), origin, true);
        }
    }
    let identity = match auth.authenticate(request.headers()) {
        Some(id) => Some(id),
        None => auth.ldap_login(request.headers()).await,
    };
    let Some(identity) = identity else {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            "graunt: log in with HTTP Basic or Authorization: Bearer <token>",
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"graunt\", charset=\"UTF-8\""),
        );
        return match origin {
            Some(o) => cors(response, o, false),
            None => response,
        };
    };
    request.extensions_mut().insert(identity);
    let response = next.run(request).await;
    match origin {
        Some(o) => cors(response, o, false),
        None => response,
    }
}

/// Adds the CORS headers Grafana's browser mode needs.
fn cors(
    mut response: Response,
    (origin, credentials): (HeaderValue, bool),
    preflight: bool,
) -> Response {
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "Authorization, Content-Type, X-Grafana-Org-Id, X-Dashboard-Id, X-Panel-Id",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        use base64::Engine;
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    }

    #[test]
    fn basic_and_bearer_logins() {
        let auth = Auth::new(
            vec![UserFile {
                name: "ops".into(),
                password_hash: Some(hash_password("s3cret").unwrap()),
                token: Some("a-token-long-enough".into()),
                namespaces: Some(vec!["cust.acme.".into()]),
            }],
            vec![],
            None,
        )
        .unwrap();
        let id = auth.authenticate(&basic("ops", "s3cret")).unwrap();
        assert_eq!(id.namespaces, Some(vec!["cust.acme.".to_string()]));
        assert!(
            auth.authenticate(&basic("ops", "s3cret")).is_some(),
            "cached"
        );
        assert!(auth.authenticate(&basic("ops", "wrong")).is_none());
        assert!(auth.authenticate(&basic("nobody", "s3cret")).is_none());
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer a-token-long-enough".parse().unwrap(),
        );
        assert!(auth.authenticate(&h).is_some());
        h.insert(
            header::AUTHORIZATION,
            "Bearer a-token-long-enougX".parse().unwrap(),
        );
        assert!(auth.authenticate(&h).is_none());
        assert!(auth.authenticate(&HeaderMap::new()).is_none());
        assert!(Auth::new(vec![], vec![], None)
            .unwrap()
            .authenticate(&HeaderMap::new())
            .is_some());
    }

    #[test]
    fn bad_users_are_refused_at_start() {
        let u = |hash: Option<&str>, token: Option<&str>| UserFile {
            name: "a".into(),
            password_hash: hash.map(str::to_string),
            token: token.map(str::to_string),
            namespaces: None,
        };
        assert!(Auth::new(vec![u(None, None)], vec![], None).is_err());
        assert!(Auth::new(vec![u(Some("plain"), None)], vec![], None).is_err());
        assert!(Auth::new(vec![u(None, Some("short"))], vec![], None).is_err());
    }
}
