//! SASL client mechanisms as sans-IO state machines: PLAIN (RFC 4616) and SCRAM-SHA-256 /
//! SCRAM-SHA-512 (RFC 5802, RFC 7677).
//!
//! The driver sends each message this module produces in a `SaslAuthenticate` request and feeds
//! the broker's `auth_bytes` back in. Kafka does not SASLprep names or passwords (its SCRAM
//! credentials are stored from the raw UTF-8), so neither do we.
//!
//! The SCRAM states are named for what they await and consumed on each step, so a message cannot
//! be handled twice or out of order:
//!
//! ```text
//! ScramClient::start --client-first--> ExpectServerFirst
//!   --server-first--> (client-final) ExpectServerFinal --server-final--> verified
//! ```
//!
//! Secrets never appear in `Debug` output or error messages.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::config::{SaslCredentials, SaslMechanism, Secret};
use crate::rng::{RandomError, RandomSource};

/// Lowest SCRAM iteration count accepted from a server (RFC 7677's minimum, Kafka's too).
pub const SCRAM_MIN_ITERATIONS: u32 = 4096;
/// Highest SCRAM iteration count accepted from a server: Kafka's own upper bound. A hostile
/// server asking for more would make the client burn CPU in PBKDF2.
pub const SCRAM_MAX_ITERATIONS: u32 = 16_384;
/// Largest server message accepted, in bytes.
const MAX_SERVER_MESSAGE: usize = 8 * 1024;
/// Bytes of randomness in a client nonce (base64: 32 characters).
const NONCE_BYTES: usize = 24;

/// A failed SASL exchange on the client side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The server's message is malformed.
    #[error("malformed SCRAM server message: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend ours.
    #[error("SCRAM server nonce does not start with the client nonce")]
    NonceMismatch,
    /// The iteration count is outside the accepted bounds.
    #[error("SCRAM iteration count {0} outside {SCRAM_MIN_ITERATIONS}..={SCRAM_MAX_ITERATIONS}")]
    Iterations(u32),
    /// The server requires an extension we do not support.
    #[error("SCRAM server requires an unsupported extension")]
    MandatoryExtension,
    /// The server reported an error in its final message (`e=...`).
    #[error("SCRAM server error: {0}")]
    Server(String),
    /// The server's signature is wrong: it does not know the password, or someone is in the
    /// middle.
    #[error("SCRAM server signature verification failed")]
    BadServerSignature,
    /// A message arrived after the exchange was complete, or before it started.
    #[error("unexpected SASL message in state {0}")]
    UnexpectedMessage(&'static str),
    /// No randomness for the nonce.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A nonce given explicitly contains characters RFC 5802 forbids.
    #[error("invalid SCRAM nonce")]
    InvalidNonce,
}

/// SASL PLAIN (RFC 4616): a single message `authzid NUL user NUL password`.
#[derive(Clone)]
pub struct PlainClient {
    authzid: String,
    username: String,
    password: Secret,
}

impl fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainClient")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl PlainClient {
    /// A PLAIN client; an empty `authzid` acts as `username`.
    pub fn new(authzid: &str, username: &str, password: Secret) -> PlainClient {
        PlainClient {
            authzid: authzid.to_string(),
            username: username.to_string(),
            password,
        }
    }

    /// The only message: `authzid \0 user \0 password`. The broker answers with empty bytes on
    /// success and an error code otherwise.
    pub fn message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(
            self.authzid.len() + self.username.len() + self.password.expose().len() + 2,
        );
        m.extend_from_slice(self.authzid.as_bytes());
        m.push(0);
        m.extend_from_slice(self.username.as_bytes());
        m.push(0);
        m.extend_from_slice(self.password.expose().as_bytes());
        m
    }
}

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // `new_from_slice` accepts keys of any length for HMAC; the error arm is unreachable
        // in practice but handled without a panic.
        match self {
            ScramHash::Sha256 => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
            ScramHash::Sha512 => match Hmac::<Sha512>::new_from_slice(key) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            },
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// The keys SCRAM derives from a password; public so tests (and a test server) can build
/// credentials the way a broker stores them.
#[derive(Clone)]
pub struct ScramKeys {
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    client_key: Vec<u8>,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramKeys(<redacted>)")
    }
}

impl ScramKeys {
    /// Derives the keys of `password` with `salt` and `iterations` (RFC 5802 section 3).
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> ScramKeys {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let server_key = hash.hmac(&salted, b"Server Key");
        ScramKeys {
            stored_key: hash.hash(&client_key),
            server_key,
            client_key,
        }
    }
}

/// Escapes a SCRAM `saslname`: `=` becomes `=3D` and `,` becomes `=2C`.
pub fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Reverses [`escape_username`]; `None` for a malformed escape.
pub fn unescape_username(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=3D") => out.push('='),
            Some("=2C") => out.push(','),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The GS2 header: no channel binding, no authzid (Kafka sends `n,,`).
const GS2_HEADER: &str = "n,,";

/// Start of a SCRAM exchange.
pub struct ScramClient;

impl ScramClient {
    /// Starts an exchange for `username`/`password` with a nonce from `rng` (which should be
    /// cryptographically secure, e.g. [`OsRandom`](crate::rng::OsRandom)). Returns the state
    /// awaiting the server-first message and the client-first message to send.
    pub fn start(
        hash: ScramHash,
        username: &str,
        password: Secret,
        rng: &mut dyn RandomSource,
    ) -> Result<(ExpectServerFirst, Vec<u8>), SaslError> {
        let mut raw = [0u8; NONCE_BYTES];
        rng.try_fill_bytes(&mut raw)?;
        Self::start_with_nonce(hash, username, password, &B64.encode(raw))
    }

    /// Like [`start`](Self::start) with a given nonce: for test vectors and interop checks only
    /// (a nonce must never repeat). The nonce must be printable ASCII without `,`.
    pub fn start_with_nonce(
        hash: ScramHash,
        username: &str,
        password: Secret,
        nonce: &str,
    ) -> Result<(ExpectServerFirst, Vec<u8>), SaslError> {
        if nonce.is_empty()
            || !nonce
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(SaslError::InvalidNonce);
        }
        let client_first_bare = format!("n={},r={}", escape_username(username), nonce);
        let message = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        Ok((
            ExpectServerFirst {
                hash,
                password,
                client_nonce: nonce.to_string(),
                client_first_bare,
            },
            message,
        ))
    }
}

/// Awaiting the server-first message.
pub struct ExpectServerFirst {
    hash: ScramHash,
    password: Secret,
    client_nonce: String,
    client_first_bare: String,
}

impl fmt::Debug for ExpectServerFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectServerFirst")
            .field("hash", &self.hash)
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// Splits `key=value` attributes of a SCRAM message.
fn attributes(msg: &[u8]) -> Result<Vec<(u8, &str)>, SaslError> {
    if msg.len() > MAX_SERVER_MESSAGE {
        return Err(SaslError::Malformed("message too long"));
    }
    let text = std::str::from_utf8(msg).map_err(|_| SaslError::Malformed("not UTF-8"))?;
    text.split(',')
        .map(|attr| {
            let b = attr.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
                return Err(SaslError::Malformed("attribute is not `x=value`"));
            }
            Ok((b[0], &attr[2..]))
        })
        .collect()
}

impl ExpectServerFirst {
    /// Handles `r=nonce,s=salt,i=iterations` and returns the state awaiting the server-final
    /// message plus the client-final message (with the proof) to send.
    pub fn handle_server_first(
        self,
        msg: &[u8],
    ) -> Result<(ExpectServerFinal, Vec<u8>), SaslError> {
        let attrs = attributes(msg)?;
        if attrs.first().map(|a| a.0) == Some(b'm') {
            return Err(SaslError::MandatoryExtension);
        }
        let [(b'r', nonce), (b's', salt), (b'i', iterations), ..] = attrs.as_slice() else {
            return Err(SaslError::Malformed("expected r=, s=, i= in order"));
        };
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(SaslError::NonceMismatch);
        }
        if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(SaslError::Malformed("nonce has non-printable characters"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| SaslError::Malformed("salt is not base64"))?;
        if salt.is_empty() {
            return Err(SaslError::Malformed("empty salt"));
        }
        if !iterations.bytes().all(|b| b.is_ascii_digit()) || iterations.is_empty() {
            return Err(SaslError::Malformed("iteration count is not a number"));
        }
        let iterations: u32 = iterations.parse().unwrap_or(u32::MAX);
        if !(SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&iterations) {
            return Err(SaslError::Iterations(iterations));
        }
        let server_first =
            std::str::from_utf8(msg).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let without_proof = format!("c={},r={}", B64.encode(GS2_HEADER), nonce);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, server_first, without_proof
        );

        let keys = ScramKeys::derive(
            self.hash,
            self.password.expose().as_bytes(),
            &salt,
            iterations,
        );
        let client_signature = self.hash.hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = keys
            .client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_signature = self.hash.hmac(&keys.server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        Ok((
            ExpectServerFinal {
                expected_signature: server_signature,
            },
            message,
        ))
    }
}

/// Awaiting the server-final message.
#[derive(Clone)]
pub struct ExpectServerFinal {
    expected_signature: Vec<u8>,
}

impl fmt::Debug for ExpectServerFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpectServerFinal").finish_non_exhaustive()
    }
}

impl ExpectServerFinal {
    /// Verifies `v=signature` (or reports `e=error`). Success means the server knows the
    /// password: the exchange is complete.
    pub fn handle_server_final(self, msg: &[u8]) -> Result<(), SaslError> {
        let attrs = attributes(msg)?;
        match attrs.first() {
            Some((b'e', err)) => Err(SaslError::Server(err.to_string())),
            Some((b'v', sig)) => {
                let sig = B64
                    .decode(sig)
                    .map_err(|_| SaslError::Malformed("signature is not base64"))?;
                if constant_time_eq(&sig, &self.expected_signature) {
                    Ok(())
                } else {
                    Err(SaslError::BadServerSignature)
                }
            }
            _ => Err(SaslError::Malformed("expected v= or e=")),
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One SASL exchange for the driver, whatever the mechanism.
///
/// Call [`start`](Self::start) once and send its bytes; then pass every server response to
/// [`step`](Self::step) until it returns `Ok(None)` and [`is_complete`](Self::is_complete) is true.
#[derive(Debug)]
pub struct SaslSession {
    state: SessionState,
}

#[derive(Debug)]
enum SessionState {
    Plain(PlainClient),
    ScramStart {
        hash: ScramHash,
        username: String,
        password: Secret,
    },
    PlainSent,
    ScramFirst(ExpectServerFirst),
    ScramFinal(ExpectServerFinal),
    Done,
    Failed,
}

impl SessionState {
    fn name(&self) -> &'static str {
        match self {
            SessionState::Plain(_) | SessionState::ScramStart { .. } => "not started",
            SessionState::PlainSent => "PLAIN sent",
            SessionState::ScramFirst(_) => "awaiting server-first",
            SessionState::ScramFinal(_) => "awaiting server-final",
            SessionState::Done => "complete",
            SessionState::Failed => "failed",
        }
    }
}

impl SaslSession {
    /// A session for `creds`.
    pub fn new(creds: &SaslCredentials) -> SaslSession {
        let state = match creds.mechanism {
            SaslMechanism::Plain => SessionState::Plain(PlainClient::new(
                &creds.authzid,
                &creds.username,
                creds.password.clone(),
            )),
            SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => SessionState::ScramStart {
                hash: if creds.mechanism == SaslMechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                },
                username: creds.username.clone(),
                password: creds.password.clone(),
            },
        };
        SaslSession { state }
    }

    /// The first message to send.
    pub fn start(&mut self, rng: &mut dyn RandomSource) -> Result<Vec<u8>, SaslError> {
        match std::mem::replace(&mut self.state, SessionState::Failed) {
            SessionState::Plain(p) => {
                self.state = SessionState::PlainSent;
                Ok(p.message())
            }
            SessionState::ScramStart {
                hash,
                username,
                password,
            } => {
                let (next, msg) = ScramClient::start(hash, &username, password, rng)?;
                self.state = SessionState::ScramFirst(next);
                Ok(msg)
            }
            other => {
                let name = other.name();
                self.state = other;
                Err(SaslError::UnexpectedMessage(name))
            }
        }
    }

    /// Handles a server response; returns the next message to send, or `None` when the
    /// exchange is complete. Any error leaves the session failed.
    pub fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, SaslError> {
        match std::mem::replace(&mut self.state, SessionState::Failed) {
            // PLAIN: the broker's answer carries no data; its error code tells failure.
            SessionState::PlainSent => {
                self.state = SessionState::Done;
                Ok(None)
            }
            SessionState::ScramFirst(s) => {
                let (next, msg) = s.handle_server_first(server)?;
                self.state = SessionState::ScramFinal(next);
                Ok(Some(msg))
            }
            SessionState::ScramFinal(s) => {
                s.handle_server_final(server)?;
                self.state = SessionState::Done;
                Ok(None)
            }
            other => Err(SaslError::UnexpectedMessage(other.name())),
        }
    }

    /// Whether the exchange finished successfully (for PLAIN: the broker's response arrived).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, SessionState::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use proptest::prelude::*;

    const RFC7677_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn rfc7677_sha256_vector() {
        let (state, first) = ScramClient::start_with_nonce(
            ScramHash::Sha256,
            "user",
            Secret::new("pencil"),
            "rOprNGfwEbeRWgbNEkqO",
        )
        .unwrap();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let (state, fin) = state
            .handle_server_first(RFC7677_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        state
            .handle_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    fn rfc_state_final() -> ExpectServerFinal {
        // PBKDF2 is slow in debug builds: derive once for all the tests that use this state.
        static STATE: std::sync::OnceLock<ExpectServerFinal> = std::sync::OnceLock::new();
        STATE.get_or_init(rfc_state_final_uncached).clone()
    }

    fn rfc_state_final_uncached() -> ExpectServerFinal {
        let (state, _) = ScramClient::start_with_nonce(
            ScramHash::Sha256,
            "user",
            Secret::new("pencil"),
            "rOprNGfwEbeRWgbNEkqO",
        )
        .unwrap();
        state
            .handle_server_first(RFC7677_SERVER_FIRST.as_bytes())
            .unwrap()
            .0
    }

    #[test]
    fn wrong_server_signature_fails() {
        // One character changed.
        assert_eq!(
            rfc_state_final()
                .handle_server_final(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(SaslError::BadServerSignature)
        );
        assert_eq!(
            rfc_state_final().handle_server_final(b"v=AAAA"),
            Err(SaslError::BadServerSignature)
        );
        assert_eq!(
            rfc_state_final().handle_server_final(b"e=invalid-proof"),
            Err(SaslError::Server("invalid-proof".into()))
        );
        assert!(matches!(
            rfc_state_final().handle_server_final(b"x"),
            Err(SaslError::Malformed(_))
        ));
    }

    fn first_state() -> ExpectServerFirst {
        ScramClient::start_with_nonce(ScramHash::Sha256, "u", Secret::new("p"), "abc")
            .unwrap()
            .0
    }

    #[test]
    fn server_first_is_checked() {
        let cases: &[(&str, SaslError)] = &[
            ("r=xyzdef,s=QUJD,i=4096", SaslError::NonceMismatch),
            ("r=abc,s=QUJD,i=4096", SaslError::NonceMismatch),
            ("r=abcdef,s=QUJD,i=4095", SaslError::Iterations(4095)),
            ("r=abcdef,s=QUJD,i=16385", SaslError::Iterations(16385)),
            (
                "r=abcdef,s=QUJD,i=99999999999999",
                SaslError::Iterations(u32::MAX),
            ),
            (
                "m=ext,r=abcdef,s=QUJD,i=4096",
                SaslError::MandatoryExtension,
            ),
            (
                "r=abcdef,s=!!!,i=4096",
                SaslError::Malformed("salt is not base64"),
            ),
            ("r=abcdef,s=,i=4096", SaslError::Malformed("empty salt")),
            (
                "r=abcdef,s=QUJD,i=-1",
                SaslError::Malformed("iteration count is not a number"),
            ),
            (
                "r=abcdef,i=4096,s=QUJD",
                SaslError::Malformed("expected r=, s=, i= in order"),
            ),
            (
                "r=abcdef,s=QUJD",
                SaslError::Malformed("expected r=, s=, i= in order"),
            ),
            ("", SaslError::Malformed("attribute is not `x=value`")),
        ];
        for (msg, want) in cases {
            assert_eq!(
                first_state()
                    .handle_server_first(msg.as_bytes())
                    .unwrap_err(),
                *want,
                "{msg}"
            );
        }
        assert!(first_state()
            .handle_server_first(&vec![b'a'; 10_000])
            .is_err());
        assert!(first_state().handle_server_first(&[0xff, 0xfe]).is_err());
        // Extensions after i= are allowed.
        assert!(first_state()
            .handle_server_first(b"r=abcdef,s=QUJD,i=4096,x=ext")
            .is_ok());
    }

    #[test]
    fn usernames_are_escaped() {
        assert_eq!(escape_username("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(unescape_username("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_username("a=2"), None);
        assert_eq!(unescape_username("a=41"), None);
        let (_, first) =
            ScramClient::start_with_nonce(ScramHash::Sha512, "x,=y", Secret::new("p"), "n")
                .unwrap();
        assert_eq!(first, b"n,,n=x=2C=3Dy,r=n");
        assert_eq!(
            ScramClient::start_with_nonce(ScramHash::Sha256, "u", Secret::new("p"), "a,b")
                .unwrap_err(),
            SaslError::InvalidNonce
        );
    }

    #[test]
    fn plain_message_and_session() {
        let p = PlainClient::new("", "alice", Secret::new("pw"));
        assert_eq!(p.message(), b"\0alice\0pw");
        assert!(!format!("{p:?}").contains("pw\""));
        let creds = SaslCredentials {
            mechanism: SaslMechanism::Plain,
            authzid: "admin".into(),
            username: "alice".into(),
            password: Secret::new("pw"),
        };
        let mut s = SaslSession::new(&creds);
        let mut rng = SeededRng::new(1);
        assert_eq!(s.start(&mut rng).unwrap(), b"admin\0alice\0pw");
        assert!(!s.is_complete());
        assert_eq!(s.step(b""), Ok(None));
        assert!(s.is_complete());
        assert!(matches!(s.step(b""), Err(SaslError::UnexpectedMessage(_))));
        assert!(matches!(
            s.start(&mut rng),
            Err(SaslError::UnexpectedMessage(_))
        ));
    }

    /// A minimal SCRAM server, written from RFC 5802, to run the client against.
    struct TestServer {
        hash: ScramHash,
        username: String,
        salt: Vec<u8>,
        iterations: u32,
        keys: ScramKeys,
    }

    impl TestServer {
        fn new(hash: ScramHash, username: &str, password: &str) -> TestServer {
            let salt = b"some-salt-bytes".to_vec();
            TestServer {
                hash,
                username: username.into(),
                keys: ScramKeys::derive(hash, password.as_bytes(), &salt, 4096),
                salt,
                iterations: 4096,
            }
        }

        /// Returns (server-first, state for the final step).
        fn first(&self, client_first: &[u8]) -> Result<(String, (String, String)), String> {
            let text = std::str::from_utf8(client_first).map_err(|e| e.to_string())?;
            let bare = text.strip_prefix("n,,").ok_or("bad gs2 header")?;
            let (n, r) = bare.split_once(',').ok_or("bad client-first")?;
            let user = unescape_username(n.strip_prefix("n=").ok_or("no n=")?).ok_or("escape")?;
            if user != self.username {
                return Err(format!("unknown user {user}"));
            }
            let nonce = format!("{}srvNONCE", r.strip_prefix("r=").ok_or("no r=")?);
            let server_first = format!(
                "r={nonce},s={},i={}",
                B64.encode(&self.salt),
                self.iterations
            );
            Ok((server_first.clone(), (bare.to_string(), server_first)))
        }

        fn last(&self, state: &(String, String), client_final: &[u8]) -> Result<String, String> {
            let text = std::str::from_utf8(client_final).map_err(|e| e.to_string())?;
            let (without_proof, proof) = text.rsplit_once(",p=").ok_or("no proof")?;
            let auth = format!("{},{},{}", state.0, state.1, without_proof);
            let sig = self.hash.hmac(&self.keys.stored_key, auth.as_bytes());
            let proof = B64.decode(proof).map_err(|e| e.to_string())?;
            let client_key: Vec<u8> = proof.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
            if self.hash.hash(&client_key) != self.keys.stored_key {
                return Ok("e=invalid-proof".into());
            }
            let server_sig = self.hash.hmac(&self.keys.server_key, auth.as_bytes());
            Ok(format!("v={}", B64.encode(server_sig)))
        }
    }

    fn run(
        mechanism: SaslMechanism,
        server: &TestServer,
        user: &str,
        password: &str,
        seed: u64,
    ) -> Result<(), SaslError> {
        let creds = SaslCredentials {
            mechanism,
            authzid: String::new(),
            username: user.into(),
            password: Secret::new(password),
        };
        let mut session = SaslSession::new(&creds);
        let mut rng = SeededRng::new(seed);
        let first = session.start(&mut rng)?;
        let (server_first, st) = server.first(&first).expect("server accepts client-first");
        let fin = session
            .step(server_first.as_bytes())?
            .expect("client-final");
        let server_final = server.last(&st, &fin).expect("server parses client-final");
        assert_eq!(session.step(server_final.as_bytes())?, None);
        assert!(session.is_complete());
        Ok(())
    }

    #[test]
    fn round_trip_with_test_server() {
        for (mech, hash) in [
            (SaslMechanism::ScramSha256, ScramHash::Sha256),
            (SaslMechanism::ScramSha512, ScramHash::Sha512),
        ] {
            let server = TestServer::new(hash, "al,i=ce", "pässwörd");
            run(mech, &server, "al,i=ce", "pässwörd", 1).unwrap();
            // Wrong password: the server refuses the proof.
            assert_eq!(
                run(mech, &server, "al,i=ce", "wrong", 2),
                Err(SaslError::Server("invalid-proof".into()))
            );
        }
    }

    #[test]
    fn server_without_the_password_is_caught() {
        // An impostor who knows the stored key (e.g. from a leaked credential store) but not
        // the server key cannot produce the server signature.
        let real = TestServer::new(ScramHash::Sha256, "u", "secret");
        let mut fake = TestServer::new(ScramHash::Sha256, "u", "secret");
        fake.keys.server_key = vec![0; 32];
        let creds = SaslCredentials {
            mechanism: SaslMechanism::ScramSha256,
            authzid: String::new(),
            username: "u".into(),
            password: Secret::new("secret"),
        };
        let mut session = SaslSession::new(&creds);
        let first = session.start(&mut SeededRng::new(4)).unwrap();
        let (sf, st) = fake.first(&first).unwrap();
        let fin = session.step(sf.as_bytes()).unwrap().unwrap();
        let bad_final = fake.last(&st, &fin).unwrap();
        assert_eq!(
            session.step(bad_final.as_bytes()),
            Err(SaslError::BadServerSignature)
        );
        assert!(!session.is_complete());
        let _ = real;
    }

    #[test]
    fn nonces_come_from_the_rng() {
        let creds = SaslCredentials {
            mechanism: SaslMechanism::ScramSha256,
            authzid: String::new(),
            username: "u".into(),
            password: Secret::new("p"),
        };
        let a = SaslSession::new(&creds)
            .start(&mut SeededRng::new(1))
            .unwrap();
        let b = SaslSession::new(&creds)
            .start(&mut SeededRng::new(1))
            .unwrap();
        let c = SaslSession::new(&creds)
            .start(&mut SeededRng::new(2))
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!format!("{:?}", SaslSession::new(&creds)).contains("\"p\""));
    }

    proptest! {
        // PBKDF2 is slow in debug builds: few cases.
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn scram_round_trips_for_any_credentials(
            user in "\\PC{1,20}",
            password in "\\PC{0,20}",
            sha512 in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (mech, hash) = if sha512 {
                (SaslMechanism::ScramSha512, ScramHash::Sha512)
            } else {
                (SaslMechanism::ScramSha256, ScramHash::Sha256)
            };
            let server = TestServer::new(hash, &user, &password);
            prop_assert_eq!(run(mech, &server, &user, &password, seed), Ok(()));
        }
    }

    proptest! {
        #[test]
        fn escape_round_trips(name in "\\PC{0,30}") {
            let esc = escape_username(&name);
            prop_assert!(!esc.contains(','));
            prop_assert_eq!(unescape_username(&esc), Some(name));
        }

        #[test]
        fn hostile_server_first_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = first_state().handle_server_first(&msg);
        }

        #[test]
        fn hostile_server_final_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = rfc_state_final().handle_server_final(&msg);
        }
    }
}
