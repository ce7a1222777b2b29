//! Users on the read API: Basic and Bearer logins, 401 without them, CORS
//! preflight as Grafana's browser sends it, and a tenant token that sees
//! nothing outside its namespaces, whatever the request asks.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use graunt_harness::node::{wait_for, Node};
use graunt_harness::{temp_dir, unix_now, url_encode};

const OPS_TOKEN: &str = "ops-token-0123456789";
const ACME_TOKEN: &str = "acme-token-0123456789";

fn start(dir: &std::path::Path) -> Node {
    let hash = graunt::web::auth::hash_password("ops password").unwrap();
    let config = dir.join("graunt.toml");
    std::fs::write(
        &config,
        format!(
            "cors_origins = [\"https://grafana.example.com\"]\n\
             [[user]]\nname = \"ops\"\npassword_hash = \"{hash}\"\ntoken = \"{OPS_TOKEN}\"\n\
             [[user]]\nname = \"acme\"\ntoken = \"{ACME_TOKEN}\"\nnamespaces = [\"cust.acme.\"]\n"
        ),
    )
    .unwrap();
    Node::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

fn get(node: &Node, path: &str, auth: Option<&str>) -> (u16, Vec<(String, String)>, String) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let (code, h, body) = node.http_raw("GET", path, None, &headers);
    (code, h, String::from_utf8_lossy(&body).into_owned())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn logins_are_needed_and_basic_bearer_and_cors_work() {
    let dir = temp_dir();
    let node = start(dir.path());
    let (code, headers, _) = get(&node, "/metrics/find?query=*", None);
    assert_eq!(code, 401);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic")));
    assert_eq!(get(&node, "/", None).0, 401, "the UI asks for a login");
    assert_eq!(
        get(&node, "/version", None).0,
        200,
        "Grafana's probe stays open"
    );
    use base64::Engine;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    assert_eq!(
        get(
            &node,
            "/metrics/find?query=*",
            Some(&basic("ops", "ops password"))
        )
        .0,
        200
    );
    assert_eq!(
        get(&node, "/metrics/find?query=*", Some(&basic("ops", "nope"))).0,
        401
    );
    assert_eq!(
        get(&node, "/metrics/find?query=*", Some(&bearer(OPS_TOKEN))).0,
        200
    );
    assert_eq!(
        get(
            &node,
            "/metrics/find?query=*",
            Some(&bearer("forged-token-0123456789"))
        )
        .0,
        401
    );

    // Grafana's browser mode: a preflight, then the request with credentials.
    let (code, headers, _) = node.http_raw(
        "OPTIONS",
        "/render",
        None,
        &[
            ("Origin", "https://grafana.example.com"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
    );
    assert_eq!(code, 204);
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("https://grafana.example.com")
    );
    assert!(h("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    assert!(h("access-control-allow-methods").unwrap().contains("POST"));
    let (_, headers, _) = node.http_raw(
        "GET",
        "/metrics/find?query=*",
        None,
        &[
            ("Origin", "https://evil.example.com"),
            ("Authorization", &bearer(OPS_TOKEN)),
        ],
    );
    assert!(!headers
        .iter()
        .any(|(k, _)| k == "access-control-allow-origin"));
    node.stop(Duration::from_secs(20));

    // `"*"` lets any page read, but never with the browser's stored login.
    let dir = temp_dir();
    let config = dir.path().join("graunt.toml");
    std::fs::write(&config, "cors_origins = [\"*\"]\n").unwrap();
    let open = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (_, headers, _) = open.http_raw(
        "GET",
        "/metrics/find?query=*",
        None,
        &[("Origin", "https://anywhere.example.com")],
    );
    let h = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(h("access-control-allow-credentials"), None);
    open.stop(Duration::from_secs(20));
}

#[test]
fn a_tenant_sees_nothing_outside_its_namespaces() {
    let dir = temp_dir();
    let node = start(dir.path());
    let t = unix_now() - 120;
    let lines = format!(
        "cust.acme.web.load 1 {t}\ncust.acme.db.cpu 2 {t}\ncust.acmex.web.load 55555.5 {t}\n\
         cust.other.web.load 31337.25 {t}\nsecret.key.x 42424.75 {t}\n"
    );
    TcpStream::connect(node.addr("line"))
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let ops = bearer(OPS_TOKEN);
    wait_for(Duration::from_secs(10), "every metric", || {
        let (_, _, body) = get(&node, "/metrics/index.json", Some(&ops));
        (body.matches('"').count() >= 10).then_some(())
    });
    let acme = bearer(ACME_TOKEN);
    let range = format!("&from={}&until={}", t - 60, t + 60);
    let r = |target: &str| format!("/render?target={}{range}&format=json", url_encode(target));
    let requests: Vec<String> = vec![
        "/metrics/find?query=*".into(),
        "/metrics/find?query=cust.*".into(),
        "/metrics/find?query=cust.other.*".into(),
        "/metrics/find?query=*.*.*".into(),
        "/metrics/find?query=*.*.*.*".into(),
        format!("/metrics/find?query={}", url_encode("{cust,secret}.*")),
        "/metrics/find?query=cust.acme*".into(),
        "/metrics/find?query=sec&format=completer".into(),
        "/metrics/find?query=*&format=json".into(),
        "/metrics/expand?query=*.*.*".into(),
        "/metrics/expand?query=cust.other.web.load".into(),
        "/metrics/expand?query=*&groupByExpr=1".into(),
        "/metrics/index.json".into(),
        r("cust.other.web.load"),
        r("*.*.*"),
        r("*.*.*.*"),
        r("sumSeries(*.*.*.*)"),
        r("sumSeries(cust.{acme,acmex,other}.web.load)"),
        r("secret.key.x"),
        r("template(cust.$x.web.load, x=\"other\")"),
        format!("{}&template[x]=other", r("template(cust.$x.web.load)")),
        r("asPercent(cust.acme.web.load,cust.other.web.load)"),
        r("divideSeries(cust.acme.web.load,secret.key.x)"),
        r("aliasByNode(*.*.*.*,1)"),
        r("highestMax(*.*.*,10)"),
        r("group(cust.*.web.load,secret.*.*)"),
        r("nosuchfunction(secret.key.x)"),
        format!("/render?target={}{range}&format=csv", url_encode("*.*.*.*")),
        format!(
            "/render?target={}{range}&format=raw",
            url_encode("cust.*.*.*")
        ),
    ];
    assert!(requests.len() >= 20);
    for path in &requests {
        let (code, _, body) = get(&node, path, Some(&acme));
        assert!(code == 200 || code == 400, "{path}: {code} {body}");
        // A name the request itself spelled out may be echoed (in a series
        // name or an error); anything else of another tenant, or any of its
        // values, may not.
        for leak in ["other", "acmex", "secret"] {
            let asked = path.contains(leak);
            assert!(
                asked || !body.contains(leak),
                "{path} shows {leak:?} to the tenant ({code}): {body}"
            );
        }
        for value in ["55555.5", "31337.25", "42424.75"] {
            assert!(!body.contains(value), "{path}: {body}");
        }
    }
    // What is its own, it sees.
    let (_, _, body) = get(&node, &r("sumSeries(cust.*.*.*)"), Some(&acme));
    assert!(body.contains("3.0"), "{body}");
    let (_, _, body) = get(&node, "/metrics/find?query=cust.*", Some(&acme));
    assert!(body.contains("acme"), "{body}");
    // POSTed forms go through the same door.
    let form = format!(
        "target={}{range}&format=json",
        url_encode("cust.other.web.load")
    );
    let (_, _, body) = node.http_raw(
        "POST",
        "/render",
        Some(form.as_bytes()),
        &[
            ("Authorization", &acme),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&body), "[]");
    // The unfenced user sees everything.
    let (_, _, body) = get(&node, &r("secret.key.x"), Some(&ops));
    assert!(body.contains("42424.75"), "{body}");
    node.stop(Duration::from_secs(20));
}

/// A real OpenLDAP (Debian's `slapd`) in a temporary directory, on a free
/// loopback port, with alice (in the `graphite` group) and bob (not).
struct Slapd {
    child: std::process::Child,
    port: u16,
    /// Its `ldaps://` port, when started with a certificate.
    ldaps_port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Slapd {
    /// Started with `tls`, it also serves `ldaps://` and StartTLS with
    /// that certificate.
    fn start(tls: Option<&graunt_harness::tls::Issued>) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let tls_conf = tls.map_or(String::new(), |t| {
            format!(
                "TLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                t.cert.display(),
                t.key.display()
            )
        });
        std::fs::write(
            d.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
                 pidfile {d}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n{tls_conf}\
                 database mdb\nsuffix \"dc=example,dc=com\"\nrootdn \"cn=admin,dc=example,dc=com\"\n\
                 rootpw adminpw\ndirectory {d}/db\n",
                d = d.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let ldaps_port = free_port();
        let mut urls = format!("ldap://127.0.0.1:{port}/");
        if tls.is_some() {
            urls.push_str(&format!(" ldaps://127.0.0.1:{ldaps_port}/"));
        }
        let child = std::process::Command::new("slapd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .args(["-h", &urls, "-d", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("slapd (Debian's slapd package; .ci/run installs it)");
        wait_for(Duration::from_secs(10), "slapd to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let ldif = "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\no: example\ndc: example\n\n\
                    dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n\
                    dn: uid=alice,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: A\nuserPassword: alice pw\n\n\
                    dn: uid=bob,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: B\nuserPassword: bob pw\n\n\
                    dn: cn=graphite,dc=example,dc=com\nobjectClass: groupOfNames\ncn: graphite\nmember: uid=alice,ou=people,dc=example,dc=com\n";
        std::fs::write(d.join("entries.ldif"), ldif).unwrap();
        let added = std::process::Command::new("ldapadd")
            .args(["-x", "-H", &format!("ldap://127.0.0.1:{port}")])
            .args(["-D", "cn=admin,dc=example,dc=com", "-w", "adminpw", "-f"])
            .arg(d.join("entries.ldif"))
            .output()
            .expect("ldapadd (Debian's ldap-utils)");
        assert!(
            added.status.success(),
            "{}",
            String::from_utf8_lossy(&added.stderr)
        );
        Slapd {
            child,
            port,
            ldaps_port,
            _dir: dir,
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ldap_logins_and_the_group_check_against_slapd() {
    let slapd = Slapd::start(None);
    let dir = temp_dir();
    let config = dir.path().join("graunt.toml");
    std::fs::write(
        &config,
        format!(
            "[ldap]\nurl = \"ldap://127.0.0.1:{}\"\nuser_dn = \"uid={{user}},ou=people,dc=example,dc=com\"\n\
             required_group = \"cn=graphite,dc=example,dc=com\"\n",
            slapd.port
        ),
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    use base64::Engine;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let code = |auth: Option<String>| get(&node, "/metrics/find?query=*", auth.as_deref()).0;
    assert_eq!(code(Some(basic("alice", "alice pw"))), 200, "in the group");
    assert_eq!(
        code(Some(basic("alice", "alice pw"))),
        200,
        "again, from the cache"
    );
    assert_eq!(code(Some(basic("alice", "wrong"))), 401, "a wrong password");
    assert_eq!(code(Some(basic("bob", "bob pw"))), 401, "not in the group");
    assert_eq!(
        code(Some(basic("carol", "x"))),
        401,
        "unknown to the directory"
    );
    assert_eq!(code(Some(basic("alice", ""))), 401, "an anonymous bind");
    assert_eq!(code(Some(basic("*)(uid=*", "x"))), 401, "an injection");
    assert_eq!(code(None), 401);
    node.stop(Duration::from_secs(20));
}

#[test]
fn ldaps_and_starttls_logins_check_the_directory_certificate() {
    let dir = temp_dir();
    let site = graunt_harness::tls::Pki::new(dir.path(), "site");
    let other = graunt_harness::tls::Pki::new(dir.path(), "other");
    let slapd = Slapd::start(Some(&site.localhost("slapd")));
    wait_for(Duration::from_secs(10), "slapd's ldaps port", || {
        TcpStream::connect(("127.0.0.1", slapd.ldaps_port)).ok()
    });
    use base64::Engine;
    let alice = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alice pw")
    );
    for (case, url, extra, ca, want) in [
        (
            "ldaps://",
            format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
            "",
            &site.ca_file,
            200,
        ),
        (
            "StartTLS",
            format!("ldap://127.0.0.1:{}", slapd.port),
            "starttls = true\n",
            &site.ca_file,
            200,
        ),
        (
            "ldaps:// trusting another CA",
            format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
            "",
            &other.ca_file,
            401,
        ),
        (
            "StartTLS trusting another CA",
            format!("ldap://127.0.0.1:{}", slapd.port),
            "starttls = true\n",
            &other.ca_file,
            401,
        ),
    ] {
        let config = dir.path().join("graunt.toml");
        std::fs::write(
            &config,
            format!(
                "[ldap]\nurl = \"{url}\"\nuser_dn = \"uid={{user}},ou=people,dc=example,dc=com\"\n\
                 required_group = \"cn=graphite,dc=example,dc=com\"\n{extra}ca_file = {ca:?}\n"
            ),
        )
        .unwrap();
        let node = Node::start(
            &dir.path().join("data"),
            &["--config", config.to_str().unwrap()],
        );
        let code = get(&node, "/metrics/find?query=*", Some(&alice)).0;
        assert_eq!(code, want, "{case}");
        node.stop(Duration::from_secs(20));
    }
}
