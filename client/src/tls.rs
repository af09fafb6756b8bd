//! TLS on the client side, and the PEM reading the server shares with it: certificates, keys
//! and CA bundles from files, with errors that name the file and what is wrong with it.
//!
//! One crypto provider for the whole project, client and server: rustls with `ring` (no C
//! build, and it works in a `FROM scratch` image). Every HTTP client of the project is built
//! with [`http_client`], which hands reqwest a ready rustls configuration: reqwest never looks
//! for a process-wide provider or the system's CA store, so a plain `http://` client works
//! with no system files, and an `https://` one trusts exactly the CA it was given.
//!
//! This module reads files only when asked; it holds no state and rotates nothing (the
//! server's `tls` module rotates its own certificates).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM item of the expected kind, or a broken one.
    #[error("{}: {what}", path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A certificate was given without its key, or the other way round.
    #[error("a client certificate needs both --cert and --key")]
    Incomplete,
    /// The files are each readable, but rustls refuses them together (a key that does not
    /// match the certificate, an unsupported key type, a CA that is not a CA).
    #[error("{0}")]
    Refused(String),
}

/// The crypto provider of every TLS connection of this project (ring).
// rustls deprecates ring's provider for lacking post-quantum key exchange; aws-lc-rs has it
// but is a C build that the static `FROM scratch` image and CI would pay for.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn content(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Content {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// The certificates of a PEM file (`pem` is its content), in order: a chain starts with the
/// end entity's.
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(content(path, "holds no certificate (BEGIN CERTIFICATE)"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| content(path, format!("holds no usable private key: {e}")))
}

/// A CA bundle (`pem`, the content of `path`) as trust anchors.
pub fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(path, pem)? {
        roots
            .add(cert)
            .map_err(|e| content(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain and its key as rustls signs with them; refused when the key does not
/// match the certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::Refused(format!(
            "the certificate and the key do not go together: {e}"
        ))
    })
}

/// How a client speaks TLS: the CA that signs the registry's certificates, and optionally the
/// client's own certificate and key (for a registry that asks for one). Built from files by
/// [`ClientTls::from_files`]; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "client_cert",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA bundle `ca` and, when given, the client certificate `cert` (PEM, the
    /// chain) and its private key `key`. Both or neither of `cert` and `key`.
    pub fn from_files(
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, TlsError> {
        let roots = parse_roots(ca, &read(ca)?)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Refused(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (cert, key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = parse_certs(cert, &read(cert)?)?;
                let key = parse_key(key, &read(key)?)?;
                // Checks that they go together before the first handshake would.
                certified_key(chain.clone(), key.clone_key())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Refused(e.to_string()))?
            }
            _ => return Err(TlsError::Incomplete),
        };
        Ok(ClientTls::from_config(config))
    }

    /// A ready rustls configuration (the server's gossip client brings its own, which follows
    /// certificate rotation). It must use [`provider`].
    pub fn from_config(config: ClientConfig) -> ClientTls {
        ClientTls {
            config: Arc::new(config),
        }
    }
}

/// A reqwest client builder that speaks TLS as `tls` says, or plain HTTP only when `tls` is
/// `None` (an `https://` URL then fails its handshake: it trusts no CA). Never consults a
/// proxy: registries and their peers live on the private network.
pub fn http_client(tls: Option<&ClientTls>) -> reqwest::ClientBuilder {
    let config = match tls {
        Some(tls) => (*tls.config).clone(),
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(config)
}

/// Why a request got no answer, in one line: "timed out", or its root cause (reqwest's own
/// text names the URL again and hides why), with what a TLS failure means in words.
pub fn why_unreachable(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if error.is_timeout() {
        "timed out".to_owned()
    } else if let Some(tls) = explain(error) {
        format!("{tls} ({cause})")
    } else {
        cause.to_string()
    }
}

/// What a TLS failure somewhere in `error`'s chain means, in words a person can act on; `None`
/// when the failure was not TLS's.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    tls_error(error).map(meaning)
}

/// Whether `error` (a failed request) failed because the server's certificate does not name
/// the host of the URL: the address is wrong for that server, whether or not it is up.
pub fn wrong_name(error: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::CertificateError as Cert;
    matches!(
        tls_error(error),
        Some(rustls::Error::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. }
        ))
    )
}

/// The rustls error in `error`'s chain. An `io::Error` that wraps one does not give it as its
/// `source`, so wrapped errors are looked into as well as sources.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut stack = vec![error];
    while let Some(e) = stack.pop() {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
        if let Some(source) = e.source() {
            stack.push(source);
        }
    }
    None
}

fn meaning(error: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    match error {
        E::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
            "the registry's certificate is not signed by the given CA (--ca)"
        }
        E::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "the registry's certificate has expired"
        }
        E::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
            "the registry's certificate does not name the host of its URL"
        }
        E::InvalidCertificate(_) => "the registry's certificate is not valid",
        E::AlertReceived(Alert::CertificateRequired) => {
            "the registry requires a client certificate (--cert and --key)"
        }
        E::AlertReceived(Alert::CertificateExpired) => {
            "the registry refused the client certificate: it has expired"
        }
        E::AlertReceived(
            Alert::UnknownCA
            | Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate,
        ) => "the registry refused the client certificate: not signed by its CA, or not one for a client",
        E::InvalidMessage(_) => "the registry does not speak TLS on this port (an http:// URL?)",
        _ => "the TLS handshake with the registry failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_items_are_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("discovery-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = ClientTls::from_files(&junk, None, None).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        assert!(err.to_string().contains("no certificate"), "{err}");
        let missing = dir.join("missing.pem");
        let err = ClientTls::from_files(&missing, None, None).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        assert!(matches!(
            ClientTls::from_files(&junk, Some(&junk), None),
            Err(TlsError::Incomplete | TlsError::Content { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
