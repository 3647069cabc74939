//! [`read`]: answers a read request from a `&State` and registers the watch it asks for in the node-local
//! [`WatchTable`], in one step, so that no change can slip between the answer and the registration (the
//! server holds both behind one lock, or one task, while calling this).
//!
//! # Rules (ZooKeeper 3.8's `FinalRequestProcessor` and `DataTree`)
//! - **exists**: a path with a NUL → BadArguments; on a present node READ is checked (NoAuth sets no
//!   watch); the watch is registered whether or not the node exists (an "exist" watch when it does not);
//!   a missing node → NoNode (the watch stays set).
//! - **getData**, **getChildren**, **getChildren2**: missing (or invalid) path → NoNode and no watch; READ
//!   → NoAuth and no watch; then the watch, then the answer. Children are returned sorted.
//! - **getACL**: NoNode; READ *or* ADMIN → NoAuth; without ADMIN the digest ids are shown as `user:x`.
//! - **getAllChildrenNumber**: NoNode; READ; the number of descendants (for `/` every node but the root).
//! - **getEphemerals**: the session's ephemerals whose path starts with the prefix (an empty or `/`
//!   prefix, after trimming, means all), sorted.
//! - **multiRead**: getData and getChildren ops, each answered on its own (errors as
//!   `MultiResult::Error`), watches registered as asked; any other op type fails the whole request with
//!   MarshallingError, as `MultiOperationRecord` would refuse to decode it.
//! - **addWatch** (`ErrorResponse{0}`), **checkWatches**, **removeWatches**: on the watch table; an
//!   unknown mode or watcher type → MarshallingError (ZooKeeper's `fromInt` throws). No path checks.
//! - **sync** answers its path (the server decides whether it first waits for the log); **whoAmI**
//!   lists `auth` with the digest user names (`AuthUtil.getClientInfos`); **ping** → `Empty`.
//!
//! Anything else (writes, auth, SetWatches, SASL) is not a read → `Unimplemented`: writes go through
//! [`crate::Txn`], SetWatches through [`WatchTable::set_watches`] because its events must be sent.

use crate::acl::{check_acl, mask_digests, user_name, GET_ACL_PERMS};
use crate::apply::State;
use crate::watch::WatchTable;
use roster_proto::{
    perms, AddWatchMode, ClientInfo, ErrorCode, ErrorResponse, GetAclResponse,
    GetAllChildrenNumberResponse, GetChildren2Response, GetChildrenResponse, GetDataResponse,
    GetEphemeralsResponse, Id, MultiResult, Request, Response, SyncResponse, WatcherType,
    WhoAmIResponse,
};

/// Answers a read request for `session_id` on connection `watcher`, registering any watch it sets.
pub fn read(
    state: &State,
    watches: &mut WatchTable,
    watcher: u64,
    session_id: i64,
    req: &Request,
    auth: &[Id],
) -> Result<Response, ErrorCode> {
    // ZooKeeper's DataTree also stores the root under the key "", so reads of "" answer for "/".
    let aliased;
    let req = match root_alias(req) {
        Some(r) => {
            aliased = r;
            &aliased
        }
        None => req,
    };
    match req {
        Request::Exists(r) => {
            if r.path.contains('\0') {
                return Err(ErrorCode::BadArguments);
            }
            if let Some(n) = state.node(&r.path) {
                check_acl(state.tree().acl_of(n), perms::READ, auth)?;
            }
            if r.watch {
                watches.add_data_watch(watcher, &r.path);
            }
            state
                .stat(&r.path)
                .map(Response::Stat)
                .ok_or(ErrorCode::NoNode)
        }
        Request::GetData(r) => {
            get_data(state, watches, watcher, &r.path, r.watch, auth).map(Response::GetData)
        }
        Request::GetChildren(r) => get_children(state, watches, watcher, &r.path, r.watch, auth)
            .map(|(children, _)| Response::GetChildren(GetChildrenResponse { children })),
        Request::GetChildren2(r) => get_children(state, watches, watcher, &r.path, r.watch, auth)
            .map(|(children, stat)| {
                Response::GetChildren2(GetChildren2Response { children, stat })
            }),
        Request::GetAcl(r) => {
            let n = state.node(&r.path).ok_or(ErrorCode::NoNode)?;
            let acl = state.tree().acl_of(n);
            check_acl(acl, GET_ACL_PERMS, auth)?;
            let acl = if check_acl(acl, perms::ADMIN, auth).is_ok() {
                acl.to_vec()
            } else {
                mask_digests(acl)
            };
            Ok(Response::GetAcl(GetAclResponse {
                acl,
                stat: n.stat(),
            }))
        }
        Request::GetAllChildrenNumber(r) => {
            let n = state.node(&r.path).ok_or(ErrorCode::NoNode)?;
            check_acl(state.tree().acl_of(n), perms::READ, auth)?;
            let total = state.tree().descendant_count(&r.path);
            Ok(Response::AllChildrenNumber(GetAllChildrenNumberResponse {
                total_number: i32::try_from(total).unwrap_or(i32::MAX),
            }))
        }
        Request::GetEphemerals(r) => {
            let prefix = r.prefix_path.as_str();
            let all = prefix.trim().is_empty() || prefix.trim() == "/";
            let ephemerals = state
                .session(session_id)
                .map(|s| {
                    s.ephemerals
                        .iter()
                        .filter(|p| all || p.starts_with(prefix))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Ok(Response::GetEphemerals(GetEphemeralsResponse {
                ephemerals,
            }))
        }
        Request::MultiRead(ops) => {
            if !ops
                .iter()
                .all(|op| matches!(op, Request::GetData(_) | Request::GetChildren(_)))
            {
                return Err(ErrorCode::MarshallingError);
            }
            let results = ops
                .iter()
                .map(|op| match op {
                    Request::GetData(r) => {
                        match get_data(state, watches, watcher, &r.path, r.watch, auth) {
                            Ok(d) => MultiResult::GetData(d.data, d.stat),
                            Err(e) => MultiResult::Error(e),
                        }
                    }
                    Request::GetChildren(r) => {
                        match get_children(state, watches, watcher, &r.path, r.watch, auth) {
                            Ok((children, _)) => MultiResult::GetChildren(children),
                            Err(e) => MultiResult::Error(e),
                        }
                    }
                    _ => MultiResult::Error(ErrorCode::MarshallingError),
                })
                .collect();
            Ok(Response::Multi(results))
        }
        Request::AddWatch(r) => {
            let mode = AddWatchMode::from_i32(r.mode).map_err(|_| ErrorCode::MarshallingError)?;
            watches.add_watch(watcher, &r.path, mode);
            Ok(Response::Error(ErrorResponse { err: 0 }))
        }
        Request::CheckWatches(r) => {
            let t =
                WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::MarshallingError)?;
            watches
                .check_watches(watcher, &r.path, t)
                .map(|()| Response::Empty)
        }
        Request::RemoveWatches(r) => {
            let t =
                WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::MarshallingError)?;
            watches
                .remove_watches(watcher, &r.path, t, false)
                .map(|_| Response::Empty)
        }
        Request::Sync(r) => Ok(Response::Sync(SyncResponse {
            path: r.path.clone(),
        })),
        Request::WhoAmI => Ok(Response::WhoAmI(WhoAmIResponse {
            client_info: auth
                .iter()
                .map(|id| ClientInfo {
                    auth_scheme: id.scheme.clone(),
                    user: user_name(id),
                })
                .collect(),
        })),
        Request::Ping => Ok(Response::Empty),
        _ => Err(ErrorCode::Unimplemented),
    }
}

fn get_data(
    state: &State,
    watches: &mut WatchTable,
    watcher: u64,
    path: &str,
    watch: bool,
    auth: &[Id],
) -> Result<GetDataResponse, ErrorCode> {
    let n = state.node(path).ok_or(ErrorCode::NoNode)?;
    check_acl(state.tree().acl_of(n), perms::READ, auth)?;
    if watch {
        watches.add_data_watch(watcher, path);
    }
    Ok(GetDataResponse {
        data: n.data.as_deref().map(bytes::Bytes::copy_from_slice),
        stat: n.stat(),
    })
}

fn get_children(
    state: &State,
    watches: &mut WatchTable,
    watcher: u64,
    path: &str,
    watch: bool,
    auth: &[Id],
) -> Result<(Vec<String>, roster_proto::Stat), ErrorCode> {
    let n = state.node(path).ok_or(ErrorCode::NoNode)?;
    check_acl(state.tree().acl_of(n), perms::READ, auth)?;
    if watch {
        watches.add_child_watch(watcher, path);
    }
    Ok((state.tree().children(path), n.stat()))
}

/// The same read with the path "" replaced by "/", if the request is a read of "".
fn root_alias(req: &Request) -> Option<Request> {
    let root = || "/".to_string();
    Some(match req {
        Request::Exists(r) if r.path.is_empty() => Request::Exists(roster_proto::ExistsRequest {
            path: root(),
            ..r.clone()
        }),
        Request::GetData(r) if r.path.is_empty() => {
            Request::GetData(roster_proto::GetDataRequest {
                path: root(),
                ..r.clone()
            })
        }
        Request::GetChildren(r) if r.path.is_empty() => {
            Request::GetChildren(roster_proto::GetChildrenRequest {
                path: root(),
                ..r.clone()
            })
        }
        Request::GetChildren2(r) if r.path.is_empty() => {
            Request::GetChildren2(roster_proto::GetChildren2Request {
                path: root(),
                ..r.clone()
            })
        }
        Request::GetAcl(r) if r.path.is_empty() => {
            Request::GetAcl(roster_proto::GetAclRequest { path: root() })
        }
        Request::GetAllChildrenNumber(r) if r.path.is_empty() => {
            Request::GetAllChildrenNumber(roster_proto::GetAllChildrenNumberRequest {
                path: root(),
            })
        }
        _ => return None,
    })
}
