//! In-process servers: connect strings whose host ends in `.in-process` name a server living in this
//! process (an embedded Roster node, `roster-embed`), reached through a byte stream it hands out
//! instead of a TCP connection.
//!
//! A server registers a dial function under a name ([`register`]); while the returned
//! [`Registration`] lives, the connection task resolves `NAME.in-process:0` by calling it instead of
//! opening TCP. Everything above the byte stream is unchanged: handshake, session, reconnection,
//! watches, recipes. Such hosts can be mixed with TCP ones in a connect string
//! (`node-1.in-process:0,10.0.0.2:2181`): the client moves between them as between servers.
//!
//! Left out: anything across processes (a name is only known to the process that registered it).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite};

/// The suffix that marks a connect string host as an in-process server.
pub const SUFFIX: &str = ".in-process";

/// A byte stream to a server, whatever carries it.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Opens one new connection to an in-process server.
pub type DialFn = Arc<dyn Fn() -> io::Result<BoxStream> + Send + Sync>;

fn registry() -> &'static Mutex<HashMap<String, DialFn>> {
    static R: OnceLock<Mutex<HashMap<String, DialFn>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Keeps an in-process server reachable under its name; dropping it unregisters the name.
#[derive(Debug)]
pub struct Registration {
    host: String,
}

impl Registration {
    /// The host name (`NAME.in-process`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A connect string naming this server (`NAME.in-process:0`), for [`crate::Client::connect`].
    pub fn connect_string(&self) -> String {
        format!("{}:0", self.host)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut r) = registry().lock() {
            r.remove(&self.host);
        }
    }
}

/// Registers `dial` as the server `NAME.in-process` (`name` without the suffix). A name already
/// registered is replaced (the latest server of that name wins).
pub fn register(
    name: &str,
    dial: impl Fn() -> io::Result<BoxStream> + Send + Sync + 'static,
) -> Registration {
    let host = format!("{name}{SUFFIX}");
    if let Ok(mut r) = registry().lock() {
        r.insert(host.clone(), Arc::new(dial));
    }
    Registration { host }
}

/// Whether `host` names an in-process server (registered or not).
pub fn is_local(host: &str) -> bool {
    host.ends_with(SUFFIX)
}

/// Opens a connection to the in-process server `host`; fails with `ConnectionRefused` when no server
/// of that name is registered (it was shut down, or never started in this process).
pub fn dial(host: &str) -> io::Result<BoxStream> {
    let f = registry()
        .lock()
        .ok()
        .and_then(|r| r.get(host).cloned())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "no in-process server named {host} in this process (not started, or shut down)"
                ),
            )
        })?;
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_dial_until_dropped() {
        let reg = register("t-local-1", || {
            let (a, _b) = tokio::io::duplex(64);
            Ok(Box::new(a) as BoxStream)
        });
        assert_eq!(reg.connect_string(), "t-local-1.in-process:0");
        assert!(is_local(reg.host()));
        assert!(dial("t-local-1.in-process").is_ok());
        drop(reg);
        let err = dial("t-local-1.in-process").err().expect("unregistered");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(!is_local("127.0.0.1"));
    }
}
