//! Ephemeral-sequential candidates, shared by the election, the mutex and owned names.
//!
//! A candidate is a node `DIR/_c_<uuid>-<lock name><10-digit sequence>`, Curator's "protected" form:
//! if the create's reply is lost with the connection, the node it may have created is found again by its
//! UUID prefix instead of being left behind as an orphan that would block everyone. Candidates are
//! ordered by their sequence number, as Curator's `StandardLockInternalsDriver` orders them (the text
//! after the lock name); the first holds the right, each other one watches only the one before it.

use roster_proto::{CreateMode, ErrorCode, Stat};

use super::{basename, ensure_path, join, uuid_v4};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ops::CreateOptions;

/// Creates a protected ephemeral-sequential node under `dir` (created if missing) and returns its path
/// and stat.
pub(crate) async fn create_protected(
    client: &Client,
    dir: &str,
    lock_name: &str,
    data: &[u8],
) -> Result<(String, Stat)> {
    let prefix = format!("_c_{}-{lock_name}", uuid_v4());
    let path = join(dir, &prefix);
    let options = CreateOptions::new(CreateMode::EphemeralSequential);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.create2(&path, data, &options).await {
            Ok(created) => return Ok(created),
            Err(Error::Code(ErrorCode::NoNode)) if attempts < 10 => {
                ensure_path(client, dir).await?
            }
            Err(e) if e.is_connection_problem() && attempts < 10 => {
                // Did it happen? Look for our UUID once the session is back.
                super::wait_connected(client).await?;
                if let Some(found) = find_prefixed(client, dir, &prefix).await? {
                    return Ok(found);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn find_prefixed(client: &Client, dir: &str, prefix: &str) -> Result<Option<(String, Stat)>> {
    let children = match client.get_children(dir).await {
        Ok(c) => c,
        Err(Error::Code(ErrorCode::NoNode)) => return Ok(None),
        Err(e) => return Err(e),
    };
    for name in children.into_iter().filter(|n| n.starts_with(prefix)) {
        let path = join(dir, &name);
        if let Some(stat) = client.exists(&path).await? {
            return Ok(Some((path, stat)));
        }
    }
    Ok(None)
}

/// The sequence number of a candidate name made with `lock_name`, if it is one.
pub(crate) fn sequence_of(name: &str, lock_name: &str) -> Option<u64> {
    let at = name.rfind(lock_name)?;
    let digits = &name[at + lock_name.len()..];
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// The candidates among `children`, first in line first.
pub(crate) fn sorted_candidates(children: Vec<String>, lock_name: &str) -> Vec<String> {
    let mut c: Vec<(u64, String)> = children
        .into_iter()
        .filter_map(|n| sequence_of(&n, lock_name).map(|s| (s, n)))
        .collect();
    c.sort();
    c.into_iter().map(|(_, n)| n).collect()
}

/// Where `node` stands in line: `Ok(None)` if it is first, `Ok(Some(predecessor path))` if not,
/// `Err(NoNode)` if it is not among the candidates any more.
pub(crate) async fn position(
    client: &Client,
    dir: &str,
    node: &str,
    lock_name: &str,
) -> Result<(usize, Option<String>)> {
    let sorted = sorted_candidates(client.get_children(dir).await?, lock_name);
    let me = basename(node);
    match sorted.iter().position(|n| n == me) {
        Some(0) => Ok((0, None)),
        Some(i) => Ok((i, Some(join(dir, &sorted[i - 1])))),
        None => Err(Error::Code(ErrorCode::NoNode)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_sequence_not_by_uuid() {
        let names = vec![
            "_c_ffff-latch-0000000003".to_string(),
            "_c_0000-latch-0000000010".to_string(),
            "_c_aaaa-latch-0000000001".to_string(),
            "member-1".to_string(),
            "latch-0000000002".to_string(),
        ];
        assert_eq!(
            sorted_candidates(names, "latch-"),
            vec![
                "_c_aaaa-latch-0000000001",
                "latch-0000000002",
                "_c_ffff-latch-0000000003",
                "_c_0000-latch-0000000010"
            ]
        );
        assert_eq!(sequence_of("_c_x-lock-0000000007", "latch-"), None);
    }
}
