//! TLS setup shared by every listener: one crypto provider for the process and server configs from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol ids for HTTP/2 and HTTP/1.1, in server preference order.
pub const ALPN_H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Installs aws-lc-rs as the process-wide rustls provider. Several dependencies enable both aws-lc-rs and ring,
/// and then rustls cannot pick one by itself; every binary and test calls this first. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A TLS error with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate chain {path}: {message}")]
    Certificates { path: String, message: String },
    #[error("cannot read private key {path}: {message}")]
    Key { path: String, message: String },
    #[error("certificate and key do not make a TLS config: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds a server config from a PEM certificate chain and a PEM private key, advertising `alpn`.
pub fn server_config(
    cert_path: &Path,
    key_path: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(Arc::new(
        ReloadableCert::load(cert_path, key_path)?.server_config(alpn),
    ))
}

/// A server certificate that can be replaced while the server runs (SIGHUP): new handshakes use the new
/// certificate, established connections keep theirs.
#[derive(Debug)]
pub struct ReloadableCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

impl ReloadableCert {
    /// Loads the certificate chain and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let key = certified_key(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            current: std::sync::RwLock::new(key),
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        }))
    }

    /// Reads the files again; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// A server config with this resolver and `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> ServerConfig {
        install_crypto_provider();
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as _);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert_path.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: cert_path.display().to_string(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.display().to_string(),
        message: e.to_string(),
    })?;
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        certs,
        signing_key,
    )))
}

/// A certificate authority and a server certificate it signed, as PEM text.
#[cfg(any(test, feature = "certgen"))]
pub struct SelfSigned {
    /// The CA certificate clients must trust.
    pub ca_pem: String,
    /// The server's chain: leaf, then CA.
    pub chain_pem: String,
    pub key_pem: String,
}

/// Makes a CA and a leaf for `names` (DNS names or IP addresses), valid for `days` from now. Chromium refuses
/// certificates pinned by hash that live longer than 14 days, so keep `days` short for browser tests.
#[cfg(any(test, feature = "certgen"))]
pub fn generate_self_signed(names: &[&str], days: u32) -> Result<SelfSigned, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = std::time::SystemTime::now();
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "video-cdn local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    ca_params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86400)).into();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    leaf_params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    leaf_params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86400)).into();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        chain_pem: format!("{}{}", leaf.pem(), ca_cert.pem()),
        key_pem: leaf_key.serialize_pem(),
    })
}
