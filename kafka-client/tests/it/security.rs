//! TLS and SASL against a real broker: a 1-node cluster of our own with a `SASL_SSL` listener
//! (PLAIN users from JAAS, SCRAM users created with AlterUserScramCredentials over the plaintext
//! listener) and an `SSL` listener that requires client certificates. Certificates are made here
//! with rcgen: a CA, a server certificate for `127.0.0.1` and `broker.test` (so `localhost` is a
//! host-name mismatch), a client certificate, and an unrelated CA.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use kafka_client::admin::{Admin, ScramCredentialChange};
use kafka_client::config::{ClientConfig, SaslMechanism, Secret, SecurityProtocol};
use kafka_client::kafka_wire::ErrorCode;
use kafka_client::sasl::ScramHash;
use kafka_client::{Client, Error};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::sync::OnceCell;
use tokio_rustls::rustls;

const SASL_LISTENER: &str = "SASL_SSL_CLIENT";
const SSL_LISTENER: &str = "SSL_CLIENT";
const PLAIN_USER: &str = "alice";
const PLAIN_PASSWORD: &str = "alice-s3cret-pw";
const SCRAM_USER: &str = "bob";
const SCRAM_PASSWORD: &str = "bob-scram-pw-42";

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// (certificate PEM, PKCS#8 key PEM) signed by `ca`.
fn leaf(
    ca: &Ca,
    cn: &str,
    dns: &[&str],
    ip: bool,
    eku: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if ip {
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![eku];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Env {
    cluster: testkit::Cluster,
    ca_pem: String,
    other_ca_pem: String,
    client_cert: String,
    client_key: String,
}

impl Env {
    fn port(&self, listener: &str) -> u16 {
        self.cluster
            .node(1)
            .unwrap()
            .listener_port(listener)
            .unwrap()
    }

    /// A SASL_SSL config for `mechanism` trusting our CA.
    fn sasl(&self, mechanism: SaslMechanism, user: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::default();
        c.bootstrap_servers(vec![format!("127.0.0.1:{}", self.port(SASL_LISTENER))])
            .security_protocol(SecurityProtocol::SaslSsl)
            .sasl_mechanism(mechanism)
            .sasl_username(user.to_string())
            .sasl_password(Secret::new(password))
            .ssl_truststore_certificates(self.ca_pem.clone())
            .request_timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(10));
        c
    }

    fn ssl(&self) -> ClientConfig {
        let mut c = ClientConfig::default();
        c.bootstrap_servers(vec![format!("127.0.0.1:{}", self.port(SSL_LISTENER))])
            .security_protocol(SecurityProtocol::Ssl)
            .ssl_truststore_certificates(self.ca_pem.clone())
            .request_timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(10));
        c
    }
}

/// The cluster and certificates, made once per test binary. A failed start is remembered, so
/// the other tests fail at once with the same message instead of starting clusters again.
async fn env() -> &'static Env {
    static ENV: OnceCell<Result<Env, String>> = OnceCell::const_new();
    match ENV.get_or_init(start_env).await {
        Ok(env) => env,
        Err(e) => panic!("the SASL_SSL test cluster did not start: {e}"),
    }
}

async fn start_env() -> Result<Env, String> {
    let ca_ = ca("kafka-rs test CA");
    let other = ca("some other CA");
    let (server_cert, server_key) = leaf(
        &ca_,
        "broker",
        &["broker.test"],
        true,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = leaf(
        &ca_,
        "client",
        &[],
        false,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let ca_pem = ca_.cert.pem();
    let mut cfg = testkit::ClusterConfig::with_brokers(1);
    cfg.extra_listeners = vec![
        testkit::ExtraListener {
            name: SASL_LISTENER.into(),
            security_protocol: "SASL_SSL".into(),
        },
        testkit::ExtraListener {
            name: SSL_LISTENER.into(),
            security_protocol: "SSL".into(),
        },
    ];
    // The same server certificate on both TLS listeners; the SSL one requires client
    // certificates from our CA.
    use testkit::security::{sasl, tls_client_auth, tls_keystore};
    for listener in [SASL_LISTENER, SSL_LISTENER] {
        cfg.broker_properties
            .extend(tls_keystore(listener, &server_cert, &server_key));
    }
    cfg.broker_properties
        .extend(tls_client_auth(SSL_LISTENER, &ca_pem));
    cfg.broker_properties.extend(sasl(
        SASL_LISTENER,
        &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        &[(PLAIN_USER, PLAIN_PASSWORD)],
    ));
    let cluster = testkit::Cluster::start(cfg)
        .await
        .map_err(|e| format!("cluster start: {e}"))?;

    // SCRAM users, through the plaintext listener.
    let mut plain = ClientConfig::default();
    plain.bootstrap_servers(vec![cluster.bootstrap()]);
    let admin = Admin::new(plain)
        .await
        .expect("admin on the plaintext listener");
    // Kafka refuses two changes of one user in a request (DUPLICATE_RESOURCE): one each.
    for (mechanism, iterations) in [(ScramHash::Sha256, 4096), (ScramHash::Sha512, 8192)] {
        let results = admin
            .alter_user_scram_credentials(&[ScramCredentialChange::Upsert {
                user: SCRAM_USER.into(),
                mechanism,
                iterations,
                password: Secret::new(SCRAM_PASSWORD),
            }])
            .await
            .map_err(|e| format!("AlterUserScramCredentials: {e}"))?;
        match results.as_slice() {
            [(user, Ok(()))] if user == SCRAM_USER => {}
            other => return Err(format!("AlterUserScramCredentials results: {other:?}")),
        }
    }
    admin.client().close();
    Ok(Env {
        cluster,
        ca_pem,
        other_ca_pem: other.cert.pem(),
        client_cert,
        client_key,
    })
}

/// Connects with a bound on the time, so a hang fails the test instead of blocking it.
async fn connect(cfg: ClientConfig) -> Result<Client, Error> {
    tokio::time::timeout(Duration::from_secs(30), Client::connect(cfg))
        .await
        .expect("connect must not hang")
}

/// Connected and able to talk: the metadata lists broker 1 at the listener's address.
async fn assert_works(cfg: ClientConfig, port: u16) {
    let client = connect(cfg).await.expect("connects");
    let md = client.refresh_metadata().await.expect("metadata");
    let b = md.brokers.get(&1).expect("broker 1");
    assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", port));
    client.close();
}

/// The rustls error inside an [`Error::Io`].
fn rustls_error(e: &Error) -> Option<&rustls::Error> {
    match e {
        Error::Io { source, .. } => source.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

#[tokio::test]
async fn sasl_plain_over_tls() {
    let env = env().await;
    let cfg = env.sasl(SaslMechanism::Plain, PLAIN_USER, PLAIN_PASSWORD);
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains(PLAIN_PASSWORD), "password in Debug: {dbg}");
    assert_works(cfg, env.port(SASL_LISTENER)).await;
}

/// SCRAM credentials reach the broker through the metadata log; allow a short propagation delay
/// (only `SASL_AUTHENTICATION_FAILED` is retried, for at most 10 s).
async fn assert_scram_works(mechanism: SaslMechanism) {
    let env = env().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match connect(env.sasl(mechanism, SCRAM_USER, SCRAM_PASSWORD)).await {
            Ok(c) => {
                c.close();
                break;
            }
            Err(e)
                if e.broker_code() == Some(ErrorCode::SASL_AUTHENTICATION_FAILED)
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{mechanism:?} failed: {e}"),
        }
    }
    assert_works(
        env.sasl(mechanism, SCRAM_USER, SCRAM_PASSWORD),
        env.port(SASL_LISTENER),
    )
    .await;
}

#[tokio::test]
async fn sasl_scram_sha_256() {
    assert_scram_works(SaslMechanism::ScramSha256).await;
}

#[tokio::test]
async fn sasl_scram_sha_512() {
    assert_scram_works(SaslMechanism::ScramSha512).await;
}

#[tokio::test]
async fn wrong_password_is_a_typed_authentication_failure() {
    let env = env().await;
    for (mechanism, user) in [
        (SaslMechanism::Plain, PLAIN_USER),
        (SaslMechanism::ScramSha512, SCRAM_USER),
    ] {
        let err = connect(env.sasl(mechanism, user, "not-the-password"))
            .await
            .expect_err("wrong password");
        assert_eq!(
            err.broker_code(),
            Some(ErrorCode::SASL_AUTHENTICATION_FAILED),
            "{mechanism:?}: {err:?}"
        );
        assert!(!err.to_string().contains("not-the-password"));
    }
    // An unknown user, too.
    let err = connect(env.sasl(SaslMechanism::Plain, "mallory", "x"))
        .await
        .expect_err("unknown user");
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::SASL_AUTHENTICATION_FAILED)
    );
}

#[tokio::test]
async fn untrusted_ca_is_a_tls_error() {
    let env = env().await;
    let mut cfg = env.sasl(SaslMechanism::Plain, PLAIN_USER, PLAIN_PASSWORD);
    cfg.ssl_truststore_certificates(env.other_ca_pem.clone());
    let err = connect(cfg).await.expect_err("untrusted CA");
    let tls = rustls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls:?}"
    );
    // Turning host-name verification off does not accept an unknown CA.
    let mut cfg = env.sasl(SaslMechanism::Plain, PLAIN_USER, PLAIN_PASSWORD);
    cfg.ssl_truststore_certificates(env.other_ca_pem.clone())
        .ssl_endpoint_identification_algorithm(String::new());
    let err = connect(cfg).await.expect_err("untrusted CA, no host check");
    assert!(
        matches!(
            rustls_error(&err),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn verification_is_on_by_default() {
    // No trust store configured: the platform's roots, which do not know our test CA.
    let env = env().await;
    let mut cfg = env.sasl(SaslMechanism::Plain, PLAIN_USER, PLAIN_PASSWORD);
    cfg.ssl_truststore_certificates(None::<String>);
    let err = connect(cfg)
        .await
        .expect_err("test CA is not a platform root");
    let unknown_issuer = matches!(
        rustls_error(&err),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    );
    // A machine without any CA bundle cannot even build the root store.
    let no_platform_roots =
        matches!(&err, Error::Config(_)) && err.to_string().contains("platform CA");
    assert!(unknown_issuer || no_platform_roots, "{err:?}");
}

#[tokio::test]
async fn host_name_mismatch_fails_unless_verification_is_off() {
    let env = env().await;
    let port = env.port(SASL_LISTENER);
    // The certificate names 127.0.0.1 and broker.test, not localhost.
    let mut cfg = env.sasl(SaslMechanism::Plain, PLAIN_USER, PLAIN_PASSWORD);
    cfg.bootstrap_servers(vec![format!("localhost:{port}")]);
    let err = connect(cfg.clone()).await.expect_err("name mismatch");
    let tls = rustls_error(&err).unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{tls:?}"
    );
    cfg.ssl_endpoint_identification_algorithm(String::new());
    assert_works(cfg, port).await;
}

#[tokio::test]
async fn mutual_tls_with_inline_and_file_keystores() {
    let env = env().await;
    let port = env.port(SSL_LISTENER);
    // Inline chain and key.
    let mut cfg = env.ssl();
    cfg.ssl_keystore_certificate_chain(env.client_cert.clone())
        .ssl_keystore_key(Secret::new(env.client_key.clone()));
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("PRIVATE KEY"), "key material in Debug: {dbg}");
    assert_works(cfg, port).await;

    // Files: a keystore PEM with chain and key, a truststore PEM with the CA.
    let dir = tempfile::tempdir().unwrap();
    let keystore = dir.path().join("client.pem");
    let truststore = dir.path().join("ca.pem");
    std::fs::write(&keystore, format!("{}{}", env.client_cert, env.client_key)).unwrap();
    std::fs::write(&truststore, &env.ca_pem).unwrap();
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![format!("127.0.0.1:{port}")])
        .security_protocol(SecurityProtocol::Ssl)
        .ssl_truststore_location(truststore)
        .ssl_keystore_location(keystore);
    assert_works(cfg, port).await;

    // Without a client certificate the broker refuses (the alert may arrive after the client's
    // side of the TLS 1.3 handshake is done, so it surfaces on the first request).
    let err = connect(env.ssl()).await.expect_err("no client certificate");
    assert!(
        matches!(rustls_error(&err), Some(rustls::Error::AlertReceived(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_pem_files_are_config_errors_naming_the_file() {
    let env = env().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello").unwrap();
    let mut cfg = env.ssl();
    cfg.ssl_truststore_certificates(None::<String>)
        .ssl_truststore_location(bad.clone());
    let err = connect(cfg).await.expect_err("bad truststore");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("not-a-ca.pem"), "{err}");
}

#[tokio::test]
async fn protocol_mismatch_fails_fast_with_a_typed_error() {
    let env = env().await;
    // TLS to the plaintext listener.
    let mut cfg = env.ssl();
    cfg.bootstrap_servers(vec![env.cluster.node(1).unwrap().direct_addr().to_string()]);
    let err = connect(cfg).await.expect_err("TLS to a plaintext listener");
    assert!(
        matches!(err, Error::Io { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    // Plaintext to the TLS listener.
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(vec![format!("127.0.0.1:{}", env.port(SSL_LISTENER))])
        .connect_timeout(Duration::from_secs(5));
    let err = connect(cfg).await.expect_err("plaintext to a TLS listener");
    assert!(
        matches!(
            err,
            Error::Io { .. } | Error::Timeout { .. } | Error::Protocol { .. }
        ),
        "{err:?}"
    );
}
