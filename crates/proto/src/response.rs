//! [`Response`]: reply bodies, one variant per response record, and [`MultiResult`] for the per-op
//! results of multi and multiRead (`MultiResponse.java`).

use crate::error_code::ErrorCode;
use crate::jute::{DecodeError, Jute};
use crate::op_code::OpCode;
use crate::records::*;
use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

/// A reply body (sent only when the header's `err` is 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// No body: delete, ping, auth, setWatches, closeSession, removeWatches, checkWatches.
    Empty,
    /// create.
    Create(CreateResponse),
    /// create2, createContainer, createTTL.
    Create2(Create2Response),
    /// exists, setData, setACL and standalone check: a bare `Stat` record.
    Stat(Stat),
    /// getData and reconfig.
    GetData(GetDataResponse),
    /// getACL.
    GetAcl(GetAclResponse),
    /// getChildren.
    GetChildren(GetChildrenResponse),
    /// getChildren2.
    GetChildren2(GetChildren2Response),
    /// sync.
    Sync(SyncResponse),
    /// multi and multiRead.
    Multi(Vec<MultiResult>),
    /// getEphemerals.
    GetEphemerals(GetEphemeralsResponse),
    /// getAllChildrenNumber.
    AllChildrenNumber(GetAllChildrenNumberResponse),
    /// whoAmI.
    WhoAmI(WhoAmIResponse),
    /// sasl.
    Sasl(SetSaslResponse),
    /// addWatch: `ErrorResponse{err=0}`.
    Error(ErrorResponse),
}

/// One result inside a multi or multiRead reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiResult {
    /// create: the created path.
    Create(String),
    /// create2/createTTL/createContainer: path and stat (sent as type create2).
    Create2(String, Stat),
    /// delete.
    Delete,
    /// setData.
    SetData(Stat),
    /// check.
    Check,
    /// getData (multiRead): data (`None` is null) and stat.
    GetData(Option<Bytes>, Stat),
    /// getChildren (multiRead).
    GetChildren(Vec<String>),
    /// A failed op, or (code 0) an op rolled back because another failed.
    Error(ErrorCode),
}

impl MultiResult {
    fn header_type(&self) -> i32 {
        match self {
            MultiResult::Create(_) => OpCode::Create.code(),
            MultiResult::Create2(..) => OpCode::Create2.code(),
            MultiResult::Delete => OpCode::Delete.code(),
            MultiResult::SetData(_) => OpCode::SetData.code(),
            MultiResult::Check => OpCode::Check.code(),
            MultiResult::GetData(..) => OpCode::GetData.code(),
            MultiResult::GetChildren(_) => OpCode::GetChildren.code(),
            MultiResult::Error(_) => -1,
        }
    }
}

impl Response {
    /// Appends the body.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            Response::Empty => {}
            Response::Create(r) => r.encode(out),
            Response::Create2(r) => r.encode(out),
            Response::Stat(r) => r.encode(out),
            Response::GetData(r) => r.encode(out),
            Response::GetAcl(r) => r.encode(out),
            Response::GetChildren(r) => r.encode(out),
            Response::GetChildren2(r) => r.encode(out),
            Response::Sync(r) => r.encode(out),
            Response::GetEphemerals(r) => r.encode(out),
            Response::AllChildrenNumber(r) => r.encode(out),
            Response::WhoAmI(r) => r.encode(out),
            // ZooKeeper answers a SASL request it cannot serve with a null token (-1), as we do for empty.
            Response::Sasl(r) if r.token.is_empty() => (-1i32).encode(out),
            Response::Sasl(r) => r.encode(out),
            Response::Error(r) => r.encode(out),
            Response::Multi(results) => {
                for r in results {
                    let err = match r {
                        MultiResult::Error(c) => c.code(),
                        _ => 0,
                    };
                    MultiHeader {
                        op_type: r.header_type(),
                        done: false,
                        err,
                    }
                    .encode(out);
                    match r {
                        MultiResult::Create(p) => p.encode(out),
                        MultiResult::Create2(p, s) => {
                            p.encode(out);
                            s.encode(out);
                        }
                        MultiResult::Delete | MultiResult::Check => {}
                        MultiResult::SetData(s) => s.encode(out),
                        MultiResult::GetData(d, s) => {
                            d.encode(out);
                            s.encode(out);
                        }
                        MultiResult::GetChildren(c) => c.encode(out),
                        MultiResult::Error(c) => c.code().encode(out),
                    }
                }
                MultiHeader {
                    op_type: -1,
                    done: true,
                    err: -1,
                }
                .encode(out);
            }
        }
    }

    /// Decodes the body of a successful reply to a request of opcode `op` (the client side).
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Response, DecodeError> {
        let mut b = body;
        let d = &mut b;
        let r = match op {
            OpCode::Create => Response::Create(Jute::decode(d)?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Response::Create2(Jute::decode(d)?)
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl | OpCode::Check => {
                if d.is_empty() {
                    Response::Empty
                } else {
                    Response::Stat(Jute::decode(d)?)
                }
            }
            OpCode::GetData | OpCode::Reconfig => Response::GetData(Jute::decode(d)?),
            OpCode::GetAcl => Response::GetAcl(Jute::decode(d)?),
            OpCode::GetChildren => Response::GetChildren(Jute::decode(d)?),
            OpCode::GetChildren2 => Response::GetChildren2(Jute::decode(d)?),
            OpCode::Sync => Response::Sync(Jute::decode(d)?),
            OpCode::Multi | OpCode::MultiRead => Response::Multi(decode_multi_results(d)?),
            OpCode::GetEphemerals => Response::GetEphemerals(Jute::decode(d)?),
            OpCode::GetAllChildrenNumber => Response::AllChildrenNumber(Jute::decode(d)?),
            OpCode::WhoAmI => Response::WhoAmI(Jute::decode(d)?),
            OpCode::Sasl => Response::Sasl(Jute::decode(d)?),
            OpCode::AddWatch => {
                if d.is_empty() {
                    Response::Empty
                } else {
                    Response::Error(Jute::decode(d)?)
                }
            }
            _ => Response::Empty,
        };
        if !d.is_empty() {
            return Err(DecodeError::Trailing(d.len()));
        }
        Ok(r)
    }
}

fn decode_multi_results(buf: &mut &[u8]) -> Result<Vec<MultiResult>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let h = MultiHeader::decode(buf)?;
        if h.done {
            return Ok(out);
        }
        let r = match h.op_type {
            -1 => {
                let err = i32::decode(buf)?;
                MultiResult::Error(ErrorCode::from_i32(err).ok_or(DecodeError::Unknown {
                    what: "error code",
                    value: err,
                })?)
            }
            t => match OpCode::from_i32(t)? {
                OpCode::Create => MultiResult::Create(Jute::decode(buf)?),
                OpCode::Create2 | OpCode::CreateTtl | OpCode::CreateContainer => {
                    MultiResult::Create2(Jute::decode(buf)?, Jute::decode(buf)?)
                }
                OpCode::Delete => MultiResult::Delete,
                OpCode::Check => MultiResult::Check,
                OpCode::SetData => MultiResult::SetData(Jute::decode(buf)?),
                OpCode::GetData => MultiResult::GetData(Jute::decode(buf)?, Jute::decode(buf)?),
                OpCode::GetChildren => MultiResult::GetChildren(Jute::decode(buf)?),
                _ => {
                    return Err(DecodeError::Unknown {
                        what: "multi result type",
                        value: t,
                    })
                }
            },
        };
        out.push(r);
    }
}
