//! The certificate and key of the TLS listeners: loaded from PEM files at
//! start-up, checked (each file holds what its flag says, the key matches
//! the certificate), and reloaded on request without touching the
//! connections already open.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The two files, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate or key cannot be used: the flag whose file is at
/// fault, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    pub flag: &'static str,
    pub path: PathBuf,
    pub cause: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.flag, self.path.display(), self.cause)
    }
}

impl std::error::Error for LoadError {}

const CERT_FLAG: &str = "--tls-cert";
const KEY_FLAG: &str = "--tls-key";

/// The only application protocol spoken over TLS: a client that offers
/// ALPN must offer this (RFC 7301 §3.2), one that does not is served too.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The process's one crypto provider (see README, "TLS"): aws-lc-rs.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn fail(flag: &'static str, path: &Path, cause: impl Into<String>) -> LoadError {
    LoadError {
        flag,
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    // Keys and chains are a few KiB; a huge file is a wrong path.
    const MAX_FILE: u64 = 1024 * 1024;
    let meta = std::fs::metadata(path).map_err(|e| fail(flag, path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail(flag, path, "not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(fail(flag, path, "larger than 1 MiB: not a PEM certificate or key"));
    }
    std::fs::read(path).map_err(|e| fail(flag, path, format!("cannot read: {e}")))
}

/// Reads the certificate chain (leaf first) from `path`.
fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read(CERT_FLAG, path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(CERT_FLAG, path, format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        let cause = if PrivateKeyDer::from_pem_slice(&pem).is_ok() {
            "holds a private key, not a certificate"
        } else {
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        };
        return Err(fail(CERT_FLAG, path, cause));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = read(KEY_FLAG, path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            let cause = if CertificateDer::pem_slice_iter(&pem).next().is_some() {
                "holds a certificate, not a private key"
            } else {
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in it"
            };
            Err(fail(KEY_FLAG, path, cause))
        }
        Err(e) => Err(fail(KEY_FLAG, path, format!("invalid PEM: {e}"))),
    }
}

/// Builds the server configuration from the two files, with new ticket keys.
fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, LoadError> {
    let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| fail(CERT_FLAG, &files.cert, format!("TLS ticket keys: {e}")))?;
    let chain = load_chain(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| fail(CERT_FLAG, &files.cert, format!("TLS setup: {e}")))?
        .with_no_client_auth();
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => fail(
            KEY_FLAG,
            &files.key,
            format!("does not match the certificate in {}", files.cert.display()),
        ),
        rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_) => {
            fail(CERT_FLAG, &files.cert, format!("unusable certificate: {e}"))
        }
        other => fail(KEY_FLAG, &files.key, format!("unusable key: {other}")),
    })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Stateless resumption: a fleet that reconnects after a blip of the
    // network (not a restart of the server) resumes with a cheap handshake,
    // and the server keeps nothing per client. One ticket is enough for one
    // reconnect; the tickets' keys rotate by themselves.
    config.ticketer = ticketer;
    // Tickets only: a TLS 1.2 client without ticket support does a full
    // handshake rather than take a slot in a cache of the server's.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// The current server configuration, swapped as a whole on reload: a
/// connection takes the configuration of the moment it is accepted.
pub struct TlsCerts {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsCerts")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsCerts {
    /// Loads and checks both files.
    pub fn load(files: TlsFiles) -> Result<Self, LoadError> {
        let config = build(&files)?;
        Ok(TlsCerts {
            files,
            current: RwLock::new(config),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete configuration.
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads both files again. On success new connections use them; on
    /// failure the configuration in use stays. New ticket keys come with
    /// the new pair: a client holding a ticket from before does a full
    /// handshake and sees the new certificate (a pair replaced because its
    /// key leaked must not live on in resumed sessions).
    pub fn reload(&self) -> Result<(), LoadError> {
        let config = build(&self.files)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}
