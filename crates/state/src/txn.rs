//! [`Txn`]: the Raft command, the only input that changes a [`crate::State`].
//!
//! The leader builds a `Txn` for each write: it stamps `time` once from its own clock (ZooKeeper's
//! `TxnHeader.time`, read in `PrepRequestProcessor`), names the session, and copies the session's
//! identities into `auth` for requests, so that apply can check ACLs without any node-local state. The
//! server serializes it with postcard; the zxid is not inside: it is the Raft log index of the entry.
//!
//! Validation happens in apply, not on the leader: a `Txn` that fails (NoNode, BadVersion, NoAuth...) is
//! still a log entry, and every replica computes the same error for it.
//!
//! Layout: postcard writes a variant by its index, so variants are only ever appended. Client writes
//! logged before node data could be null are [`TxnOp::RequestV1`] (index 2), whose data fields are plain
//! byte strings; they are read as they were and applied like [`TxnOp::Request`], which new entries use.

use roster_proto::{Id, Request};
use serde::{Deserialize, Serialize};

/// One replicated command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Txn {
    /// The session issuing the command (ignored by `CreateSession`, which assigns one).
    pub session_id: i64,
    /// Leader's wall clock when it proposed the command, ms since the epoch: ctime/mtime of changed nodes
    /// and the reference time for TTL expiry.
    pub time: i64,
    /// What to do.
    pub op: TxnOp,
}

/// The command's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TxnOp {
    /// A new session; apply assigns the id deterministically.
    CreateSession {
        /// Negotiated timeout in milliseconds.
        timeout_ms: i32,
        /// The password the leader generated for the session.
        passwd: bytes::Bytes,
    },
    /// End of `session_id`: the client's closeSession or the leader's expiry decision. Deletes its
    /// ephemerals.
    CloseSession,
    /// A client write as logged before node data could be null (read from older logs, never written):
    /// its data fields are plain byte strings, read as non-null. Applied like [`TxnOp::Request`].
    RequestV1 {
        /// The request, its data in the old layout (see [`roster_proto::data`]).
        #[serde(with = "request_v1")]
        request: Request,
        /// The session's identities.
        auth: Vec<Id>,
    },
    /// Leader-proposed TTL cleanup (from [`crate::State::ttl_candidates`]). Apply re-checks that each path
    /// is still a childless TTL node whose TTL has run out at `time`, and skips it otherwise.
    ExpireTtl {
        /// Candidate paths.
        paths: Vec<String>,
    },
    /// The ensemble's configuration changed: set the data of `/zookeeper/config` (ZooKeeper's dynamic
    /// config format, built by the leader from the Raft membership). Apply bumps its version, mzxid and
    /// mtime like a setData, without an ACL check (the server proposes it, not a client), and fires its
    /// data watches. Appended last: older entries keep their encoding.
    SetConfig {
        /// The new content of `/zookeeper/config`.
        data: bytes::Bytes,
    },
    /// A client write (create*, delete, setData, setACL, check, multi; sync is answered too) with the
    /// session's identities. Its data fields may be null. Appended last: older entries keep their
    /// encoding.
    Request {
        /// The request as decoded from the wire.
        request: Request,
        /// The session's identities (digest, ip, super...), for ACL checks and the `auth` scheme.
        auth: Vec<Id>,
    },
    /// The cluster's format version rose to `version` (the leader decided every member runs it; see
    /// the server's `format.rs`). Changes nothing in the tree; the server records it. Exists only in
    /// builds of format 3 (`format-next`), and is only written once every member runs one.
    #[cfg(feature = "format-next")]
    SetFormat {
        /// The new cluster format version.
        version: u8,
    },
}

/// serde for [`TxnOp::RequestV1`]'s request: the request's own encoding with data in the old layout.
mod request_v1 {
    use roster_proto::data::with_legacy_data;
    use roster_proto::Request;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(r: &Request, s: S) -> Result<S::Ok, S::Error> {
        with_legacy_data(|| r.serialize(s))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
        with_legacy_data(|| Request::deserialize(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use roster_proto::{Acl, CreateRequest, CreateTtlRequest, SetDataRequest};

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn create(path: &str, data: &'static [u8]) -> Request {
        Request::Create(CreateRequest {
            path: path.into(),
            data: Some(Bytes::from_static(data)),
            acl: Acl::open_unsafe(),
            flags: 0,
        })
    }

    fn set(data: Option<&'static [u8]>) -> Request {
        Request::SetData(SetDataRequest {
            path: "/a".into(),
            data: data.map(Bytes::from_static),
            version: -1,
        })
    }

    fn ttl() -> Request {
        Request::CreateTtl(CreateTtlRequest {
            path: "/t".into(),
            data: Some(Bytes::new()),
            acl: Acl::open_unsafe(),
            flags: 5,
            ttl: 1000,
        })
    }

    /// Client writes as the build before null data logged them (postcard of `Txn { session_id: 7,
    /// time: 99, op: Request { request, auth: [] } }`, variant index 2), and what they must read as.
    #[test]
    fn entries_logged_before_null_data_still_decode() {
        let old = [
            (
                "0ec6010200022f61026869013e05776f726c6406616e796f6e650000",
                create("/a", b"hi"),
            ),
            (
                "0ec6010203022f7400013e05776f726c6406616e796f6e650ad00f00",
                ttl(),
            ),
            ("0ec6010207022f6101780100", set(Some(b"x"))),
            (
                "0ec601020d0300022f61026869013e05776f726c6406616e796f6e650007022f6101780103022f7400\
                 013e05776f726c6406616e796f6e650ad00f00",
                Request::Multi(vec![create("/a", b"hi"), set(Some(b"x")), ttl()]),
            ),
        ];
        for (hex, request) in old {
            let hex: String = hex.split_whitespace().collect();
            let txn: Txn = postcard::from_bytes(&unhex(&hex)).unwrap();
            assert_eq!(
                txn,
                Txn {
                    session_id: 7,
                    time: 99,
                    op: TxnOp::RequestV1 {
                        request,
                        auth: vec![]
                    },
                }
            );
            // The legacy variant writes the same bytes back.
            assert_eq!(postcard::to_allocvec(&txn).unwrap(), unhex(&hex));
        }
    }

    #[test]
    fn new_entries_keep_null_apart_from_empty() {
        for data in [None, Some(&b""[..]), Some(&b"x"[..])] {
            let txn = Txn {
                session_id: 7,
                time: 99,
                op: TxnOp::Request {
                    request: Request::Multi(vec![set(data), create("/b", b"")]),
                    auth: vec![],
                },
            };
            let bytes = postcard::to_allocvec(&txn).unwrap();
            assert_eq!(postcard::from_bytes::<Txn>(&bytes).unwrap(), txn);
        }
    }
}
