//! [`Request`]: every client request after the handshake, decoded by its opcode from a `RequestHeader`
//! and a body. Multi and multiRead carry their sub-operations as `Request`s, restricted to the op types
//! ZooKeeper allows in each (`MultiOperationRecord`).

use crate::jute::{DecodeError, Jute};
use crate::op_code::OpCode;
use crate::records::*;
use bytes::BufMut;
use serde::{Deserialize, Serialize};

/// A decoded client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// create (1): replies with the path.
    Create(CreateRequest),
    /// create2 (15): replies with path and stat.
    Create2(CreateRequest),
    /// createContainer (19).
    CreateContainer(CreateRequest),
    /// createTTL (21).
    CreateTtl(CreateTtlRequest),
    /// delete (2).
    Delete(DeleteRequest),
    /// exists (3).
    Exists(ExistsRequest),
    /// getData (4).
    GetData(GetDataRequest),
    /// setData (5).
    SetData(SetDataRequest),
    /// getACL (6).
    GetAcl(GetAclRequest),
    /// setACL (7).
    SetAcl(SetAclRequest),
    /// getChildren (8).
    GetChildren(GetChildrenRequest),
    /// getChildren2 (12).
    GetChildren2(GetChildren2Request),
    /// check (13).
    Check(CheckVersionRequest),
    /// multi (14): write ops, all or nothing.
    Multi(Vec<Request>),
    /// multiRead (22): getData/getChildren ops, each answered on its own.
    MultiRead(Vec<Request>),
    /// sync (9).
    Sync(SyncRequest),
    /// ping (11).
    Ping,
    /// auth (100).
    Auth(AuthPacket),
    /// setWatches (101).
    SetWatches(SetWatches),
    /// setWatches2 (105).
    SetWatches2(SetWatches2),
    /// addWatch (106).
    AddWatch(AddWatchRequest),
    /// removeWatches (18).
    RemoveWatches(RemoveWatchesRequest),
    /// checkWatches (17).
    CheckWatches(CheckWatchesRequest),
    /// getEphemerals (103).
    GetEphemerals(GetEphemeralsRequest),
    /// getAllChildrenNumber (104).
    GetAllChildrenNumber(GetAllChildrenNumberRequest),
    /// whoAmI (107).
    WhoAmI,
    /// closeSession (-11).
    CloseSession,
    /// reconfig (16).
    Reconfig(ReconfigRequest),
    /// sasl (102).
    Sasl(GetSaslRequest),
}

impl Request {
    /// The request's opcode.
    pub fn op_code(&self) -> OpCode {
        match self {
            Request::Create(_) => OpCode::Create,
            Request::Create2(_) => OpCode::Create2,
            Request::CreateContainer(_) => OpCode::CreateContainer,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::Sasl(_) => OpCode::Sasl,
        }
    }

    /// Whether the request changes the replicated state (goes through the log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create(_)
                | Request::Create2(_)
                | Request::CreateContainer(_)
                | Request::CreateTtl(_)
                | Request::Delete(_)
                | Request::SetData(_)
                | Request::SetAcl(_)
                | Request::Check(_)
                | Request::Multi(_)
                | Request::CloseSession
                | Request::Reconfig(_)
        )
    }

    /// Whether the request may be a sub-op of a write `multi` (see [`OpCode::allowed_in_multi`]).
    pub fn allowed_in_multi(&self) -> bool {
        self.op_code().allowed_in_multi()
    }

    /// Whether the request reads the data tree (node data, children, ACLs, stats): the reads a
    /// server set to linearizable reads puts behind a read barrier. Session and watch
    /// bookkeeping (setWatches, checkWatches, whoAmI, ...) is not a data read.
    pub fn is_data_read(&self) -> bool {
        matches!(
            self,
            Request::Exists(_)
                | Request::GetData(_)
                | Request::GetChildren(_)
                | Request::GetChildren2(_)
                | Request::GetAcl(_)
                | Request::GetAllChildrenNumber(_)
                | Request::GetEphemerals(_)
                | Request::MultiRead(_)
        )
    }

    /// Whether the request asks the server to set a watch.
    pub fn sets_watch(&self) -> bool {
        match self {
            Request::Exists(r) => r.watch,
            Request::GetData(r) => r.watch,
            Request::GetChildren(r) => r.watch,
            Request::GetChildren2(r) => r.watch,
            Request::AddWatch(_) | Request::SetWatches(_) | Request::SetWatches2(_) => true,
            _ => false,
        }
    }

    /// The path the request names, if it names one.
    pub fn path(&self) -> Option<&str> {
        Some(match self {
            Request::Create(r) | Request::Create2(r) | Request::CreateContainer(r) => &r.path,
            Request::CreateTtl(r) => &r.path,
            Request::Delete(r) => &r.path,
            Request::Exists(r) => &r.path,
            Request::GetData(r) => &r.path,
            Request::SetData(r) => &r.path,
            Request::GetAcl(r) => &r.path,
            Request::SetAcl(r) => &r.path,
            Request::GetChildren(r) => &r.path,
            Request::GetChildren2(r) => &r.path,
            Request::Check(r) => &r.path,
            Request::Sync(r) => &r.path,
            Request::AddWatch(r) => &r.path,
            Request::RemoveWatches(r) => &r.path,
            Request::CheckWatches(r) => &r.path,
            Request::GetEphemerals(r) => &r.prefix_path,
            Request::GetAllChildrenNumber(r) => &r.path,
            _ => return None,
        })
    }

    /// Decodes a request body of the given opcode. Bytes after the record are ignored, as ZooKeeper
    /// reads what it needs from a request and never looks at the rest.
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Request, DecodeError> {
        let mut buf = body;
        Self::decode_from(op, &mut buf)
    }

    fn decode_from(op: OpCode, buf: &mut &[u8]) -> Result<Request, DecodeError> {
        let d = buf;
        Ok(match op {
            OpCode::Create => Request::Create(Jute::decode(d)?),
            OpCode::Create2 => Request::Create2(Jute::decode(d)?),
            OpCode::CreateContainer => Request::CreateContainer(Jute::decode(d)?),
            OpCode::CreateTtl => Request::CreateTtl(Jute::decode(d)?),
            OpCode::Delete => Request::Delete(Jute::decode(d)?),
            OpCode::Exists => Request::Exists(Jute::decode(d)?),
            OpCode::GetData => Request::GetData(Jute::decode(d)?),
            OpCode::SetData => Request::SetData(Jute::decode(d)?),
            OpCode::GetAcl => Request::GetAcl(Jute::decode(d)?),
            OpCode::SetAcl => Request::SetAcl(Jute::decode(d)?),
            OpCode::GetChildren => Request::GetChildren(Jute::decode(d)?),
            OpCode::GetChildren2 => Request::GetChildren2(Jute::decode(d)?),
            OpCode::Check => Request::Check(Jute::decode(d)?),
            OpCode::Multi => Request::Multi(decode_multi(d, false)?),
            OpCode::MultiRead => Request::MultiRead(decode_multi(d, true)?),
            OpCode::Sync => Request::Sync(Jute::decode(d)?),
            OpCode::Ping => Request::Ping,
            OpCode::Auth => Request::Auth(Jute::decode(d)?),
            OpCode::SetWatches => Request::SetWatches(Jute::decode(d)?),
            OpCode::SetWatches2 => Request::SetWatches2(Jute::decode(d)?),
            OpCode::AddWatch => Request::AddWatch(Jute::decode(d)?),
            OpCode::RemoveWatches => Request::RemoveWatches(Jute::decode(d)?),
            OpCode::CheckWatches => Request::CheckWatches(Jute::decode(d)?),
            OpCode::GetEphemerals => Request::GetEphemerals(Jute::decode(d)?),
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber(Jute::decode(d)?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Reconfig => Request::Reconfig(Jute::decode(d)?),
            OpCode::Sasl => Request::Sasl(Jute::decode(d)?),
            OpCode::Notification
            | OpCode::DeleteContainer
            | OpCode::CreateSession
            | OpCode::Error => {
                return Err(DecodeError::Unknown {
                    what: "client opcode",
                    value: op.code(),
                })
            }
        })
    }

    /// Appends the request body (without header).
    pub fn encode_body<B: BufMut>(&self, out: &mut B) {
        match self {
            Request::Create(r) | Request::Create2(r) | Request::CreateContainer(r) => r.encode(out),
            Request::CreateTtl(r) => r.encode(out),
            Request::Delete(r) => r.encode(out),
            Request::Exists(r) => r.encode(out),
            Request::GetData(r) => r.encode(out),
            Request::SetData(r) => r.encode(out),
            Request::GetAcl(r) => r.encode(out),
            Request::SetAcl(r) => r.encode(out),
            Request::GetChildren(r) => r.encode(out),
            Request::GetChildren2(r) => r.encode(out),
            Request::Check(r) => r.encode(out),
            Request::Multi(ops) | Request::MultiRead(ops) => {
                for op in ops {
                    MultiHeader {
                        op_type: op.op_code().code(),
                        done: false,
                        err: -1,
                    }
                    .encode(out);
                    op.encode_body(out);
                }
                MultiHeader {
                    op_type: -1,
                    done: true,
                    err: -1,
                }
                .encode(out);
            }
            Request::Sync(r) => r.encode(out),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
            Request::Auth(r) => r.encode(out),
            Request::SetWatches(r) => r.encode(out),
            Request::SetWatches2(r) => r.encode(out),
            Request::AddWatch(r) => r.encode(out),
            Request::RemoveWatches(r) => r.encode(out),
            Request::CheckWatches(r) => r.encode(out),
            Request::GetEphemerals(r) => r.encode(out),
            Request::GetAllChildrenNumber(r) => r.encode(out),
            Request::Reconfig(r) => r.encode(out),
            Request::Sasl(r) => r.encode(out),
        }
    }
}

fn decode_multi(buf: &mut &[u8], read: bool) -> Result<Vec<Request>, DecodeError> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::decode(buf)?;
        if h.done {
            return Ok(ops);
        }
        let op = OpCode::from_i32(h.op_type)?;
        let allowed = if read {
            op.allowed_in_multi_read()
        } else {
            op.allowed_in_multi()
        };
        if !allowed {
            return Err(DecodeError::Unknown {
                what: if read { "multiRead op" } else { "multi op" },
                value: h.op_type,
            });
        }
        ops.push(Request::decode_from(op, buf)?);
    }
}
