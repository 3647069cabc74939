//! Node data that may be null, and the serde encoding that keeps older Raft log entries readable.
//!
//! ZooKeeper keeps a null data buffer (jute length -1) apart from an empty one: a node created or set
//! with null reads back as null. Records carry such data as `Option<Bytes>` (`None` is null); its jute
//! encoding is in [`crate::jute`].
//!
//! Request records are also stored (serde, postcard) inside Raft log entries. Entries written before
//! null existed encode the data as a plain byte string, entries written now as an option. The data
//! fields use [`serde_compat`], which reads and writes the option, or the plain byte string while
//! [`with_legacy_data`] runs: the server decodes an old entry's request inside it. Left out: any
//! other old layout (there is none).

use std::cell::Cell;

thread_local! {
    static LEGACY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with data fields (de)serialized in the layout of entries written before null data: a
/// plain byte string, read as `Some`, with `None` written as empty. Restores the previous mode after.
pub fn with_legacy_data<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEGACY.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LEGACY.with(|l| l.replace(true)));
    f()
}

/// serde `with` module for `Option<Bytes>` data fields (see the module docs).
pub mod serde_compat {
    use super::LEGACY;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::cell::Cell;

    /// Writes the option, or the plain bytes inside [`super::with_legacy_data`].
    pub fn serialize<S: Serializer>(data: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        if LEGACY.with(Cell::get) {
            s.serialize_bytes(data.as_deref().unwrap_or_default())
        } else {
            data.serialize(s)
        }
    }

    /// Reads the option, or plain bytes as `Some` inside [`super::with_legacy_data`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        if LEGACY.with(Cell::get) {
            Bytes::deserialize(d).map(Some)
        } else {
            Option::<Bytes>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SetDataRequest;
    use bytes::Bytes;

    fn set(data: Option<&'static [u8]>) -> SetDataRequest {
        SetDataRequest {
            path: "/a".into(),
            data: data.map(Bytes::from_static),
            version: -1,
        }
    }

    #[test]
    fn current_layout_keeps_null_apart_from_empty() {
        for r in [set(None), set(Some(b"")), set(Some(b"x"))] {
            let bytes = postcard::to_allocvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<SetDataRequest>(&bytes).unwrap(), r);
        }
        let null = postcard::to_allocvec(&set(None)).unwrap();
        let empty = postcard::to_allocvec(&set(Some(b""))).unwrap();
        assert_ne!(null, empty);
    }

    #[test]
    fn legacy_layout_is_a_plain_byte_string() {
        // SetDataRequest { path: "/a", data: b"x", version: -1 } as written before null data existed.
        let old = [0x02, b'/', b'a', 0x01, b'x', 0x01];
        let r: SetDataRequest = with_legacy_data(|| postcard::from_bytes(&old)).unwrap();
        assert_eq!(r, set(Some(b"x")));
        assert_eq!(
            with_legacy_data(|| postcard::to_allocvec(&r)).unwrap(),
            old.to_vec()
        );
        // The mode ends with the closure: the same bytes do not decode as the current layout's value.
        assert_ne!(postcard::from_bytes::<SetDataRequest>(&old).ok(), Some(r));
    }
}
