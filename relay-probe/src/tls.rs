//! TLS server configuration from PEM files, reloadable on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("cannot read TLS private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS certificate and key do not make a server config: {0}")]
    Config(#[from] rustls::Error),
}

/// The acceptor new TLS connections use; replaced whole on reload, so a
/// handshake in progress keeps the config it started with.
#[derive(Clone)]
pub struct Acceptor {
    files: TlsFiles,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("files", &self.files)
            .finish()
    }
}

impl Acceptor {
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let acceptor = build(&files.cert, &files.key)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = build(&self.files.cert, &self.files.key)?;
        *self.current.write().expect("not poisoned") = acceptor;
        Ok(())
    }

    pub fn get(&self) -> TlsAcceptor {
        self.current.read().expect("not poisoned").clone()
    }
}

fn build(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            message: "no certificate in file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
