//! Typed configuration of the client, the producer and the consumer.
//!
//! Plain structs with `Default` and `&mut self -> &mut Self` setters; each setter's doc gives the
//! default, the unit and the Java property it matches. Getters are named `get_<field>`.
//!
//! ```
//! use std::time::Duration;
//! use kafka_client::config::{Acks, ProducerConfig};
//!
//! let mut cfg = ProducerConfig::default();
//! cfg.linger(Duration::from_millis(10)).acks(Acks::All);
//! cfg.client_mut().bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
//! assert!(cfg.validate().is_ok());
//!
//! let cfg = ProducerConfig::from_properties_str(
//!     "bootstrap.servers=127.0.0.1:9092\nlinger.ms=10\ncompression.type=zstd\n",
//! )
//! .unwrap();
//! assert_eq!(*cfg.get_linger(), Duration::from_millis(10));
//! ```
//!
//! # Properties
//! `from_properties` / `from_properties_str` accept the Java client's keys (`linger.ms`,
//! `bootstrap.servers`, ...) plus a few of ours for settings Java lacks (each documented on its
//! setter). Durations are in the unit of the key's suffix (`.ms`), sizes in bytes.
//!
//! **Unknown keys are an error** ([`ConfigError::UnknownKey`]), because a mistyped key silently
//! ignored is a misconfigured production system. Keys that only make sense to the Java client
//! (serializer classes, interceptors, metric reporters, JMX, ...) are listed in
//! [`IGNORED_JAVA_KEYS`] and skipped, so a Java properties file can be used unchanged.
//!
//! # Validation
//! `validate()` rejects contradictions with [`ConfigError`] and returns the softer findings as
//! [`ConfigWarning`]s for the caller to log. The driver validates when it is built.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use kafka_wire::Codec;

/// An invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A property key this client does not know.
    #[error("unknown configuration key `{key}`")]
    UnknownKey { key: String },
    /// A property value that does not parse for its key. Secret values are never echoed.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    /// A line of a properties text that is not `key=value`.
    #[error("line {line} of the properties is not `key=value`")]
    Syntax { line: usize },
    /// Settings that contradict each other, or a value out of its range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A legal but doubtful configuration, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigWarning {
    /// Idempotence was not set and is off because other settings contradict it (Java does the
    /// same and logs it).
    IdempotenceImplicitlyDisabled { reason: String },
    /// The transaction timeout is not below the consumer session timeout of a consume-transform-
    /// produce loop (defaults 40 s and 45 s; see SEMANTICS.md).
    TransactionTimeoutNotBelowSession,
    /// SASL credentials were given but the security protocol does not use SASL.
    SaslCredentialsUnused,
    /// SASL PLAIN sends the password in clear over a plaintext connection.
    PlainPasswordInClear,
    /// Auto-commit is enabled but there is no group id to commit to.
    AutoCommitWithoutGroup,
    /// A setting that has no effect in the chosen mode.
    Ignored {
        key: &'static str,
        reason: &'static str,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::IdempotenceImplicitlyDisabled { reason } => {
                write!(f, "idempotence disabled: {reason}")
            }
            ConfigWarning::TransactionTimeoutNotBelowSession => f.write_str(
                "transaction.timeout.ms should stay below the consumer's session.timeout.ms",
            ),
            ConfigWarning::SaslCredentialsUnused => {
                f.write_str("SASL credentials set but security.protocol does not use SASL")
            }
            ConfigWarning::PlainPasswordInClear => {
                f.write_str("SASL PLAIN over SASL_PLAINTEXT sends the password in clear")
            }
            ConfigWarning::AutoCommitWithoutGroup => {
                f.write_str("enable.auto.commit has no effect without group.id")
            }
            ConfigWarning::Ignored { key, reason } => write!(f, "{key} is ignored: {reason}"),
        }
    }
}

/// Java client keys accepted by `from_properties` and ignored: they configure Java classes or
/// Java-only machinery with no meaning here.
pub const IGNORED_JAVA_KEYS: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
    "metric.reporters",
    "metrics.num.samples",
    "metrics.recording.level",
    "metrics.sample.window.ms",
    "auto.include.jmx.reporter",
    "enable.metrics.push",
    "sasl.login.class",
    "sasl.login.callback.handler.class",
    "sasl.client.callback.handler.class",
    "security.providers",
    "ssl.engine.factory.class",
    "ssl.provider",
    "ssl.secure.random.implementation",
    "ssl.keymanager.algorithm",
    "ssl.trustmanager.algorithm",
    "send.buffer.bytes",
    "receive.buffer.bytes",
    "client.dns.lookup",
];

/// A secret string (a password, a private key). Its `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a setter of a setting of type `T` accepts: a `T` itself (so an integer literal is read
/// as the setting's integer type), a `T` for an optional setting, and `&str` for strings.
pub trait SetTo<T> {
    /// The value to store.
    fn set_to(self) -> T;
}

impl<T> SetTo<T> for T {
    fn set_to(self) -> T {
        self
    }
}

impl<T> SetTo<Option<T>> for T {
    fn set_to(self) -> Option<T> {
        Some(self)
    }
}

impl SetTo<String> for &str {
    fn set_to(self) -> String {
        self.to_string()
    }
}

impl SetTo<Option<String>> for &str {
    fn set_to(self) -> Option<String> {
        Some(self.to_string())
    }
}

/// Parsing of one property value into a setting's type.
trait PropValue: Sized {
    fn parse_prop(s: &str) -> Result<Self, String>;
}

/// Milliseconds, as in Java's `*.ms` keys.
impl PropValue for Duration {
    fn parse_prop(s: &str) -> Result<Self, String> {
        let ms: u64 = s
            .parse()
            .map_err(|_| "expected a non-negative number of milliseconds".to_string())?;
        Ok(Duration::from_millis(ms))
    }
}

macro_rules! int_prop {
    ($($t:ty),*) => {$(
        impl PropValue for $t {
            fn parse_prop(s: &str) -> Result<Self, String> {
                s.parse().map_err(|_| format!(
                    "expected an integer in {}..={}", <$t>::MIN, <$t>::MAX
                ))
            }
        }
    )*};
}
int_prop!(usize, u32, i32);

impl PropValue for bool {
    fn parse_prop(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("expected `true` or `false`".into()),
        }
    }
}

impl PropValue for String {
    fn parse_prop(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
}

impl PropValue for PathBuf {
    fn parse_prop(s: &str) -> Result<Self, String> {
        Ok(PathBuf::from(s))
    }
}

impl PropValue for Secret {
    fn parse_prop(s: &str) -> Result<Self, String> {
        Ok(Secret(s.to_string()))
    }
}

/// Comma-separated, blanks trimmed, empty items dropped.
impl PropValue for Vec<String> {
    fn parse_prop(s: &str) -> Result<Self, String> {
        Ok(s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect())
    }
}

/// An empty value means "not set".
impl<T: PropValue> PropValue for Option<T> {
    fn parse_prop(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            Ok(None)
        } else {
            T::parse_prop(s).map(Some)
        }
    }
}

impl PropValue for Codec {
    fn parse_prop(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "none" => Codec::None,
            "gzip" => Codec::Gzip,
            "snappy" => Codec::Snappy,
            "lz4" => Codec::Lz4,
            "zstd" => Codec::Zstd,
            _ => return Err("expected none, gzip, snappy, lz4 or zstd".into()),
        })
    }
}

/// Declares a config struct: fields, `Default`, setters, getters and the property dispatch.
macro_rules! config_struct {
    (
        $(#[$sm:meta])*
        pub struct $name:ident {
            $( @nested $nf:ident : $nty:ty; )?
            $(
                $(#[$fm:meta])*
                $f:ident / $g:ident : $ty:ty = $def:expr, $key:literal $(| $alias:literal)*;
            )*
        }
    ) => {
        $(#[$sm])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( pub(crate) $nf: $nty, )?
            $( pub(crate) $f: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $( $nf: <$nty>::default(), )?
                    $( $f: $def, )*
                }
            }
        }

        impl $name {
            $(
                $(#[$fm])*
                #[doc = ""]
                #[doc = concat!("Property: `", $key, "`", $(", also `", $alias, "`",)*  ".")]
                pub fn $f(&mut self, value: impl SetTo<$ty>) -> &mut Self {
                    self.$f = value.set_to();
                    self
                }
            )*

            $(
                #[doc = concat!("The value set by [`", stringify!($f), "`](Self::", stringify!($f), ").")]
                pub fn $g(&self) -> &$ty {
                    &self.$f
                }
            )*

            /// Every property key this struct accepts (its nested config's keys excluded).
            pub fn property_keys() -> &'static [&'static str] {
                &[$($key, $($alias,)*)*]
            }

            /// Applies one property. `Ok(false)`: the key is not one of ours.
            pub(crate) fn set_property(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
                match key {
                    $(
                        $key $(| $alias)* => {
                            self.$f = PropValue::parse_prop(value).map_err(|reason| {
                                ConfigError::InvalidValue {
                                    key: key.to_string(),
                                    value: if is_secret_key(key) {
                                        "<redacted>".to_string()
                                    } else {
                                        value.to_string()
                                    },
                                    reason,
                                }
                            })?;
                            return Ok(true);
                        }
                    )*
                    _ => {}
                }
                $( if self.$nf.set_property(key, value)? { return Ok(true); } )?
                Ok(false)
            }

            /// A config from Java-style `(key, value)` pairs applied over the defaults. Keys and
            /// values are trimmed. Unknown keys are an error; keys in [`IGNORED_JAVA_KEYS`] are
            /// skipped. Does not [`validate`](Self::validate).
            pub fn from_properties<I, K, V>(props: I) -> Result<Self, ConfigError>
            where
                I: IntoIterator<Item = (K, V)>,
                K: AsRef<str>,
                V: AsRef<str>,
            {
                let mut cfg = Self::default();
                for (k, v) in props {
                    cfg.apply_property(k.as_ref(), v.as_ref())?;
                }
                Ok(cfg)
            }

            /// Like [`from_properties`](Self::from_properties), from the text of a Java
            /// `.properties` file: one `key=value` (or `key: value`) per line, `#` and `!` start
            /// comments. Line continuations and escapes are not supported.
            pub fn from_properties_str(text: &str) -> Result<Self, ConfigError> {
                Self::from_properties(parse_properties(text)?)
            }

            /// Applies one `(key, value)` property to this config.
            pub fn apply_property(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
                let (key, value) = (key.trim(), value.trim());
                if self.set_property(key, value)? || IGNORED_JAVA_KEYS.contains(&key) {
                    Ok(())
                } else {
                    Err(ConfigError::UnknownKey { key: key.to_string() })
                }
            }
        }
    };
}

/// Whether the value of `key` is secret and must not be echoed in errors.
fn is_secret_key(key: &str) -> bool {
    key.contains("password") || key == "sasl.jaas.config" || key == "ssl.keystore.key"
}

/// Splits the text of a `.properties` file into `(key, value)` pairs.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let sep = line
            .find(['=', ':'])
            .ok_or(ConfigError::Syntax { line: i + 1 })?;
        let (k, v) = (line[..sep].trim(), line[sep + 1..].trim());
        if k.is_empty() {
            return Err(ConfigError::Syntax { line: i + 1 });
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

macro_rules! keyword_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident { $( $(#[$vm:meta])* $v:ident => [$($word:literal),+], )* }
        expect $expect:literal;
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vm])* $v, )*
        }

        impl $name {
            /// The first spelling accepted in properties (Java's).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$v => [$($word),+][0], )*
                }
            }
        }

        impl PropValue for $name {
            fn parse_prop(s: &str) -> Result<Self, String> {
                let lower = s.to_ascii_lowercase();
                $( if [$($word),+].contains(&lower.as_str()) { return Ok($name::$v); } )*
                Err($expect.to_string())
            }
        }
    };
}

keyword_enum! {
    /// How connections are secured (`security.protocol`).
    pub enum SecurityProtocol {
        /// No TLS, no SASL.
        #[default]
        Plaintext => ["plaintext"],
        /// TLS, no SASL.
        Ssl => ["ssl"],
        /// SASL over a plaintext connection.
        SaslPlaintext => ["sasl_plaintext"],
        /// SASL over TLS.
        SaslSsl => ["sasl_ssl"],
    }
    expect "expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL";
}

impl SecurityProtocol {
    /// Whether this protocol authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
    /// Whether this protocol uses TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

keyword_enum! {
    /// The SASL mechanism (`sasl.mechanism`).
    pub enum SaslMechanism {
        /// RFC 4616.
        #[default]
        Plain => ["plain"],
        /// RFC 7677.
        ScramSha256 => ["scram-sha-256"],
        /// RFC 5802 with SHA-512.
        ScramSha512 => ["scram-sha-512"],
    }
    expect "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (GSSAPI and OAUTHBEARER are not supported)";
}

impl SaslMechanism {
    /// The mechanism's name on the wire (`SaslHandshake`).
    pub fn wire_name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

keyword_enum! {
    /// How many replicas must have a record before the broker acknowledges it (`acks`).
    pub enum Acks {
        /// Every in-sync replica (`all` / `-1`). Required by idempotence.
        #[default]
        All => ["all", "-1"],
        /// The leader only (`1`).
        One => ["1"],
        /// No acknowledgement (`0`): the broker sends no response.
        None => ["0"],
    }
    expect "expected all, -1, 1 or 0";
}

impl Acks {
    /// The value of the `acks` field of a Produce request.
    pub fn wire_value(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::One => 1,
            Acks::None => 0,
        }
    }
}

keyword_enum! {
    /// How a partition is chosen for a record (`partitioner.class`, short names accepted).
    pub enum PartitionerChoice {
        /// Java's built-in behaviour: murmur2 of the key, sticky (KIP-480/794) without a key.
        #[default]
        Default => ["default", "murmur2", "sticky"],
        /// Sticky for every record, keys ignored (Java's `partitioner.ignore.keys=true`).
        UniformSticky => ["uniform_sticky", "uniform-sticky"],
        /// One record per partition in turn, keys ignored (Java's `RoundRobinPartitioner`).
        RoundRobin => ["round_robin", "round-robin", "org.apache.kafka.clients.producer.roundrobinpartitioner"],
    }
    expect "expected default, uniform_sticky or round_robin (or Java's RoundRobinPartitioner class)";
}

keyword_enum! {
    /// Which records a consumer reads (`isolation.level`).
    pub enum IsolationLevel {
        /// Everything, including records of open and aborted transactions (Java's default).
        #[default]
        ReadUncommitted => ["read_uncommitted"],
        /// Only committed records, up to the last stable offset.
        ReadCommitted => ["read_committed"],
    }
    expect "expected read_uncommitted or read_committed";
}

impl IsolationLevel {
    /// The `isolation_level` field of a Fetch / ListOffsets request.
    pub fn wire_value(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

keyword_enum! {
    /// Where a consumer starts when it has no valid committed offset (`auto.offset.reset`).
    pub enum AutoOffsetReset {
        /// The end of the partition (Java's default).
        #[default]
        Latest => ["latest"],
        /// The start of the partition.
        Earliest => ["earliest"],
        /// Fail with an error.
        None => ["none"],
    }
    expect "expected latest, earliest or none";
}

keyword_enum! {
    /// The group protocol (`group.protocol`).
    pub enum GroupProtocol {
        /// JoinGroup / SyncGroup with client-side balancers.
        #[default]
        Classic => ["classic"],
        /// The KIP-848 consumer protocol (ConsumerGroupHeartbeat, server-side assignors).
        Consumer => ["consumer"],
    }
    expect "expected classic or consumer";
}

/// The login module and options of a Java `sasl.jaas.config` value, e.g.
/// `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`.
/// Only the `PlainLoginModule` and `ScramLoginModule` modules are understood.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasConfig {
    /// The login module class name.
    pub module: String,
    /// The `username` option.
    pub username: Option<String>,
    /// The `password` option.
    pub password: Option<Secret>,
}

impl fmt::Debug for JaasConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JaasConfig")
            .field("module", &self.module)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

impl PropValue for JaasConfig {
    fn parse_prop(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let s = s.strip_suffix(';').unwrap_or(s).trim();
        let mut rest = s;
        let mut word = || -> Option<&str> {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (w, r) = rest.split_at(end);
            rest = r;
            (!w.is_empty()).then_some(w)
        };
        let module = word().ok_or("missing login module")?.to_string();
        let flag = word().ok_or("missing control flag")?;
        if !["required", "requisite", "sufficient", "optional"].contains(&flag) {
            return Err("control flag must be required, requisite, sufficient or optional".into());
        }
        if !(module.ends_with("PlainLoginModule") || module.ends_with("ScramLoginModule")) {
            return Err("only PlainLoginModule and ScramLoginModule are supported".into());
        }
        let mut cfg = JaasConfig {
            module,
            username: None,
            password: None,
        };
        let mut chars = rest.trim().chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c.is_whitespace() {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if chars.next() != Some('=') {
                return Err("options must be key=\"value\"".into());
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => value.push(chars.next().ok_or("dangling escape")?),
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err("unterminated quoted value".into());
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            match key.as_str() {
                "username" => cfg.username = Some(value),
                "password" => cfg.password = Some(Secret(value)),
                // Other options (e.g. tokenauth) are accepted and unused.
                _ => {}
            }
        }
        Ok(cfg)
    }
}

/// SASL credentials resolved from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    /// Authorization identity (PLAIN only); empty means "same as the user".
    pub authzid: String,
    pub username: String,
    pub password: Secret,
}

config_struct! {
    /// Settings common to every client: where the brokers are, timeouts, backoffs, limits and
    /// security.
    pub struct ClientConfig {
        /// Bootstrap `host:port` list. Default: empty (must be set). Comma-separated in
        /// properties.
        bootstrap_servers / get_bootstrap_servers: Vec<String> = Vec::new(), "bootstrap.servers";
        /// Client id sent in request headers. Default `kafka-rs`.
        client_id / get_client_id: String = "kafka-rs".to_string(), "client.id";
        /// How long a request may wait for its response. Default 30 s.
        request_timeout / get_request_timeout: Duration = Duration::from_secs(30), "request.timeout.ms";
        /// How long a TCP (+TLS) connection may take to set up. Default 10 s.
        connect_timeout / get_connect_timeout: Duration = Duration::from_secs(10), "socket.connection.setup.timeout.ms";
        /// First reconnect backoff to a broker. Default 50 ms.
        reconnect_backoff / get_reconnect_backoff: Duration = Duration::from_millis(50), "reconnect.backoff.ms";
        /// Largest reconnect backoff. Default 1 s.
        reconnect_backoff_max / get_reconnect_backoff_max: Duration = Duration::from_secs(1), "reconnect.backoff.max.ms";
        /// First backoff before retrying a failed request. Default 100 ms (Java's).
        retry_backoff / get_retry_backoff: Duration = Duration::from_millis(100), "retry.backoff.ms";
        /// Largest retry backoff. Default 1 s (Java's).
        retry_backoff_max / get_retry_backoff_max: Duration = Duration::from_secs(1), "retry.backoff.max.ms";
        /// Close connections idle this long. Default 9 min.
        connections_max_idle / get_connections_max_idle: Duration = Duration::from_secs(540), "connections.max.idle.ms";
        /// Largest request frame written, in bytes. Default 100 MiB. Ours (no Java equivalent).
        max_request_bytes / get_max_request_bytes: usize = 100 << 20, "max.request.bytes";
        /// Largest response frame read, in bytes; a larger size prefix drops the connection.
        /// Default 100 MiB. Ours (no Java equivalent).
        max_response_bytes / get_max_response_bytes: usize = 100 << 20, "max.response.bytes";
        /// Refresh metadata at least this often. Default 5 min.
        metadata_max_age / get_metadata_max_age: Duration = Duration::from_secs(300), "metadata.max.age.ms";
        /// Refresh metadata on errors at most this often, unless urgent. Default 5 s. Ours (no
        /// Java equivalent).
        metadata_min_refresh_interval / get_metadata_min_refresh_interval: Duration = Duration::from_secs(5), "metadata.min.refresh.interval.ms";
        /// Security protocol. Default `PLAINTEXT`.
        security_protocol / get_security_protocol: SecurityProtocol = SecurityProtocol::Plaintext, "security.protocol";
        /// SASL mechanism. Default `PLAIN` (Java's default, GSSAPI, is not supported).
        sasl_mechanism / get_sasl_mechanism: SaslMechanism = SaslMechanism::Plain, "sasl.mechanism";
        /// SASL user name; overrides the one in `sasl.jaas.config`. Default none. Ours.
        sasl_username / get_sasl_username: Option<String> = None, "sasl.username";
        /// SASL password (redacted in `Debug`); overrides the one in `sasl.jaas.config`.
        /// Default none. Ours.
        sasl_password / get_sasl_password: Option<Secret> = None, "sasl.password";
        /// SASL PLAIN authorization identity. Default none (act as the user). Ours.
        sasl_authzid / get_sasl_authzid: Option<String> = None, "sasl.authzid";
        /// Java JAAS login line (PlainLoginModule / ScramLoginModule with `username` and
        /// `password`). Default none.
        sasl_jaas_config / get_sasl_jaas_config: Option<JaasConfig> = None, "sasl.jaas.config";
        /// PEM file of CA certificates to trust. Default none: the platform's roots.
        ssl_truststore_location / get_ssl_truststore_location: Option<PathBuf> = None, "ssl.truststore.location";
        /// PEM CA certificates, inline. Default none.
        ssl_truststore_certificates / get_ssl_truststore_certificates: Option<String> = None, "ssl.truststore.certificates";
        /// Store type; only `PEM` is supported. Default `PEM`.
        ssl_truststore_type / get_ssl_truststore_type: String = "PEM".to_string(), "ssl.truststore.type";
        /// PEM file with the client certificate chain and private key. Default none.
        ssl_keystore_location / get_ssl_keystore_location: Option<PathBuf> = None, "ssl.keystore.location";
        /// PEM client certificate chain, inline. Default none.
        ssl_keystore_certificate_chain / get_ssl_keystore_certificate_chain: Option<String> = None, "ssl.keystore.certificate.chain";
        /// PEM private key, inline (redacted in `Debug`). Default none.
        ssl_keystore_key / get_ssl_keystore_key: Option<Secret> = None, "ssl.keystore.key";
        /// Store type; only `PEM` is supported. Default `PEM`.
        ssl_keystore_type / get_ssl_keystore_type: String = "PEM".to_string(), "ssl.keystore.type";
        /// Password of an encrypted private key (redacted in `Debug`). Default none.
        ssl_key_password / get_ssl_key_password: Option<Secret> = None, "ssl.key.password";
        /// `https` verifies the broker's host name against its certificate; empty disables that
        /// check only (the certificate chain is still verified against the trust store).
        /// Default `https`.
        ssl_endpoint_identification_algorithm / get_ssl_endpoint_identification_algorithm: String = "https".to_string(), "ssl.endpoint.identification.algorithm";
    }
}

impl ClientConfig {
    /// The SASL credentials to use, if the protocol uses SASL and a user name is configured
    /// (`sasl.username`/`sasl.password` win over `sasl.jaas.config`).
    pub fn sasl_credentials(&self) -> Option<SaslCredentials> {
        if !self.security_protocol.uses_sasl() {
            return None;
        }
        let jaas = self.sasl_jaas_config.as_ref();
        let username = self
            .sasl_username
            .clone()
            .or_else(|| jaas.and_then(|j| j.username.clone()))?;
        let password = self
            .sasl_password
            .clone()
            .or_else(|| jaas.and_then(|j| j.password.clone()))
            .unwrap_or_default();
        Some(SaslCredentials {
            mechanism: self.sasl_mechanism,
            authzid: self.sasl_authzid.clone().unwrap_or_default(),
            username,
            password,
        })
    }

    /// Rejects contradictions; returns the softer findings.
    pub fn validate(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = Vec::new();
        if self.bootstrap_servers.is_empty() {
            return Err(invalid("bootstrap.servers is empty"));
        }
        for server in &self.bootstrap_servers {
            parse_host_port(server).map_err(|reason| ConfigError::InvalidValue {
                key: "bootstrap.servers".into(),
                value: server.clone(),
                reason,
            })?;
        }
        if self.client_id.len() > i16::MAX as usize {
            return Err(invalid("client.id is longer than 32767 bytes"));
        }
        for (key, d) in [
            ("request.timeout.ms", self.request_timeout),
            ("socket.connection.setup.timeout.ms", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(&format!("{key} must be positive")));
            }
        }
        if self.reconnect_backoff_max < self.reconnect_backoff {
            return Err(invalid(
                "reconnect.backoff.max.ms is below reconnect.backoff.ms",
            ));
        }
        if self.retry_backoff_max < self.retry_backoff {
            return Err(invalid("retry.backoff.max.ms is below retry.backoff.ms"));
        }
        for (key, v) in [
            ("max.request.bytes", self.max_request_bytes),
            ("max.response.bytes", self.max_response_bytes),
        ] {
            // Frame sizes are i32 on the wire.
            if v < 1024 || v > i32::MAX as usize {
                return Err(invalid(&format!("{key} must be in 1024..=2147483647")));
            }
        }
        for (key, v) in [
            ("ssl.truststore.type", &self.ssl_truststore_type),
            ("ssl.keystore.type", &self.ssl_keystore_type),
        ] {
            if !v.eq_ignore_ascii_case("PEM") {
                return Err(ConfigError::InvalidValue {
                    key: key.into(),
                    value: v.clone(),
                    reason:
                        "only PEM stores are supported (convert JKS/PKCS12 with keytool/openssl)"
                            .into(),
                });
            }
        }
        if self.ssl_truststore_location.is_some() && self.ssl_truststore_certificates.is_some() {
            return Err(invalid(
                "set ssl.truststore.location or ssl.truststore.certificates, not both",
            ));
        }
        if self.ssl_keystore_location.is_some()
            && (self.ssl_keystore_certificate_chain.is_some() || self.ssl_keystore_key.is_some())
        {
            return Err(invalid(
                "set ssl.keystore.location or the inline ssl.keystore.certificate.chain/key, not both",
            ));
        }
        if self.ssl_keystore_certificate_chain.is_some() != self.ssl_keystore_key.is_some() {
            return Err(invalid(
                "ssl.keystore.certificate.chain and ssl.keystore.key go together",
            ));
        }
        if !matches!(
            self.ssl_endpoint_identification_algorithm
                .to_ascii_lowercase()
                .as_str(),
            "" | "https"
        ) {
            return Err(invalid(
                "ssl.endpoint.identification.algorithm must be https or empty",
            ));
        }
        let has_creds = self.sasl_username.is_some()
            || self.sasl_password.is_some()
            || self.sasl_jaas_config.is_some();
        if self.security_protocol.uses_sasl() {
            let creds = self
                .sasl_credentials()
                .ok_or_else(|| invalid("a SASL security.protocol needs a user name (sasl.username or sasl.jaas.config)"))?;
            if let Some(jaas) = &self.sasl_jaas_config {
                let plain_module = jaas.module.ends_with("PlainLoginModule");
                if plain_module != (creds.mechanism == SaslMechanism::Plain) {
                    return Err(invalid(
                        "sasl.jaas.config login module does not match sasl.mechanism",
                    ));
                }
            }
            if self.security_protocol == SecurityProtocol::SaslPlaintext
                && creds.mechanism == SaslMechanism::Plain
            {
                warnings.push(ConfigWarning::PlainPasswordInClear);
            }
        } else if has_creds {
            warnings.push(ConfigWarning::SaslCredentialsUnused);
        }
        Ok(warnings)
    }
}

fn invalid(msg: &str) -> ConfigError {
    ConfigError::Invalid(msg.to_string())
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn parse_host_port(s: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[` in IPv6 address")?;
        let port = rest[end + 1..]
            .strip_prefix(':')
            .ok_or("expected `[host]:port`")?;
        (&rest[..end], port)
    } else {
        s.rsplit_once(':').ok_or("expected `host:port`")?
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let port: u16 = port.parse().map_err(|_| "port must be in 1..=65535")?;
    if port == 0 {
        return Err("port must be in 1..=65535".into());
    }
    Ok((host, port))
}

config_struct! {
    /// Producer settings, with the common [`ClientConfig`] nested (see
    /// [`client_mut`](Self::client_mut)); properties of both are accepted.
    pub struct ProducerConfig {
        @nested client: ClientConfig;
        /// Acknowledgements required. Default [`Acks::All`].
        acks / get_acks: Acks = Acks::All, "acks";
        /// Idempotent writes (sequence numbers, no duplicates on retry). Default: on, unless
        /// left unset while `acks`, `retries` or the in-flight limit contradict it (then off, with
        /// a [`ConfigWarning`], as in Java). Setting it `true` explicitly with contradicting
        /// settings fails validation.
        enable_idempotence / get_enable_idempotence: Option<bool> = None, "enable.idempotence";
        /// How long a partition's batch may wait for more records. Default 5 ms (Java 4.x).
        linger / get_linger: Duration = Duration::from_millis(5), "linger.ms";
        /// Target batch size per partition, in bytes (before compression). Default 16384.
        batch_size / get_batch_size: usize = 16384, "batch.size";
        /// Memory bound of records waiting to be sent, in bytes; producing blocks (or fails
        /// after `max.block.ms`) beyond it. Default 32 MiB.
        buffer_memory / get_buffer_memory: usize = 32 << 20, "buffer.memory";
        /// How long producing may wait for buffer space or metadata. Default 60 s.
        max_block / get_max_block: Duration = Duration::from_secs(60), "max.block.ms";
        /// Largest request (and so record) size, in bytes. Default 1 MiB.
        max_request_size / get_max_request_size: usize = 1 << 20, "max.request.size";
        /// Batches in flight per partition (Java counts per connection). Default 5, at most 5
        /// with idempotence.
        max_in_flight_per_partition / get_max_in_flight_per_partition: usize = 5, "max.in.flight.requests.per.connection";
        /// Compression codec. Default none.
        compression / get_compression: Codec = Codec::None, "compression.type";
        /// gzip level 1..=9. Default none: the codec's default.
        compression_gzip_level / get_compression_gzip_level: Option<i32> = None, "compression.gzip.level";
        /// lz4 level 1..=17. Default none: the codec's default (9).
        compression_lz4_level / get_compression_lz4_level: Option<i32> = None, "compression.lz4.level";
        /// zstd level -131072..=22. Default none: the codec's default (3).
        compression_zstd_level / get_compression_zstd_level: Option<i32> = None, "compression.zstd.level";
        /// Upper bound on the time from produce to acknowledgement or failure, retries
        /// included. Default 120 s.
        delivery_timeout / get_delivery_timeout: Duration = Duration::from_secs(120), "delivery.timeout.ms";
        /// Retries of a failed batch (bounded by `delivery.timeout.ms` anyway). Default
        /// `u32::MAX`; `0` disables retries (and implicitly idempotence).
        retries / get_retries: u32 = u32::MAX, "retries";
        /// Partitioner. Default [`PartitionerChoice::Default`].
        partitioner / get_partitioner: PartitionerChoice = PartitionerChoice::Default, "partitioner.class";
        /// Ignore keys when partitioning (uniform sticky for all records). Default false.
        partitioner_ignore_keys / get_partitioner_ignore_keys: bool = false, "partitioner.ignore.keys";
        /// KIP-794: prefer partitions with shorter queues. Default true.
        partitioner_adaptive / get_partitioner_adaptive: bool = true, "partitioner.adaptive.partitioning.enable";
        /// KIP-794: a partition whose leader has not accepted a batch for this long is skipped;
        /// zero disables the check. Default 0.
        partitioner_availability_timeout / get_partitioner_availability_timeout: Duration = Duration::ZERO, "partitioner.availability.timeout.ms";
        /// Transactional id, stable across restarts (fencing relies on it). Default none.
        transactional_id / get_transactional_id: Option<String> = None, "transactional.id";
        /// Transaction timeout sent to the coordinator. Default 40 s (below the 45 s consumer
        /// session timeout; Java's default is 60 s).
        transaction_timeout / get_transaction_timeout: Duration = Duration::from_secs(40), "transaction.timeout.ms";
        /// Upper bound on `commit_transaction` and `abort_transaction`, from the call: a commit
        /// whose EndTxn is still unanswered then fails with `Error::OutcomeUnknown` (the epoch is
        /// bumped in the background, which settles the transaction on the coordinator), a
        /// commit still waiting for its batches or offsets fails with `Error::Timeout` and must
        /// be aborted, an abort returns `Error::Timeout` and keeps going (call it again to wait).
        /// Default 60 s (Java bounds these calls by `max.block.ms`, also 60 s).
        transaction_end_timeout / get_transaction_end_timeout: Duration = Duration::from_secs(60), "transaction.end.timeout.ms";
    }
}

impl ProducerConfig {
    /// The common settings.
    pub fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// The common settings, to change them.
    pub fn client_mut(&mut self) -> &mut ClientConfig {
        &mut self.client
    }

    /// Whether the producer is idempotent, after Java's rule for an unset
    /// `enable.idempotence` (on unless `acks`, `retries` or the in-flight limit contradict it).
    pub fn idempotent(&self) -> bool {
        match self.enable_idempotence {
            Some(on) => on,
            None => self.idempotence_conflict().is_none(),
        }
    }

    fn idempotence_conflict(&self) -> Option<&'static str> {
        if self.acks != Acks::All {
            Some("acks must be all")
        } else if self.max_in_flight_per_partition > 5 {
            Some("max.in.flight.requests.per.connection must be at most 5")
        } else if self.retries == 0 {
            Some("retries must be above 0")
        } else {
            None
        }
    }

    /// Whether a transactional id is set.
    pub fn transactional(&self) -> bool {
        self.transactional_id.is_some()
    }

    /// Rejects contradictions (in this and the common config); returns the softer findings.
    pub fn validate(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = self.client.validate()?;
        let conflict = self.idempotence_conflict();
        match (self.enable_idempotence, conflict) {
            (Some(true), Some(reason)) => {
                return Err(invalid(&format!("enable.idempotence=true but {reason}")))
            }
            (None, Some(reason)) => {
                if self.transactional() {
                    return Err(invalid(&format!(
                        "transactional.id needs idempotence, but {reason}"
                    )));
                }
                warnings.push(ConfigWarning::IdempotenceImplicitlyDisabled {
                    reason: reason.to_string(),
                })
            }
            _ => {}
        }
        if self.transactional() && self.enable_idempotence == Some(false) {
            return Err(invalid("transactional.id needs enable.idempotence"));
        }
        if let Some(id) = &self.transactional_id {
            if id.len() > i16::MAX as usize {
                return Err(invalid("transactional.id is longer than 32767 bytes"));
            }
        }
        if self.max_in_flight_per_partition == 0 {
            return Err(invalid(
                "max.in.flight.requests.per.connection must be at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch.size must be positive"));
        }
        if self.max_request_size > self.client.max_request_bytes {
            return Err(invalid("max.request.size exceeds max.request.bytes"));
        }
        if self.buffer_memory < self.batch_size {
            return Err(invalid("buffer.memory is below batch.size"));
        }
        // Java: delivery.timeout.ms >= linger.ms + request.timeout.ms.
        if self.delivery_timeout < self.linger.saturating_add(self.client.request_timeout) {
            return Err(invalid(
                "delivery.timeout.ms must be at least linger.ms + request.timeout.ms",
            ));
        }
        let ms = self.transaction_timeout.as_millis();
        if self.transactional() && (ms == 0 || ms > i32::MAX as u128) {
            return Err(invalid("transaction.timeout.ms must be in 1..=2147483647"));
        }
        let ms = self.transaction_end_timeout.as_millis();
        if ms == 0 || ms > i32::MAX as u128 {
            return Err(invalid(
                "transaction.end.timeout.ms must be in 1..=2147483647",
            ));
        }
        for (key, level, range) in [
            ("compression.gzip.level", self.compression_gzip_level, 1..=9),
            ("compression.lz4.level", self.compression_lz4_level, 1..=17),
            (
                "compression.zstd.level",
                self.compression_zstd_level,
                -131072..=22,
            ),
        ] {
            if let Some(l) = level {
                if !range.contains(&l) {
                    return Err(invalid(&format!(
                        "{key} must be in {}..={}",
                        range.start(),
                        range.end()
                    )));
                }
            }
        }
        if self.partitioner == PartitionerChoice::RoundRobin && self.partitioner_ignore_keys {
            warnings.push(ConfigWarning::Ignored {
                key: "partitioner.ignore.keys",
                reason: "the round-robin partitioner ignores keys anyway",
            });
        }
        Ok(warnings)
    }

    /// Warnings about this producer used in a consume-transform-produce loop with `consumer`.
    pub fn check_with_consumer(&self, consumer: &ConsumerConfig) -> Vec<ConfigWarning> {
        let mut w = Vec::new();
        if self.transactional()
            && consumer.group_protocol == GroupProtocol::Classic
            && self.transaction_timeout >= consumer.session_timeout
        {
            w.push(ConfigWarning::TransactionTimeoutNotBelowSession);
        }
        w
    }
}

config_struct! {
    /// Consumer settings, with the common [`ClientConfig`] nested (see
    /// [`client_mut`](Self::client_mut)); properties of both are accepted.
    pub struct ConsumerConfig {
        @nested client: ClientConfig;
        /// Consumer group id. Default none (direct assignment only).
        group_id / get_group_id: Option<String> = None, "group.id";
        /// Static membership id (KIP-345). Default none.
        group_instance_id / get_group_instance_id: Option<String> = None, "group.instance.id";
        /// Group protocol. Default [`GroupProtocol::Classic`].
        group_protocol / get_group_protocol: GroupProtocol = GroupProtocol::Classic, "group.protocol";
        /// The server-side assignor of the consumer protocol (KIP-848): `uniform` or `range`
        /// (or a custom one the broker knows). Default none: the broker's default (`uniform`).
        group_remote_assignor / get_group_remote_assignor: Option<String> = None, "group.remote.assignor";
        /// The balancers of the classic protocol, in order of preference: a comma-separated
        /// list of names as in Java (`range`, `roundrobin`, `sticky`, `cooperative-sticky`, or
        /// their Java class names; see [`crate::group::balancer_by_name`]), resolved at
        /// subscribe. `Consumer::set_balancers` overrides it. Default empty:
        /// cooperative-sticky alone.
        partition_assignment_strategy / get_partition_assignment_strategy: Vec<String> = Vec::new(), "partition.assignment.strategy";
        /// Rack of this client, for fetching from the closest replica (KIP-392). Default none.
        client_rack / get_client_rack: Option<String> = None, "client.rack";
        /// Isolation level. Default [`IsolationLevel::ReadUncommitted`] (Java's).
        isolation_level / get_isolation_level: IsolationLevel = IsolationLevel::ReadUncommitted, "isolation.level";
        /// Bytes a fetch waits for. Default 1.
        fetch_min_bytes / get_fetch_min_bytes: usize = 1, "fetch.min.bytes";
        /// Longest a fetch waits for `fetch.min.bytes`. Default 500 ms.
        fetch_max_wait / get_fetch_max_wait: Duration = Duration::from_millis(500), "fetch.max.wait.ms";
        /// Bytes per partition per fetch. Default 1 MiB.
        max_partition_fetch_bytes / get_max_partition_fetch_bytes: usize = 1 << 20, "max.partition.fetch.bytes";
        /// Bytes per fetch response. Default 50 MiB.
        fetch_max_bytes / get_fetch_max_bytes: usize = 50 << 20, "fetch.max.bytes";
        /// Bound on fetched but not yet consumed bytes; fetching pauses beyond it. Default
        /// 100 MiB. Ours (no Java equivalent).
        max_prefetch_bytes / get_max_prefetch_bytes: usize = 100 << 20, "max.prefetch.bytes";
        /// Where to start without a committed offset. Default [`AutoOffsetReset::Latest`].
        auto_offset_reset / get_auto_offset_reset: AutoOffsetReset = AutoOffsetReset::Latest, "auto.offset.reset";
        /// Commit offsets of earlier polls periodically. Default true.
        enable_auto_commit / get_enable_auto_commit: bool = true, "enable.auto.commit";
        /// Auto-commit period. Default 5 s.
        auto_commit_interval / get_auto_commit_interval: Duration = Duration::from_secs(5), "auto.commit.interval.ms";
        /// Classic protocol session timeout. Default 45 s.
        session_timeout / get_session_timeout: Duration = Duration::from_secs(45), "session.timeout.ms";
        /// Classic protocol rebalance timeout. Default 60 s. Java sends `max.poll.interval.ms`
        /// (default 300 s) here, so that key is accepted as an alias.
        rebalance_timeout / get_rebalance_timeout: Duration = Duration::from_secs(60), "rebalance.timeout.ms" | "max.poll.interval.ms";
        /// Classic protocol heartbeat period. Default 3 s.
        heartbeat_interval / get_heartbeat_interval: Duration = Duration::from_secs(3), "heartbeat.interval.ms";
        /// Records returned by one poll at most. Default 500.
        max_poll_records / get_max_poll_records: usize = 500, "max.poll.records";
    }
}

impl ConsumerConfig {
    /// The common settings.
    pub fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// The common settings, to change them.
    pub fn client_mut(&mut self) -> &mut ClientConfig {
        &mut self.client
    }

    /// Rejects contradictions (in this and the common config); returns the softer findings.
    pub fn validate(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = self.client.validate()?;
        if self.group_id.as_deref() == Some("") {
            return Err(invalid("group.id is empty"));
        }
        if self.group_instance_id.is_some() && self.group_id.is_none() {
            return Err(invalid("group.instance.id needs group.id"));
        }
        for name in &self.partition_assignment_strategy {
            if crate::group::balancer_by_name(name).is_none() {
                return Err(invalid(&format!(
                    "partition.assignment.strategy: unknown balancer {name:?}"
                )));
            }
        }
        if self
            .group_remote_assignor
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return Err(invalid("group.remote.assignor is empty"));
        }
        if self.group_id.is_none() && self.enable_auto_commit {
            warnings.push(ConfigWarning::AutoCommitWithoutGroup);
        }
        if self.fetch_min_bytes > self.fetch_max_bytes {
            return Err(invalid("fetch.min.bytes exceeds fetch.max.bytes"));
        }
        if self.max_partition_fetch_bytes == 0 || self.fetch_max_bytes == 0 {
            return Err(invalid("fetch sizes must be positive"));
        }
        for (key, v) in [
            ("fetch.max.bytes", self.fetch_max_bytes),
            ("max.partition.fetch.bytes", self.max_partition_fetch_bytes),
            ("fetch.min.bytes", self.fetch_min_bytes),
        ] {
            if v > i32::MAX as usize {
                return Err(invalid(&format!("{key} must fit in an i32")));
            }
        }
        if self.max_prefetch_bytes < self.max_partition_fetch_bytes {
            // The consumer could never hold even one partition's fetch.
            return Err(invalid(
                "max.prefetch.bytes is below max.partition.fetch.bytes",
            ));
        }
        if self.fetch_max_wait.as_millis() > i32::MAX as u128 {
            return Err(invalid("fetch.max.wait.ms must fit in an i32"));
        }
        if self.max_poll_records == 0 {
            return Err(invalid("max.poll.records must be positive"));
        }
        if self.enable_auto_commit && self.auto_commit_interval.is_zero() {
            return Err(invalid("auto.commit.interval.ms must be positive"));
        }
        match self.group_protocol {
            GroupProtocol::Classic => {
                if self.heartbeat_interval >= self.session_timeout {
                    return Err(invalid(
                        "heartbeat.interval.ms must be below session.timeout.ms",
                    ));
                }
                if self.heartbeat_interval.is_zero() {
                    return Err(invalid("heartbeat.interval.ms must be positive"));
                }
                for (key, d) in [
                    ("session.timeout.ms", self.session_timeout),
                    ("rebalance.timeout.ms", self.rebalance_timeout),
                ] {
                    if d.is_zero() || d.as_millis() > i32::MAX as u128 {
                        return Err(invalid(&format!("{key} must be in 1..=2147483647")));
                    }
                }
            }
            GroupProtocol::Consumer => {
                let defaults = ConsumerConfig::default();
                if self.session_timeout != defaults.session_timeout
                    || self.heartbeat_interval != defaults.heartbeat_interval
                {
                    warnings.push(ConfigWarning::Ignored {
                        key: "session.timeout.ms / heartbeat.interval.ms",
                        reason: "the consumer group protocol takes them from the broker",
                    });
                }
            }
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_producer() -> ProducerConfig {
        let mut p = ProducerConfig::default();
        p.client_mut()
            .bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
        p
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let p = ProducerConfig::default();
        assert_eq!(p.acks, Acks::All);
        assert!(p.idempotent());
        assert_eq!(p.linger, Duration::from_millis(5));
        assert_eq!(p.batch_size, 16384);
        assert_eq!(p.buffer_memory, 32 * 1024 * 1024);
        assert_eq!(p.max_in_flight_per_partition, 5);
        assert_eq!(p.compression, Codec::None);
        assert_eq!(p.delivery_timeout, Duration::from_secs(120));
        assert_eq!(p.transaction_timeout, Duration::from_secs(40));
        assert_eq!(p.transaction_end_timeout, Duration::from_secs(60));
        assert_eq!(p.client.request_timeout, Duration::from_secs(30));
        assert_eq!(p.client.retry_backoff, Duration::from_millis(100));
        assert_eq!(p.client.retry_backoff_max, Duration::from_secs(1));
        assert_eq!(p.client.max_request_bytes, 100 * 1024 * 1024);
        assert_eq!(p.client.metadata_max_age, Duration::from_secs(300));
        assert_eq!(
            p.client.metadata_min_refresh_interval,
            Duration::from_secs(5)
        );
        let c = ConsumerConfig::default();
        assert_eq!(c.isolation_level, IsolationLevel::ReadUncommitted);
        assert_eq!(c.fetch_min_bytes, 1);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(500));
        assert_eq!(c.max_partition_fetch_bytes, 1 << 20);
        assert_eq!(c.fetch_max_bytes, 50 << 20);
        assert_eq!(c.auto_offset_reset, AutoOffsetReset::Latest);
        assert!(c.enable_auto_commit);
        assert_eq!(c.auto_commit_interval, Duration::from_secs(5));
        assert_eq!(c.session_timeout, Duration::from_secs(45));
        assert_eq!(c.rebalance_timeout, Duration::from_secs(60));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.group_protocol, GroupProtocol::Classic);
    }

    #[test]
    fn setters_chain_and_getters_read() {
        let mut p = base_producer();
        p.linger(Duration::from_millis(20))
            .acks(Acks::One)
            .enable_idempotence(false)
            .transactional_id("tx-1".to_string());
        assert_eq!(*p.get_linger(), Duration::from_millis(20));
        assert_eq!(*p.get_acks(), Acks::One);
        assert_eq!(p.get_transactional_id().as_deref(), Some("tx-1"));
    }

    #[test]
    fn properties_parse_java_keys() {
        let text = "# a comment\n! another\n\
            bootstrap.servers = 127.0.0.1:9092, [::1]:9093\n\
            client.id: svc\n\
            acks=1\n\
            linger.ms=25\n\
            compression.type=ZSTD\n\
            compression.zstd.level=-5\n\
            enable.idempotence=false\n\
            key.serializer=org.apache.kafka.common.serialization.StringSerializer\n\
            partitioner.class=org.apache.kafka.clients.producer.RoundRobinPartitioner\n\
            transactional.id=\n";
        let p = ProducerConfig::from_properties_str(text).unwrap();
        assert_eq!(
            p.client.bootstrap_servers,
            vec!["127.0.0.1:9092".to_string(), "[::1]:9093".to_string()]
        );
        assert_eq!(p.client.client_id, "svc");
        assert_eq!(p.acks, Acks::One);
        assert_eq!(p.linger, Duration::from_millis(25));
        assert_eq!(p.compression, Codec::Zstd);
        assert_eq!(p.compression_zstd_level, Some(-5));
        assert_eq!(p.enable_idempotence, Some(false));
        assert_eq!(p.partitioner, PartitionerChoice::RoundRobin);
        assert_eq!(p.transactional_id, None);
        assert!(p.validate().unwrap().is_empty());
    }

    #[test]
    fn properties_errors_are_typed() {
        assert_eq!(
            ProducerConfig::from_properties([("linger.mss", "5")]).unwrap_err(),
            ConfigError::UnknownKey {
                key: "linger.mss".into()
            }
        );
        // A consumer key is unknown to a producer.
        assert!(matches!(
            ProducerConfig::from_properties([("group.id", "g")]),
            Err(ConfigError::UnknownKey { .. })
        ));
        match ProducerConfig::from_properties([("linger.ms", "-1")]).unwrap_err() {
            ConfigError::InvalidValue { key, value, .. } => {
                assert_eq!((key.as_str(), value.as_str()), ("linger.ms", "-1"))
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(matches!(
            ProducerConfig::from_properties([("acks", "2")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            ConsumerConfig::from_properties([("enable.auto.commit", "yes")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert!(matches!(
            ConsumerConfig::from_properties([("fetch.max.bytes", "99999999999999999999999")]),
            Err(ConfigError::InvalidValue { .. })
        ));
        assert_eq!(
            ProducerConfig::from_properties_str("a=b\nnot a property\n").unwrap_err(),
            ConfigError::Syntax { line: 2 }
        );
        assert_eq!(
            ProducerConfig::from_properties_str("=b\n").unwrap_err(),
            ConfigError::Syntax { line: 1 }
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let mut c = ClientConfig::default();
        c.sasl_password(Secret::new("hunter2"))
            .ssl_keystore_key(Secret::new("-----BEGIN PRIVATE KEY-----xyz"));
        c.apply_property(
            "sasl.jaas.config",
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3cr3t";"#,
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(!dbg.contains("xyz"), "{dbg}");
        assert!(dbg.contains("alice"));
        // A bad secret value is not echoed in the error either.
        let err = ClientConfig::from_properties([(
            "sasl.jaas.config",
            "Foo required password=\"pw-leak\"",
        )])
        .unwrap_err();
        assert!(!err.to_string().contains("pw-leak"), "{err}");
    }

    #[test]
    fn jaas_config_is_parsed() {
        let c = ClientConfig::from_properties([
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="a,b" password="p\"q";"#,
            ),
            ("bootstrap.servers", "localhost:9093"),
        ])
        .unwrap();
        assert!(c.validate().unwrap().is_empty());
        let creds = c.sasl_credentials().unwrap();
        assert_eq!(creds.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(creds.username, "a,b");
        assert_eq!(creds.password.expose(), "p\"q");
        // sasl.username overrides.
        let mut c2 = c.clone();
        c2.sasl_username("bob".to_string());
        assert_eq!(c2.sasl_credentials().unwrap().username, "bob");
        // Module and mechanism must agree.
        let mut c3 = c.clone();
        c3.sasl_mechanism(SaslMechanism::Plain);
        assert!(c3.validate().is_err());
        // An empty value means "not set".
        assert!(ClientConfig::from_properties([("sasl.jaas.config", "")]).is_ok());
        for bad in [
            "OnlyModule",
            "x.PlainLoginModule maybe username=\"a\"",
            "x.KerberosLoginModule required",
            "x.PlainLoginModule required username=\"a",
            "x.PlainLoginModule required username",
        ] {
            assert!(
                ClientConfig::from_properties([("sasl.jaas.config", bad)]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_validation() {
        let c = ClientConfig::default();
        assert!(c.validate().is_err(), "no bootstrap servers");
        for bad in [
            "localhost",
            "localhost:0",
            "localhost:70000",
            ":9092",
            "[::1:9092",
            "[::1]9092",
        ] {
            let mut c = ClientConfig::default();
            c.bootstrap_servers(vec![bad.to_string()]);
            assert!(c.validate().is_err(), "{bad}");
        }
        let mut c = ClientConfig::default();
        c.bootstrap_servers(vec![
            "[::1]:9092".to_string(),
            "kafka-0.local:9092".to_string(),
        ]);
        assert!(c.validate().unwrap().is_empty());
        c.security_protocol(SecurityProtocol::SaslPlaintext);
        assert!(c.validate().is_err(), "SASL without user");
        c.sasl_username("u".to_string());
        assert_eq!(
            c.validate().unwrap(),
            vec![ConfigWarning::PlainPasswordInClear]
        );
        c.security_protocol(SecurityProtocol::Plaintext);
        assert_eq!(
            c.validate().unwrap(),
            vec![ConfigWarning::SaslCredentialsUnused]
        );
        let mut c2 = c.clone();
        c2.ssl_truststore_type("JKS".to_string());
        assert!(c2.validate().is_err());
        let mut c3 = c.clone();
        c3.reconnect_backoff(Duration::from_secs(2));
        assert!(c3.validate().is_err());
        let mut c4 = c.clone();
        c4.ssl_keystore_key(Secret::new("k"));
        assert!(c4.validate().is_err(), "key without chain");
    }

    #[test]
    fn idempotence_rules_follow_java() {
        let mut p = base_producer();
        p.acks(Acks::One);
        // Unset: implicitly off, with a warning.
        assert!(!p.idempotent());
        assert!(matches!(
            p.validate().unwrap().as_slice(),
            [ConfigWarning::IdempotenceImplicitlyDisabled { .. }]
        ));
        // Explicitly on: an error.
        p.enable_idempotence(true);
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.max_in_flight_per_partition(6usize);
        assert!(!p.idempotent());
        p.enable_idempotence(true);
        assert!(p.validate().is_err());
        // Transactions need idempotence.
        let mut p = base_producer();
        p.transactional_id("t".to_string()).retries(0u32);
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.transactional_id("t".to_string())
            .enable_idempotence(false);
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.transactional_id("t".to_string());
        assert!(p.validate().unwrap().is_empty());
    }

    #[test]
    fn producer_ranges() {
        let mut p = base_producer();
        p.compression_gzip_level(10);
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.delivery_timeout(Duration::from_secs(1));
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.batch_size(0usize);
        assert!(p.validate().is_err());
        let mut p = base_producer();
        p.buffer_memory(100usize);
        assert!(p.validate().is_err());
    }

    #[test]
    fn transaction_end_timeout_is_parsed_and_validated() {
        let p = ProducerConfig::from_properties([
            ("bootstrap.servers", "127.0.0.1:9092"),
            ("transactional.id", "t"),
            ("transaction.end.timeout.ms", "2500"),
        ])
        .unwrap();
        assert_eq!(
            *p.get_transaction_end_timeout(),
            Duration::from_millis(2500)
        );
        assert!(p.validate().is_ok());
        let mut bad = p.clone();
        bad.transaction_end_timeout(Duration::ZERO);
        assert!(bad.validate().is_err());
        bad.transaction_end_timeout(Duration::from_millis(i32::MAX as u64 + 1));
        assert!(bad.validate().is_err());
        assert!(ProducerConfig::from_properties([("transaction.end.timeout.ms", "soon")]).is_err());
    }

    #[test]
    fn transaction_timeout_vs_session_is_a_warning() {
        let mut p = base_producer();
        p.transactional_id("t".to_string());
        let mut c = ConsumerConfig::default();
        assert!(p.check_with_consumer(&c).is_empty());
        c.session_timeout(Duration::from_secs(30));
        assert_eq!(
            p.check_with_consumer(&c),
            vec![ConfigWarning::TransactionTimeoutNotBelowSession]
        );
    }

    #[test]
    fn consumer_validation() {
        let mut c = ConsumerConfig::default();
        c.client_mut()
            .bootstrap_servers(vec!["127.0.0.1:9092".to_string()]);
        assert_eq!(
            c.validate().unwrap(),
            vec![ConfigWarning::AutoCommitWithoutGroup]
        );
        c.group_id("g".to_string());
        assert!(c.validate().unwrap().is_empty());
        let mut bad = c.clone();
        bad.heartbeat_interval(Duration::from_secs(45));
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.fetch_min_bytes(100usize << 20);
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.max_prefetch_bytes(1024usize);
        assert!(bad.validate().is_err());
        let mut bad = ConsumerConfig::default();
        bad.client_mut().bootstrap_servers(vec!["h:1".to_string()]);
        bad.group_instance_id("i".to_string());
        assert!(bad.validate().is_err());
        let mut c2 = c.clone();
        c2.apply_property("max.poll.interval.ms", "300000").unwrap();
        assert_eq!(c2.rebalance_timeout, Duration::from_secs(300));
        c2.group_protocol(GroupProtocol::Consumer)
            .session_timeout(Duration::from_secs(10));
        assert!(matches!(
            c2.validate().unwrap().as_slice(),
            [ConfigWarning::Ignored { .. }]
        ));
    }

    #[test]
    fn assignment_strategy_and_remote_assignor() {
        let c = ConsumerConfig::from_properties([
            ("group.id", "g"),
            ("bootstrap.servers", "h:1"),
            (
                "partition.assignment.strategy",
                "range, org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            ),
            ("group.protocol", "consumer"),
            ("group.remote.assignor", "uniform"),
        ])
        .unwrap();
        assert_eq!(
            c.partition_assignment_strategy,
            vec![
                "range".to_string(),
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor".to_string()
            ]
        );
        assert_eq!(c.group_remote_assignor.as_deref(), Some("uniform"));
        assert!(c.validate().is_ok());
        // Defaults: no strategy (cooperative-sticky), no remote assignor (the broker's).
        let d = ConsumerConfig::default();
        assert!(d.partition_assignment_strategy.is_empty());
        assert_eq!(d.group_remote_assignor, None);
        // Unknown balancer names are rejected.
        let mut bad = c.clone();
        bad.apply_property("partition.assignment.strategy", "range,nope")
            .unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid(m)) if m.contains("nope")));
        // An empty value means "not set".
        let mut e = c.clone();
        e.apply_property("group.remote.assignor", "").unwrap();
        assert_eq!(e.group_remote_assignor, None);
        e.apply_property("partition.assignment.strategy", "")
            .unwrap();
        assert!(e.partition_assignment_strategy.is_empty());
        let mut setters = ConsumerConfig::default();
        setters
            .group_remote_assignor("range")
            .partition_assignment_strategy(vec!["sticky".to_string()]);
        assert_eq!(
            setters.get_group_remote_assignor().as_deref(),
            Some("range")
        );
        assert_eq!(setters.get_partition_assignment_strategy(), &["sticky"]);
    }

    #[test]
    fn property_keys_are_unique_across_nested_configs() {
        let mut all: Vec<&str> = ClientConfig::property_keys().to_vec();
        all.extend(ProducerConfig::property_keys());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a producer key shadows a client key");
        let mut all: Vec<&str> = ClientConfig::property_keys().to_vec();
        all.extend(ConsumerConfig::property_keys());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a consumer key shadows a client key");
        for k in IGNORED_JAVA_KEYS {
            assert!(!all.contains(k));
        }
    }

    proptest::proptest! {
        #[test]
        fn validation_never_panics(
            props in proptest::collection::vec((0usize..200, "[0-9]{1,20}|true|false|all|zstd|consumer|-1"), 0..12),
        ) {
            let keys: Vec<&str> = ClientConfig::property_keys()
                .iter()
                .chain(ProducerConfig::property_keys())
                .chain(ConsumerConfig::property_keys())
                .copied()
                .collect();
            let mut p = ProducerConfig::default();
            let mut c = ConsumerConfig::default();
            for (idx, value) in &props {
                let key = keys[idx % keys.len()];
                let _ = p.apply_property(key, value);
                let _ = c.apply_property(key, value);
            }
            let _ = p.validate();
            let _ = c.validate();
            let _ = p.check_with_consumer(&c);
        }

        #[test]
        fn property_parsing_never_panics(key in "[a-z.]{0,40}", value in "\\PC{0,60}") {
            let _ = ProducerConfig::from_properties([(key.as_str(), value.as_str())]);
            let _ = ConsumerConfig::from_properties([(key.as_str(), value.as_str())]);
        }

        #[test]
        fn every_key_rejects_or_accepts_garbage_without_panic(idx in 0usize..200, value in "\\PC{0,60}") {
            let keys: Vec<&str> = ClientConfig::property_keys().iter()
                .chain(ProducerConfig::property_keys())
                .chain(ConsumerConfig::property_keys())
                .copied().collect();
            let key = keys[idx % keys.len()];
            let _ = ProducerConfig::from_properties([(key, value.as_str())]);
            let _ = ConsumerConfig::from_properties([(key, value.as_str())]);
        }

        #[test]
        fn properties_text_never_panics(text in "\\PC{0,200}") {
            let _ = ConsumerConfig::from_properties_str(&text);
        }
    }
}
