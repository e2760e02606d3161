//! TLS for broker connections (tokio-rustls with the `ring` crypto provider).
//!
//! What is trusted and what is presented follows the Java client's PEM settings:
//!
//! | setting                                     | effect                                                   |
//! |---------------------------------------------|----------------------------------------------------------|
//! | `ssl.truststore.location` (PEM file)        | trust exactly these CA certificates                      |
//! | `ssl.truststore.certificates` (inline PEM)  | the same, inline                                         |
//! | neither                                     | trust the platform's CA roots                            |
//! | `ssl.keystore.location` (PEM file)          | client certificate chain *and* private key (mTLS)        |
//! | `ssl.keystore.certificate.chain` + `.key`   | the same, inline                                         |
//! | `ssl.endpoint.identification.algorithm`     | `https` (default): the certificate must name the host    |
//!
//! Server verification is always on: the broker's chain must lead to a trusted root and be valid
//! now. Setting `ssl.endpoint.identification.algorithm` to the empty string only drops the check
//! that the certificate names the host we dialled (as in Java); the chain is still verified. Use it
//! for brokers reached by an address their certificate does not list, never to accept unknown CAs.
//!
//! The server name sent in SNI is the host of the broker address; for an IP address no SNI is sent
//! (RFC 6066) and the certificate must carry that IP in its subjectAltName.
//!
//! Encrypted private keys (`ssl.key.password`) are not supported: decrypt the key into PKCS#8
//! (`openssl pkcs8 -topk8 -nocrypt`) and protect the file instead.
//!
//! Errors: unreadable or malformed PEM is an [`Error::Config`] naming the setting and the file;
//! a failed handshake (unknown CA, name mismatch, expired certificate, ...) is an [`Error::Io`]
//! whose source wraps the `rustls::Error` (`source.get_ref()` downcasts to it). Like every I/O
//! error it counts as retriable, so a client keeps retrying (with backoff, until its timeouts)
//! while a broker's certificate is being fixed or rotated.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::config::{ClientConfig, ConfigError};
use crate::error::{Error, Peer, Result};

/// Wraps `tcp` in TLS for `host` as `config` says.
pub(crate) async fn connect(
    config: &ClientConfig,
    host: &str,
    tcp: TcpStream,
    peer: &Peer,
) -> Result<TlsStream<TcpStream>> {
    let tls = client_config(config)?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        Error::Config(ConfigError::Invalid(format!(
            "broker host {host:?} is not a valid TLS server name: {e}"
        )))
    })?;
    let connector = TlsConnector::from(Arc::new(tls));
    // tokio-rustls reports handshake failures as io::Error (InvalidData) wrapping rustls::Error.
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| Error::io(peer.clone(), e))
}

fn config_error(msg: String) -> Error {
    Error::Config(ConfigError::Invalid(msg))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for `config`.
pub(crate) fn client_config(config: &ClientConfig) -> Result<rustls::ClientConfig> {
    if config.ssl_key_password.is_some() {
        return Err(config_error(
            "ssl.key.password: encrypted private keys are not supported; store the key as \
             unencrypted PKCS#8 PEM (openssl pkcs8 -topk8 -nocrypt)"
                .into(),
        ));
    }
    let provider = provider();
    let verifier = server_verifier(config, &provider)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS protocol versions: {e}")))?
        // The standard WebPKI verifier (or the chain-only one below); `dangerous` is only the
        // name of the API that accepts a verifier object.
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let tls = match client_identity(config)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| config_error(format!("client certificate/key rejected: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(tls)
}

/// How the broker's certificate is verified: WebPKI with host-name check by default, the chain
/// only when `ssl.endpoint.identification.algorithm` is empty.
fn server_verifier(
    config: &ClientConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let roots = Arc::new(root_store(config)?);
    let verify_host = !config
        .ssl_endpoint_identification_algorithm
        .trim()
        .is_empty();
    if verify_host {
        let v =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| config_error(format!("TLS trust store: {e}")))?;
        Ok(v)
    } else {
        Ok(Arc::new(ChainOnlyVerifier {
            roots,
            provider: provider.clone(),
        }))
    }
}

fn read_file(setting: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| config_error(format!("{setting}: cannot read {}: {e}", path.display())))
}

/// Parses every certificate in `pem`; `what` names the setting (and file) for errors.
fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("{what}: malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(config_error(format!(
            "{what}: no `BEGIN CERTIFICATE` block found"
        )));
    }
    Ok(certs)
}

/// Parses the private key in `pem`. The error never contains the key material.
fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(config_error(format!(
            "{what}: encrypted private keys are not supported; store the key as unencrypted \
             PKCS#8 PEM"
        )));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        config_error(format!(
            "{what}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"
        ))
    })
}

fn root_store(config: &ClientConfig) -> Result<RootCertStore> {
    let certs = if let Some(path) = &config.ssl_truststore_location {
        let what = format!("ssl.truststore.location ({})", path.display());
        parse_certs(&read_file("ssl.truststore.location", path)?, &what)?
    } else if let Some(pem) = &config.ssl_truststore_certificates {
        parse_certs(pem.as_bytes(), "ssl.truststore.certificates")?
    } else {
        return platform_roots();
    };
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            config_error(format!(
                "trust store certificate #{} is not a usable CA certificate: {e}",
                i + 1
            ))
        })?;
    }
    Ok(store)
}

/// The platform's roots, loaded once per process.
fn platform_roots() -> Result<RootCertStore> {
    static ROOTS: OnceLock<std::result::Result<RootCertStore, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "while loading the platform's CA certificates");
        }
        let mut store = RootCertStore::empty();
        let (added, _ignored) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            Err(
                "no ssl.truststore.location/ssl.truststore.certificates configured and no \
                 platform CA certificates found"
                    .to_string(),
            )
        } else {
            Ok(store)
        }
    });
    roots.clone().map_err(config_error)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(config: &ClientConfig) -> Result<Option<Identity>> {
    if let Some(path) = &config.ssl_keystore_location {
        let pem = read_file("ssl.keystore.location", path)?;
        let what = format!("ssl.keystore.location ({})", path.display());
        let chain = parse_certs(&pem, &what)?;
        let key = parse_key(&pem, &what)?;
        return Ok(Some((chain, key)));
    }
    match (
        &config.ssl_keystore_certificate_chain,
        &config.ssl_keystore_key,
    ) {
        (Some(chain), Some(key)) => {
            let chain = parse_certs(chain.as_bytes(), "ssl.keystore.certificate.chain")?;
            let key = parse_key(key.expose().as_bytes(), "ssl.keystore.key")?;
            Ok(Some((chain, key)))
        }
        (None, None) => Ok(None),
        _ => Err(config_error(
            "ssl.keystore.certificate.chain and ssl.keystore.key go together".into(),
        )),
    }
}

/// Verifies the server's chain against the roots, its validity period and its handshake
/// signatures, but not that it names the host (`ssl.endpoint.identification.algorithm=`).
#[derive(Debug)]
struct ChainOnlyVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_config_error_naming_the_setting() {
        let mut c = ClientConfig::default();
        c.ssl_truststore_certificates("not a pem".to_string());
        let e = client_config(&c).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains("ssl.truststore.certificates"), "{e}");

        let mut c = ClientConfig::default();
        c.ssl_truststore_location(std::path::PathBuf::from("/nonexistent/ca.pem"));
        let e = client_config(&c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn key_errors_do_not_echo_the_key() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let e = parse_key(b"garbage-secret-material", "ssl.keystore.key").unwrap_err();
        assert!(!e.to_string().contains("garbage-secret-material"));
        // A well-formed PEM block with a bogus body: rustls rejects it without echoing it.
        if let Err(e) = parse_key(secret.as_bytes(), "ssl.keystore.key") {
            assert!(!e.to_string().contains("c2VjcmV0"));
        }
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = parse_key(enc.as_bytes(), "ssl.keystore.key").unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
    }

    fn test_pki() -> (String, CertificateDer<'static>, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["broker.test".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let other_key = KeyPair::generate().unwrap();
        let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other
            .distinguished_name
            .push(DnType::CommonName, "another CA");
        let other = other.self_signed(&other_key).unwrap();
        (ca.pem(), leaf.der().clone(), other.pem())
    }

    fn verify(
        config: &ClientConfig,
        cert: &CertificateDer<'static>,
        name: &str,
    ) -> std::result::Result<(), rustls::Error> {
        let verifier = server_verifier(config, &provider()).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn host_name_check_can_be_turned_off_but_the_chain_is_still_verified() {
        let (ca, leaf, other_ca) = test_pki();
        let mut c = ClientConfig::default();
        c.ssl_truststore_certificates(ca.clone());
        assert!(verify(&c, &leaf, "broker.test").is_ok());
        assert!(matches!(
            verify(&c, &leaf, "other.test"),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ));
        c.ssl_endpoint_identification_algorithm(String::new());
        assert!(verify(&c, &leaf, "other.test").is_ok());
        // Still verified: a certificate of another CA is refused.
        let mut c = ClientConfig::default();
        c.ssl_truststore_certificates(other_ca)
            .ssl_endpoint_identification_algorithm(String::new());
        assert!(matches!(
            verify(&c, &leaf, "broker.test"),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ));
    }
}
