//! Framing: every message in both directions is a big-endian `int32` length and that many bytes. On a
//! connection's first frame the length may instead be a four-letter word (`ruok` read as an int), which
//! cannot collide with a real handshake: every 4lw code is above 2^24 and a handshake is far shorter.
//!
//! [`parse_frame`] returns `Ok(None)` while the frame is incomplete (the mini-redis shape), so a caller
//! can feed it a growing buffer. Lengths above the limit (ZooKeeper's `jute.maxbuffer`) are errors: the
//! connection must be closed.

use crate::jute::Jute;
use crate::records::ReplyHeader;
use bytes::{BufMut, BytesMut};

/// ZooKeeper's default `jute.maxbuffer`: 0xfffff bytes.
pub const DEFAULT_MAX_FRAME: usize = 0xfffff;

/// Every four-letter word ZooKeeper 3.8 knows (`FourLetterCommands`).
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "srvr", "stat", "mntr", "conf", "cons", "crst", "envi", "wchs", "wchc", "wchp", "dump",
    "isro", "dirs", "srst", "gtmk", "stmk", "hash",
];

/// A framing error: the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length prefix that is negative or above the limit.
    #[error("frame length {len} is outside 0..={max} (the limit is the max-frame-bytes setting, ZooKeeper's jute.maxbuffer)")]
    BadLength {
        /// The length read.
        len: i64,
        /// The limit.
        max: usize,
    },
}

/// One complete frame at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A four-letter word (only recognised as a connection's first frame).
    FourLetterWord(&'static str),
    /// A length-prefixed packet body.
    Packet(&'a [u8]),
}

/// Parses one frame from the front of `buf`; returns it and the bytes it used, or `None` if more bytes are
/// needed. `first` says whether this is the connection's first frame (four-letter words are allowed).
pub fn parse_frame(
    buf: &[u8],
    max: usize,
    first: bool,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let head = [buf[0], buf[1], buf[2], buf[3]];
    if first {
        if let Some(w) = FOUR_LETTER_WORDS.iter().find(|w| w.as_bytes() == head) {
            return Ok(Some((Frame::FourLetterWord(w), 4)));
        }
    }
    let len = i32::from_be_bytes(head);
    if len < 0 || len as usize > max {
        return Err(FrameError::BadLength {
            len: len as i64,
            max,
        });
    }
    let total = 4 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((Frame::Packet(&buf[4..total]), total)))
}

/// Appends one length-prefixed frame built by `body`.
pub fn write_frame(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a reply frame: the header and, when `err == 0`, the body.
pub fn write_reply(out: &mut BytesMut, header: &ReplyHeader, body: Option<&crate::Response>) {
    write_frame(out, |out| {
        header.encode(out);
        if header.err == 0 {
            if let Some(b) = body {
                b.encode(out);
            }
        }
    });
}
