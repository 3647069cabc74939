//! Recovery on open: reads every segment of the log directory, verifies each record, trims a
//! torn write or preallocated zeros at the very tail, removes leftovers of an interrupted purge,
//! and refuses (with [`Error::Corrupt`]) anything else that is damaged (see the module docs of
//! [`super`], Recovery). It only reads and repairs files; it starts no thread.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::segment::{find_valid_record_after, parse_record, parse_segment_name, Segment};
use super::WalOptions;
use crate::storage::{fsync_dir, Error, IoResultExt, Result};

pub(super) struct Recovered {
    pub(super) segs: Vec<Segment>,
    pub(super) first: u64,
    /// Index of `tail[0]`.
    pub(super) tail_first: u64,
    /// The newest records, within the bounds of [`WalOptions`].
    pub(super) tail: VecDeque<Bytes>,
}

pub(super) fn recover(
    dir: &Path,
    purged: Option<u64>,
    base: u64,
    opts: &WalOptions,
) -> Result<Recovered> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for ent in fs::read_dir(dir).at(dir)? {
        let ent = ent.at(dir)?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = parse_segment_name(&name) {
            found.push((first, ent.path()));
        } else if name.ends_with(".meta") || name.ends_with(".meta.tmp") {
            // MetaStore's files.
        } else {
            tracing::warn!(path = %ent.path().display(), "ignoring unknown file in the log directory");
        }
    }
    found.sort();

    let mut dir_changed = false;
    // Leftovers of an interrupted purge: segments wholly at or below the purge point.
    if let Some(p) = purged {
        while found.len() >= 2 && found[1].0 <= p.saturating_add(1) {
            let (_, path) = found.remove(0);
            tracing::info!(path = %path.display(), purged = p, "removing segment left behind by an interrupted purge");
            fs::remove_file(&path).at(&path)?;
            dir_changed = true;
        }
    }

    let start = purged.map_or(base, |p| base.max(p + 1));
    let mut segs: Vec<Segment> = Vec::new();
    let mut tail = VecDeque::new();
    let mut tail_bytes = 0usize;
    let mut next = start;
    let n = found.len();
    for (i, (first, path)) in found.into_iter().enumerate() {
        let is_last = i + 1 == n;
        match segs.last() {
            None => {
                if first > start || (purged.is_none() && first != start) {
                    let why = match purged {
                        Some(p) => format!("the log was purged up to {p}"),
                        None => format!("nothing was purged and the log began at index {start}"),
                    };
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!(
                            "the oldest segment starts at index {first}, but {why}: a segment \
                             file was lost, or files from another log were mixed in"
                        ),
                    ));
                }
            }
            Some(prev) => {
                if first != prev.next_index() {
                    return Err(Error::corrupt(
                        &path,
                        0,
                        format!(
                            "segment starts at index {first} but the previous segment {} ends \
                             at index {}: records are missing or duplicated",
                            prev.path.display(),
                            prev.next_index() - 1
                        ),
                    ));
                }
            }
        }
        let Some(Scanned {
            seg,
            data,
            payloads,
        }) = scan_segment(&path, first, is_last, &mut dir_changed)?
        else {
            continue;
        };
        let held = payloads.len() as u64 - start.saturating_sub(first).min(payloads.len() as u64);
        if held > 0 {
            next = seg.next_index();
        }
        // Only the newest records stay in memory: walk back from the end of the segment.
        let mut newest = VecDeque::new();
        let mut newest_bytes = 0usize;
        for &(s, e) in payloads.iter().rev().take(held as usize) {
            if !newest.is_empty()
                && (newest.len() >= opts.memory_tail_entries
                    || newest_bytes + (e - s) > opts.memory_tail_bytes)
            {
                break;
            }
            newest_bytes += e - s;
            newest.push_front(Bytes::copy_from_slice(&data[s..e]));
        }
        if newest.len() as u64 == held {
            // The whole segment fits: it extends the tail of the segments before it.
            tail.extend(newest);
            tail_bytes += newest_bytes;
            while tail.len() > 1
                && (tail.len() > opts.memory_tail_entries || tail_bytes > opts.memory_tail_bytes)
            {
                tail_bytes -= tail.pop_front().map_or(0, |p| p.len());
            }
        } else if held > 0 {
            tail = newest;
            tail_bytes = newest_bytes;
        }
        segs.push(seg);
    }
    if dir_changed {
        fsync_dir(dir)?;
    }
    Ok(Recovered {
        segs,
        first: start,
        tail_first: next - tail.len() as u64,
        tail,
    })
}

/// A verified segment: its index, its bytes and the byte range of each record's payload.
pub(super) struct Scanned {
    seg: Segment,
    data: Vec<u8>,
    payloads: Vec<(usize, usize)>,
}

/// Read and verify one segment. Returns `None` if it was an empty last segment (removed).
pub(super) fn scan_segment(
    path: &Path,
    first: u64,
    is_last: bool,
    dir_changed: &mut bool,
) -> Result<Option<Scanned>> {
    let data = fs::read(path).at(path)?;
    let mut pos = 0usize;
    let mut expected = first;
    let mut offsets = Vec::new();
    let mut payloads = Vec::new();
    while pos < data.len() {
        match parse_record(&data, pos) {
            Ok((index, start, end)) => {
                if index != expected {
                    return Err(Error::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "record has index {index} where index {expected} was expected: \
                             records are missing or duplicated"
                        ),
                    ));
                }
                offsets.push(pos as u64);
                payloads.push((start, end));
                pos = end;
                expected += 1;
            }
            Err(reason) => {
                if !is_last {
                    return Err(Error::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "damaged record ({reason}) in a sealed segment that is not the log's \
                             tail"
                        ),
                    ));
                }
                if data[pos..].iter().all(|b| *b == 0) {
                    // The zero-filled preallocation of a log that was not shut down cleanly.
                    tracing::debug!(
                        path = %path.display(),
                        offset = pos,
                        bytes = data.len() - pos,
                        "trimming the preallocated zeros after the last record"
                    );
                } else {
                    if let Some((at, idx)) = find_valid_record_after(&data, pos, expected) {
                        return Err(Error::corrupt(
                            path,
                            pos as u64,
                            format!(
                                "damaged record ({reason}) followed by a valid record (index \
                                 {idx}) at offset {at}: this is not a torn write at the tail"
                            ),
                        ));
                    }
                    tracing::warn!(
                        path = %path.display(),
                        offset = pos,
                        dropped_bytes = data.len() - pos,
                        "torn write at the log tail ({reason}); truncating it away"
                    );
                }
                let f = OpenOptions::new().write(true).open(path).at(path)?;
                f.set_len(pos as u64).at(path)?;
                f.sync_all().at(path)?;
                break;
            }
        }
    }
    if offsets.is_empty() {
        if is_last {
            tracing::warn!(path = %path.display(), "removing empty last log segment");
            fs::remove_file(path).at(path)?;
            *dir_changed = true;
            return Ok(None);
        }
        return Err(Error::corrupt(path, 0, "sealed segment holds no records"));
    }
    let seg = Segment {
        first,
        path: path.to_path_buf(),
        offsets,
        len: pos as u64,
        alloc: pos as u64,
    };
    Ok(Some(Scanned {
        seg,
        data,
        payloads,
    }))
}
