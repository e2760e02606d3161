//! TLS for broker connections (tokio-rustls).
//!
//! Placeholder until the rustls configuration lands: a TLS security protocol is refused with a
//! clear error instead of silently connecting in plaintext.

use tokio::net::TcpStream;

use crate::config::ClientConfig;
use crate::error::{Error, Peer, Result};

/// Wraps `tcp` in TLS for `host` as `config` says.
pub(crate) async fn connect(
    _config: &ClientConfig,
    _host: &str,
    _tcp: TcpStream,
    _peer: &Peer,
) -> Result<TcpStream> {
    Err(Error::Misuse("TLS is not available in this build yet".into()))
}
