//! Requests a connection answers from this node's state alone: reads (from the current state, or from
//! the view right after the connection's last write), with their watches, and the session-local
//! requests that are not replicated.
//!
//! Left out: ordering (the pipeline's), writes (the write path's).

use super::*;

/// The encoded size of a multiRead's reply over `state`, counted until it passes `max` (so the count
/// stops early and nothing is copied). Nodes the reply would not show (missing, or refused by ACL)
/// count as their data anyway: an upper bound.
pub(super) fn multi_read_size(state: &State, ops: &[Request], max: usize) -> usize {
    // Reply header, and the closing multi header.
    let mut size = 16 + 9;
    for op in ops {
        // Each result's multi header (type, done, err).
        size += 9;
        size += match op {
            Request::GetData(r) => {
                4 + 68
                    + state
                        .node(&r.path)
                        .and_then(|n| n.data.as_ref().map(|d| d.len()))
                        .unwrap_or(0)
            }
            Request::GetChildren(r) => {
                4 + state
                    .children(&r.path)
                    .map(|c| c.iter().map(|n| 4 + n.len()).sum::<usize>())
                    .unwrap_or(0)
            }
            _ => 4,
        };
        if size > max {
            break;
        }
    }
    size
}

impl Conn {
    /// Runs a non-replicated request against the local state and watch table. With a `view` (the state right after this connection's last
    /// write), data reads answer from it and register their watches against the current state with
    /// setWatches' replay rules relative to the view, so a change made since then fires at once; those
    /// events are returned to be sent after the reply.
    pub(super) fn execute_local(
        &mut self,
        req: &Result<Request, ErrorCode>,
        view: Option<&State>,
    ) -> (Result<Response, ErrorCode>, Vec<WatcherEvent>) {
        let req = match req {
            Ok(r) => r,
            Err(code) => return (Err(*code), Vec::new()),
        };
        if let Request::MultiRead(ops) = req {
            let max = self.ctx.node.shared.config.max_frame_bytes + REPLY_SLACK;
            let size = {
                let db = self.ctx.node.shared.db.lock();
                multi_read_size(view.unwrap_or(&db.state), ops, max)
            };
            if size > max {
                tracing::warn!(
                    conn = self.id, peer = %self.peer, session = format_args!("{:#x}", self.session_id),
                    ops = ops.len(), max,
                    "multiRead refused: its reply would exceed max-frame-bytes; answering MarshallingError (read fewer or smaller nodes per multiRead)"
                );
                return (Err(ErrorCode::MarshallingError), Vec::new());
            }
        }
        if let Some(view) = view {
            if let Some(answer) = self.read_from_view(req, view) {
                return answer;
            }
        }
        (self.execute_current(req), Vec::new())
    }

    /// A data read answered from `view`, or `None` for requests that must use the current state.
    pub(super) fn read_from_view(
        &mut self,
        req: &Request,
        view: &State,
    ) -> Option<(Result<Response, ErrorCode>, Vec<WatcherEvent>)> {
        let (path, watch) = match req {
            Request::Exists(r) => (r.path.as_str(), r.watch),
            Request::GetData(r) => (r.path.as_str(), r.watch),
            Request::GetChildren(r) => (r.path.as_str(), r.watch),
            Request::GetChildren2(r) => (r.path.as_str(), r.watch),
            Request::GetAcl(_) | Request::GetAllChildrenNumber(_) | Request::GetEphemerals(_) => {
                ("", false)
            }
            Request::MultiRead(ops) if ops.iter().all(|o| !o.sets_watch()) => ("", false),
            _ => return None,
        };
        let shared = self.ctx.node.shared.clone();
        let limit = shared.config.max_watches_per_session;
        let mut db = shared.db.lock();
        let db = &mut *db;
        if watch && limit > 0 && db.watches.count_for(self.id) >= limit {
            return None;
        }
        let mut scratch = WatchTable::new();
        let result = roster_state::read(
            view,
            &mut scratch,
            self.id,
            self.session_id,
            req,
            &self.auth,
        );
        let mut later = Vec::new();
        if watch {
            let path = if path.is_empty() { "/" } else { path }.to_string();
            let mut sw = SetWatches2 {
                relative_zxid: view.last_zxid(),
                ..Default::default()
            };
            match (req, &result) {
                (Request::Exists(_), Ok(_)) | (Request::GetData(_), Ok(_)) => {
                    sw.data_watches.push(path)
                }
                (Request::Exists(_), Err(ErrorCode::NoNode)) => sw.exist_watches.push(path),
                (Request::GetChildren(_) | Request::GetChildren2(_), Ok(_)) => {
                    sw.child_watches.push(path)
                }
                _ => {}
            }
            later = db.watches.set_watches(&db.state, self.id, &sw);
        }
        Some((result, later))
    }

    /// Runs a non-replicated request against the current state and watch table.
    pub(super) fn execute_current(&mut self, req: &Request) -> Result<Response, ErrorCode> {
        let shared = self.ctx.node.shared.clone();
        let limit = shared.config.max_watches_per_session;
        let mut db = shared.db.lock();
        let db = &mut *db;
        let sets_watch = match req {
            Request::Exists(r) => r.watch,
            Request::GetData(r) => r.watch,
            Request::GetChildren(r) => r.watch,
            Request::GetChildren2(r) => r.watch,
            Request::AddWatch(_) => true,
            _ => false,
        };
        if sets_watch && limit > 0 && db.watches.count_for(self.id) >= limit {
            tracing::warn!(
                conn = self.id, session = format_args!("{:#x}", self.session_id), limit,
                "watch refused: this connection holds the most watches allowed (setting max-watches-per-session)"
            );
            return Err(ErrorCode::QuotaExceeded);
        }
        match req {
            // Not reached: reconfig is a write (see `cluster::reconfig`); it cannot wait for a membership change here.
            Request::Reconfig(r) => crate::cluster::reconfig::local(r),
            Request::Sync(r) => Ok(Response::Sync(SyncResponse {
                path: r.path.clone(),
            })),
            Request::SetWatches(sw) => {
                let sw2 = SetWatches2 {
                    relative_zxid: sw.relative_zxid,
                    data_watches: sw.data_watches.clone(),
                    exist_watches: sw.exist_watches.clone(),
                    child_watches: sw.child_watches.clone(),
                    persistent_watches: vec![],
                    persistent_recursive_watches: vec![],
                };
                // Replayed events carry zxid -1, as ZooKeeper sends them.
                for e in db.watches.set_watches(&db.state, self.id, &sw2) {
                    self.push_event(&e, -1);
                }
                Ok(Response::Empty)
            }
            Request::SetWatches2(sw) => {
                for e in db.watches.set_watches(&db.state, self.id, sw) {
                    self.push_event(&e, -1);
                }
                Ok(Response::Empty)
            }
            Request::AddWatch(r) => {
                let mode = AddWatchMode::from_i32(r.mode).map_err(|_| ErrorCode::BadArguments)?;
                db.watches.add_watch(self.id, &r.path, mode);
                Ok(Response::Error(ErrorResponse { err: 0 }))
            }
            Request::RemoveWatches(r) => {
                let t =
                    WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::BadArguments)?;
                db.watches
                    .remove_watches(self.id, &r.path, t, false)
                    .map(|_| Response::Empty)
            }
            Request::CheckWatches(r) => {
                let t =
                    WatcherType::from_i32(r.watcher_type).map_err(|_| ErrorCode::BadArguments)?;
                db.watches
                    .check_watches(self.id, &r.path, t)
                    .map(|_| Response::Empty)
            }
            // Answered by the connection before the pipeline (`handle_sasl`); never queued.
            Request::Sasl(_) => Err(ErrorCode::AuthFailed),
            Request::WhoAmI => Ok(Response::WhoAmI(WhoAmIResponse {
                client_info: self
                    .auth
                    .iter()
                    .filter(|id| id.scheme != "super")
                    // Like ZooKeeper's DigestAuthenticationProvider.getUserName: the user, not the hash.
                    .map(|id| ClientInfo {
                        auth_scheme: id.scheme.clone(),
                        user: match id.scheme.as_str() {
                            "digest" => id.id.split(':').next().unwrap_or_default().to_string(),
                            _ => id.id.clone(),
                        },
                    })
                    .collect(),
            })),
            other => roster_state::read(
                &db.state,
                &mut db.watches,
                self.id,
                self.session_id,
                other,
                &self.auth,
            ),
        }
    }
}
