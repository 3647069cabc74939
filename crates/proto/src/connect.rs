//! The handshake records. Neither has a header, and both end with an optional `readOnly` byte: clients up
//! to 3.3 omit it, and the server must then answer without it (`compat/ProtocolManager.java`).

use crate::jute::{DecodeError, Jute};
use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

/// The first frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// Always 0 for stock clients.
    pub protocol_version: i32,
    /// The largest zxid the client has seen (0 for a new client).
    pub last_zxid_seen: i64,
    /// Requested session timeout, ms.
    pub timeout: i32,
    /// 0 for a new session, else the session to resume.
    pub session_id: i64,
    /// The session's password when resuming (16 bytes), else zeroes.
    pub passwd: Bytes,
    /// The trailing readOnly byte, `None` when the client did not send it.
    pub read_only: Option<bool>,
}

/// The server's answer to the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectResponse {
    /// Always 0.
    pub protocol_version: i32,
    /// Negotiated timeout, ms; 0 means "session expired or invalid".
    pub timeout: i32,
    /// The session id; 0 with timeout 0 when refused.
    pub session_id: i64,
    /// The session password.
    pub passwd: Bytes,
    /// Sent only when the request carried the readOnly byte.
    pub read_only: Option<bool>,
}

impl Jute for ConnectRequest {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.protocol_version.encode(out);
        self.last_zxid_seen.encode(out);
        self.timeout.encode(out);
        self.session_id.encode(out);
        self.passwd.encode(out);
        if let Some(ro) = self.read_only {
            ro.encode(out);
        }
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(ConnectRequest {
            protocol_version: Jute::decode(buf)?,
            last_zxid_seen: Jute::decode(buf)?,
            timeout: Jute::decode(buf)?,
            session_id: Jute::decode(buf)?,
            passwd: Jute::decode(buf)?,
            read_only: if buf.is_empty() {
                None
            } else {
                Some(Jute::decode(buf)?)
            },
        })
    }
}

impl Jute for ConnectResponse {
    fn encode<B: BufMut>(&self, out: &mut B) {
        self.protocol_version.encode(out);
        self.timeout.encode(out);
        self.session_id.encode(out);
        self.passwd.encode(out);
        if let Some(ro) = self.read_only {
            ro.encode(out);
        }
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(ConnectResponse {
            protocol_version: Jute::decode(buf)?,
            timeout: Jute::decode(buf)?,
            session_id: Jute::decode(buf)?,
            passwd: Jute::decode(buf)?,
            read_only: if buf.is_empty() {
                None
            } else {
                Some(Jute::decode(buf)?)
            },
        })
    }
}
