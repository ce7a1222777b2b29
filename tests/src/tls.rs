//! Certificates for TLS tests, made by the test ([`Pki`]: a CA and the
//! certificates it signs, written as PEM files), and a blocking TLS client
//! for the harness's HTTP helpers.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A certificate authority under a directory.
pub struct Pki {
    /// Its certificate (PEM): what clients and servers trust.
    pub ca_file: PathBuf,
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, its certificate at `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("a CA key");
        let ca = params.self_signed(&key).expect("a CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).expect("write the CA");
        Pki {
            ca_file,
            dir: dir.to_path_buf(),
            ca,
            key,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), usable by a
    /// server and a client, written to `dir/<file>.crt` and `.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.ca, &self.key)
            .expect("a signed certificate");
        let issued = Issued {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write the key");
        issued
    }

    /// A certificate for this host (`localhost`, `127.0.0.1`).
    pub fn localhost(&self, file: &str) -> Issued {
        self.issue(file, &["localhost", "127.0.0.1"])
    }
}

/// A client config trusting `ca_file` (PEM).
pub fn client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_file).expect("read the CA");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates")
}

/// A blocking TLS connection to `addr`, checking its certificate for
/// `127.0.0.1`.
pub fn connect(
    addr: std::net::SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("a TLS client");
    let tcp = TcpStream::connect(addr).expect("connect");
    rustls::StreamOwned::new(conn, tcp)
}
