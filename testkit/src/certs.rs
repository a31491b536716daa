//! A test certificate authority and a leaf for `localhost`, `127.0.0.1` and `::1`, made in memory.

use super::*;

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
