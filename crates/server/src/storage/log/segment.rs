//! The on-disk format of the log: how a record is encoded and checked, how segment files are
//! named, what the flusher and readers know about each segment, and reading records back from
//! the segment files. The layout itself is described in the module docs of [`super`]; nothing
//! here decides when to write, sync or recover.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{DISK_READ_CHUNK, MAX_RECORD_BYTES, RECORD_HEADER_LEN, SEG_EXT};
use crate::storage::{Error, IoResultExt, Result};

pub(super) fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let idx = index.to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&idx), payload);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&idx);
    out.extend_from_slice(payload);
}

/// Parse the record at `pos`: its index and the payload's byte range, or why it is damaged.
pub(super) fn parse_record(
    data: &[u8],
    pos: usize,
) -> std::result::Result<(u64, usize, usize), String> {
    let avail = data.len() - pos;
    if avail < RECORD_HEADER_LEN {
        return Err(format!(
            "truncated record header ({avail} of {RECORD_HEADER_LEN} bytes)"
        ));
    }
    let h = &data[pos..pos + RECORD_HEADER_LEN];
    let len = u32::from_be_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(h[4..8].try_into().expect("4 bytes"));
    let index = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
    if len > MAX_RECORD_BYTES {
        return Err(format!("record length field {len} exceeds the maximum"));
    }
    let start = pos + RECORD_HEADER_LEN;
    if len > data.len() - start {
        return Err(format!(
            "record claims {len} payload bytes but only {} remain in the file",
            data.len() - start
        ));
    }
    let end = start + len;
    let actual = crc32c::crc32c_append(crc32c::crc32c(&h[8..16]), &data[start..end]);
    if actual != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    Ok((index, start, end))
}

/// Look for a valid record anywhere after a damaged one at `bad`, whose index would be
/// `expected`. Returns its offset and index.
pub(super) fn find_valid_record_after(
    data: &[u8],
    bad: usize,
    expected: u64,
) -> Option<(usize, u64)> {
    // Records are at least RECORD_HEADER_LEN bytes, which bounds the plausible indexes.
    let max_index = expected.saturating_add(((data.len() - bad) / RECORD_HEADER_LEN) as u64 + 1);
    let last_start = data.len().checked_sub(RECORD_HEADER_LEN)?;
    for q in (bad + 1)..=last_start {
        let index = u64::from_be_bytes(data[q + 8..q + 16].try_into().expect("8 bytes"));
        if index < expected || index > max_index {
            continue;
        }
        if let Ok((idx, _, _)) = parse_record(data, q) {
            return Some((q, idx));
        }
    }
    None
}

pub(super) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEG_EXT}"))
}

/// Parse `<20 digits>.seg`.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(super) struct Segment {
    pub(super) first: u64,
    pub(super) path: PathBuf,
    /// Byte offset of each record in the file.
    pub(super) offsets: Vec<u64>,
    /// File length including bytes still buffered in the flusher.
    pub(super) len: u64,
    /// Length of the file on disk: `len` plus the zero-filled preallocation beyond it (at least
    /// `len` once the buffer is written).
    pub(super) alloc: u64,
}

impl Segment {
    /// Index of the last record, `None` if the segment holds none.
    pub(super) fn last_index(&self) -> Option<u64> {
        if self.offsets.is_empty() {
            None
        } else {
            Some(self.first + self.offsets.len() as u64 - 1)
        }
    }

    pub(super) fn next_index(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// Read records `from..to` (all written) from the segment files into `out`, stopping once more
/// than `max_bytes` payload bytes were read. Each record's checksum and index are verified.
pub(super) fn read_segments(
    segs: &[Segment],
    from: u64,
    to: u64,
    max_bytes: Option<usize>,
    out: &mut Vec<(u64, Bytes)>,
) -> Result<()> {
    let mut bytes = 0usize;
    let mut idx = from;
    while idx < to {
        let seg = segs
            .iter()
            .rev()
            .find(|s| s.first <= idx)
            .filter(|s| idx < s.next_index())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "log record {idx} is neither in memory nor in any segment"
                ))
            })?;
        let end = to.min(seg.next_index()).min(idx + DISK_READ_CHUNK);
        let at = seg.offsets[(idx - seg.first) as usize];
        let stop = if end < seg.next_index() {
            seg.offsets[(end - seg.first) as usize]
        } else {
            seg.len
        };
        let mut buf = vec![0u8; (stop - at) as usize];
        File::open(&seg.path)
            .and_then(|f| f.read_exact_at(&mut buf, at))
            .at(&seg.path)?;
        let buf = Bytes::from(buf);
        let mut pos = 0usize;
        for expected in idx..end {
            let (index, s, e) = parse_record(&buf, pos)
                .map_err(|why| Error::corrupt(&seg.path, at + pos as u64, why))?;
            if index != expected {
                return Err(Error::corrupt(
                    &seg.path,
                    at + pos as u64,
                    format!("record has index {index} where index {expected} was expected"),
                ));
            }
            bytes += e - s;
            out.push((index, buf.slice(s..e)));
            pos = e;
            if max_bytes.is_some_and(|max| bytes >= max) {
                return Ok(());
            }
        }
        idx = end;
    }
    Ok(())
}
