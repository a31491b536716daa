//! A test certificate authority and a leaf for `localhost`, `127.0.0.1` and `::1`, made in memory.

use super::*;

/// A TLS client configuration that trusts the CA in `ca` (PEM) and offers `alpn`: for the tests' own raw
/// TLS and QUIC clients.
pub fn tls_client_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    shared::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("trust the CA");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A test CA and a leaf certificate for `localhost`, `127.0.0.1` and `::1`, written as PEM files.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        let made = shared::tls::generate_self_signed(&["localhost", "127.0.0.1", "::1"], 13)
            .expect("certificates");
        std::fs::write(dir.path().join("ca.pem"), made.ca_pem).expect("write");
        std::fs::write(dir.path().join("cert.pem"), made.chain_pem).expect("write");
        std::fs::write(dir.path().join("key.pem"), made.key_pem).expect("write");
        TestCerts { dir }
    }

    /// The CA certificate clients must trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate chain (leaf then CA).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}
