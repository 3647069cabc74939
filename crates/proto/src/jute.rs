//! Jute, ZooKeeper's binary serialization: big-endian `int`/`long`, one-byte `boolean`, length-prefixed
//! `ustring`/`buffer`/`vector` with `-1` meaning null.
//!
//! [`Jute`] encodes into a `BufMut` and decodes from a byte slice that holds one whole frame body. Because
//! the frame layer has already buffered the whole body, a length that runs past the end is a malformed
//! record ([`DecodeError::Malformed`]), never "incomplete". Lengths are checked against the bytes actually
//! left before anything is allocated, so a hostile length prefix cannot make us allocate gigabytes.
//!
//! Left out: jute maps, floats and doubles (the client protocol uses none of them). Null strings, buffers
//! and vectors decode as empty values, except node data, an `Option<Bytes>` whose `None` is null.

use bytes::{BufMut, Bytes};

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end before the record does, or a length prefix is impossible.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The record decoded but the bytes went on after it.
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    /// An opcode, mode or enum value that the protocol does not define.
    #[error("unknown {what} {value}")]
    Unknown {
        /// What kind of value it was.
        what: &'static str,
        /// The value on the wire.
        value: i32,
    },
    /// A string that is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    Utf8,
}

/// A value with a jute encoding.
pub trait Jute: Sized {
    /// Appends the encoding of `self`.
    fn encode<B: BufMut>(&self, out: &mut B);
    /// Reads one value from the front of `buf`, advancing it.
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError>;
}

/// Decodes a whole record and insists that nothing follows it.
pub fn decode_exact<T: Jute>(mut buf: &[u8]) -> Result<T, DecodeError> {
    let v = T::decode(&mut buf)?;
    if buf.is_empty() {
        Ok(v)
    } else {
        Err(DecodeError::Trailing(buf.len()))
    }
}

/// Encodes a record into a fresh vector.
pub fn to_vec<T: Jute>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::Malformed(what));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

/// Reads a length prefix: `None` for null (-1), an error for other negatives or for a length larger than
/// the bytes left (every string byte, buffer byte and vector element takes at least one byte).
fn read_len(buf: &mut &[u8], what: &'static str) -> Result<Option<usize>, DecodeError> {
    let n = i32::decode(buf)?;
    if n == -1 {
        return Ok(None);
    }
    if n < 0 || n as usize > buf.len() {
        return Err(DecodeError::Malformed(what));
    }
    Ok(Some(n as usize))
}

impl Jute for i32 {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_i32(*self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let b = take(buf, 4, "int")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl Jute for i64 {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_i64(*self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        let b = take(buf, 8, "long")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
}

impl Jute for bool {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_u8(u8::from(*self));
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(take(buf, 1, "boolean")?[0] != 0)
    }
}

impl Jute for String {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_i32(self.len() as i32);
        out.put_slice(self.as_bytes());
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        match read_len(buf, "ustring length")? {
            None => Ok(String::new()),
            Some(n) => {
                let b = take(buf, n, "ustring")?;
                String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8)
            }
        }
    }
}

impl Jute for Bytes {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_i32(self.len() as i32);
        out.put_slice(self);
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        match read_len(buf, "buffer length")? {
            None => Ok(Bytes::new()),
            Some(n) => Ok(Bytes::copy_from_slice(take(buf, n, "buffer")?)),
        }
    }
}

/// Node data: `None` is the null buffer (length -1), which ZooKeeper keeps apart from an empty one.
impl Jute for Option<Bytes> {
    fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            Some(b) => b.encode(out),
            None => out.put_i32(-1),
        }
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(read_len(buf, "buffer length")?
            .map(|n| take(buf, n, "buffer"))
            .transpose()?
            .map(Bytes::copy_from_slice))
    }
}

impl<T: Jute> Jute for Vec<T> {
    fn encode<B: BufMut>(&self, out: &mut B) {
        out.put_i32(self.len() as i32);
        for v in self {
            v.encode(out);
        }
    }
    fn decode(buf: &mut &[u8]) -> Result<Self, DecodeError> {
        // A negative count is an empty vector, as in ZooKeeper's generated readers (`BinaryIndex`
        // is done at once when its count is not positive). Every element takes at least one byte,
        // so a count past the bytes left is malformed.
        let n = i32::decode(buf)?;
        match usize::try_from(n) {
            Err(_) => Ok(Vec::new()),
            Ok(n) if n > buf.len() => Err(DecodeError::Malformed("vector length")),
            Ok(n) => {
                let mut v = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    v.push(T::decode(buf)?);
                }
                Ok(v)
            }
        }
    }
}

/// Declares a jute record: a plain struct whose fields are encoded in declaration order.
#[macro_export]
macro_rules! jute_record {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name { $( $(#[$fm])* pub $field: $ty ),* }

        impl $crate::jute::Jute for $name {
            fn encode<B: bytes::BufMut>(&self, _out: &mut B) {
                $( $crate::jute::Jute::encode(&self.$field, _out); )*
            }
            fn decode(_buf: &mut &[u8]) -> Result<Self, $crate::jute::DecodeError> {
                Ok(Self { $( $field: $crate::jute::Jute::decode(_buf)? ),* })
            }
        }
    };
}
