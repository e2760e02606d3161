//! Broker properties for TLS and SASL listeners, to pass as
//! [`ClusterConfig::broker_properties`](crate::ClusterConfig::broker_properties) together with an
//! [`ExtraListener`](crate::ExtraListener).
//!
//! Certificates and keys are PEM text (Kafka's `ssl.keystore.type=PEM`); the private key must be
//! unencrypted PKCS#8 (`BEGIN PRIVATE KEY`). A PEM value is written on one properties line with
//! its newlines as `\n` escapes, which Java's `Properties` turns back into newlines.
//!
//! ```
//! let mut cfg = testkit::ClusterConfig::with_brokers(1);
//! cfg.extra_listeners.push(testkit::ExtraListener {
//!     name: "SASL_SSL_CLIENT".into(),
//!     security_protocol: "SASL_SSL".into(),
//! });
//! # let (cert, key) = ("-----BEGIN CERTIFICATE-----\n...", "-----BEGIN PRIVATE KEY-----\n...");
//! cfg.broker_properties
//!     .extend(testkit::security::tls_keystore("SASL_SSL_CLIENT", cert, key));
//! cfg.broker_properties.extend(testkit::security::sasl(
//!     "SASL_SSL_CLIENT",
//!     &["PLAIN", "SCRAM-SHA-256"],
//!     &[("alice", "alice-secret")],
//! ));
//! ```

/// A PEM text as one Java properties value: newlines escaped as `\n`.
pub fn pem_value(pem: &str) -> String {
    pem.trim_end().replace("\r\n", "\n").replace('\n', "\\n")
}

fn prefix(listener: &str) -> String {
    format!("listener.name.{}.", listener.to_ascii_lowercase())
}

/// The server certificate chain and private key of a TLS listener (`SSL` or `SASL_SSL`).
pub fn tls_keystore(listener: &str, cert_chain_pem: &str, key_pem: &str) -> Vec<(String, String)> {
    let p = prefix(listener);
    vec![
        (format!("{p}ssl.keystore.type"), "PEM".into()),
        (
            format!("{p}ssl.keystore.certificate.chain"),
            pem_value(cert_chain_pem),
        ),
        (format!("{p}ssl.keystore.key"), pem_value(key_pem)),
    ]
}

/// Requires clients of a TLS listener to present a certificate signed by one of `ca_pem`.
pub fn tls_client_auth(listener: &str, ca_pem: &str) -> Vec<(String, String)> {
    let p = prefix(listener);
    vec![
        (format!("{p}ssl.client.auth"), "required".into()),
        (format!("{p}ssl.truststore.type"), "PEM".into()),
        (format!("{p}ssl.truststore.certificates"), pem_value(ca_pem)),
    ]
}

/// Enables `mechanisms` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) on a SASL listener. PLAIN
/// users and passwords come from `plain_users`; SCRAM users must be created separately (for
/// example with AlterUserScramCredentials over the plaintext `CLIENT` listener).
pub fn sasl(
    listener: &str,
    mechanisms: &[&str],
    plain_users: &[(&str, &str)],
) -> Vec<(String, String)> {
    let p = prefix(listener);
    let mut props = vec![(format!("{p}sasl.enabled.mechanisms"), mechanisms.join(","))];
    for m in mechanisms {
        let lower = m.to_ascii_lowercase();
        let jaas = if m.eq_ignore_ascii_case("PLAIN") {
            let users: String = plain_users
                .iter()
                .map(|(u, pw)| format!(" user_{u}=\"{pw}\""))
                .collect();
            format!("org.apache.kafka.common.security.plain.PlainLoginModule required{users};")
        } else {
            "org.apache.kafka.common.security.scram.ScramLoginModule required;".to_string()
        };
        props.push((format!("{p}{lower}.sasl.jaas.config"), jaas));
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_values_are_one_line() {
        let v = pem_value("-----BEGIN X-----\r\nAAAA\nBBBB\n-----END X-----\n");
        assert_eq!(v, "-----BEGIN X-----\\nAAAA\\nBBBB\\n-----END X-----");
        assert!(!v.contains('\n'));
    }

    #[test]
    fn sasl_properties() {
        let p = sasl(
            "SASL_SSL_CLIENT",
            &["PLAIN", "SCRAM-SHA-512"],
            &[("a", "b")],
        );
        assert_eq!(
            p[0],
            (
                "listener.name.sasl_ssl_client.sasl.enabled.mechanisms".to_string(),
                "PLAIN,SCRAM-SHA-512".to_string()
            )
        );
        assert_eq!(
            p[1].0,
            "listener.name.sasl_ssl_client.plain.sasl.jaas.config"
        );
        assert!(p[1].1.ends_with("required user_a=\"b\";"), "{}", p[1].1);
        assert_eq!(
            p[2].0,
            "listener.name.sasl_ssl_client.scram-sha-512.sasl.jaas.config"
        );
    }
}
