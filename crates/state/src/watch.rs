//! [`WatchTable`]: the node-local watch registrations of every connection, and the rules that turn
//! [`Change`]s into watch events. Not replicated: each server keeps the watches of its own connections,
//! and feeds it the changes of every applied txn.
//!
//! # Model (ZooKeeper's `WatchManager` and `DataTree`, 3.9/master)
//! Two managers, as in `DataTree`: **data** (getData and exists watches, including exists on a missing
//! node, plus persistent and persistent-recursive watches) and **child** (getChildren watches and
//! persistent watches). Each (watcher, path) pair in a manager holds a *set* of modes: standard
//! (one-shot), persistent, persistent-recursive (ZooKeeper's `WatchStats`). `addWatch(persistent)`
//! registers in both managers, `addWatch(persistentRecursive)` in the data manager only.
//!
//! Triggering a manager at `path` for one event (`WatchManager.triggerWatch`): every watcher registered
//! at `path` fires (and its standard mode is disarmed; persistent modes stay), and every watcher with a
//! persistent-recursive registration on an ancestor fires. A watcher fires at most once per trigger call,
//! however many of its registrations match. A change maps to calls as `DataTree` makes them:
//! - `Created(p)`: data manager at `p`, `NodeCreated`.
//! - `DataChanged(p)`: data manager at `p`, `NodeDataChanged`.
//! - `Deleted(p)`: data manager at `p`, `NodeDeleted`; then child manager at `p`, `NodeDeleted`, skipping
//!   the watchers the data manager just notified (their child watches are still disarmed).
//! - `ChildrenChanged(parent)`: child manager at `parent`, `NodeChildrenChanged`. The child manager never
//!   holds recursive registrations, so recursive watches never see `NodeChildrenChanged`.
//!
//! Within one trigger the events go out in watcher-id order (ZooKeeper uses a `HashSet`: any order is
//! faithful, a fixed one is testable). Every event has state `SyncConnected`.
//!
//! # Reconnect, check and remove
//! [`WatchTable::set_watches`] follows `DataTree.setWatches`: a data watch on a missing node fires
//! `NodeDeleted` and one on a node with `mzxid > relativeZxid` fires `NodeDataChanged`; an exist watch on a
//! present node fires `NodeCreated`; a child watch on a missing node fires `NodeDeleted` and one with
//! `pzxid > relativeZxid` fires `NodeChildrenChanged`; otherwise the watch is re-registered. Persistent
//! and recursive watches are re-added without events. The events are returned, not registered: the watch
//! is consumed by firing.
//!
//! `checkWatches`/`removeWatches` follow `DataTree.containsWatcher`/`removeWatch` of ZooKeeper 3.9+:
//! `Children` and `Data` concern standard watches, `Persistent` the persistent mode in both managers,
//! `PersistentRecursive` the recursive mode, `Any` every mode in both managers. Nothing matching →
//! `NoWatcher`. **The server sends no event for a removal**: the `DataWatchRemoved`, `ChildWatchRemoved`
//! and `PersistentWatchRemoved` events are produced by the client library (`ZKWatchManager`) when the
//! removal succeeds, so `remove_watches` returns an empty list.
//!
//! # Left out
//! ZooKeeper 3.8's single-mode-per-path `WatcherModeManager` (a later standard watch on a path with a
//! persistent watch overwrote it; 3.9 fixed this with `WatchStats`): Roster follows the fixed behaviour.
//! The optimized bitset manager (`WatchManagerOptimized`) is a memory optimisation with the same rules.

use crate::apply::{Change, State};
use roster_proto::{
    AddWatchMode, ErrorCode, EventType, KeeperState, SetWatches, SetWatches2, WatcherEvent,
    WatcherType,
};
use std::collections::{BTreeMap, BTreeSet};

/// Standard (one-shot) mode bit.
const STANDARD: u8 = 1;
/// Persistent mode bit.
const PERSISTENT: u8 = 2;
/// Persistent-recursive mode bit.
const RECURSIVE: u8 = 4;

/// One of the two managers: path → watcher → modes, plus the reverse index.
#[derive(Debug, Clone, Default)]
struct Manager {
    by_path: BTreeMap<String, BTreeMap<u64, u8>>,
    by_watcher: BTreeMap<u64, BTreeSet<String>>,
    /// Number of registrations with the recursive mode (ancestors are only walked when non-zero).
    recursive: usize,
}

impl Manager {
    fn add(&mut self, path: &str, watcher: u64, mode: u8) {
        let modes = self
            .by_path
            .entry(path.to_string())
            .or_default()
            .entry(watcher)
            .or_insert(0);
        if mode == RECURSIVE && *modes & RECURSIVE == 0 {
            self.recursive += 1;
        }
        *modes |= mode;
        self.by_watcher
            .entry(watcher)
            .or_default()
            .insert(path.to_string());
    }

    fn modes(&self, path: &str, watcher: u64) -> u8 {
        self.by_path
            .get(path)
            .and_then(|w| w.get(&watcher))
            .copied()
            .unwrap_or(0)
    }

    /// Sets the modes of (path, watcher), removing the entry when none remain.
    fn set_modes(&mut self, path: &str, watcher: u64, modes: u8) {
        let old = self.modes(path, watcher);
        if old & RECURSIVE != 0 && modes & RECURSIVE == 0 {
            self.recursive -= 1;
        }
        if modes == 0 {
            if let Some(ws) = self.by_path.get_mut(path) {
                ws.remove(&watcher);
                if ws.is_empty() {
                    self.by_path.remove(path);
                }
            }
            if let Some(ps) = self.by_watcher.get_mut(&watcher) {
                ps.remove(path);
                if ps.is_empty() {
                    self.by_watcher.remove(&watcher);
                }
            }
        } else if let Some(m) = self
            .by_path
            .get_mut(path)
            .and_then(|ws| ws.get_mut(&watcher))
        {
            *m = modes;
        }
    }

    /// Removes `mask` modes of (path, watcher); true if any was present.
    fn remove(&mut self, path: &str, watcher: u64, mask: u8) -> bool {
        let old = self.modes(path, watcher);
        if old & mask == 0 {
            return false;
        }
        self.set_modes(path, watcher, old & !mask);
        true
    }

    /// `WatchManager.triggerWatch`: the watchers to notify, disarming standard watches at `path`.
    fn trigger(&mut self, path: &str) -> BTreeSet<u64> {
        let mut fired = BTreeSet::new();
        if let Some(ws) = self.by_path.get(path) {
            let ws: Vec<(u64, u8)> = ws.iter().map(|(w, m)| (*w, *m)).collect();
            for (w, m) in ws {
                fired.insert(w);
                if m & STANDARD != 0 {
                    self.set_modes(path, w, m & !STANDARD);
                }
            }
        }
        if self.recursive > 0 {
            let mut p = path;
            while p != "/" {
                p = crate::path::parent(p);
                if let Some(ws) = self.by_path.get(p) {
                    fired.extend(
                        ws.iter()
                            .filter(|(_, m)| **m & RECURSIVE != 0)
                            .map(|(w, _)| *w),
                    );
                }
            }
        }
        fired
    }

    fn remove_watcher(&mut self, watcher: u64) {
        if let Some(paths) = self.by_watcher.remove(&watcher) {
            for p in paths {
                if let Some(ws) = self.by_path.get_mut(&p) {
                    if let Some(m) = ws.remove(&watcher) {
                        if m & RECURSIVE != 0 {
                            self.recursive -= 1;
                        }
                    }
                    if ws.is_empty() {
                        self.by_path.remove(&p);
                    }
                }
            }
        }
    }

    fn count_for(&self, watcher: u64) -> usize {
        self.by_watcher.get(&watcher).map_or(0, BTreeSet::len)
    }

    fn total(&self) -> usize {
        self.by_path.values().map(BTreeMap::len).sum()
    }
}

fn event(t: EventType, path: &str) -> WatcherEvent {
    WatcherEvent {
        event_type: t.code(),
        state: KeeperState::SyncConnected.code(),
        path: path.to_string(),
    }
}

/// Every watch registered on this server, by connection (watcher) id.
#[derive(Debug, Clone, Default)]
pub struct WatchTable {
    data: Manager,
    child: Manager,
}

impl WatchTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A one-shot data watch (getData, or exists on any node, present or not).
    pub fn add_data_watch(&mut self, watcher: u64, path: &str) {
        self.data.add(path, watcher, STANDARD);
    }

    /// A one-shot child watch (getChildren, getChildren2).
    pub fn add_child_watch(&mut self, watcher: u64, path: &str) {
        self.child.add(path, watcher, STANDARD);
    }

    /// addWatch: persistent (data and child managers) or persistent-recursive (data manager).
    pub fn add_watch(&mut self, watcher: u64, path: &str, mode: AddWatchMode) {
        match mode {
            AddWatchMode::Persistent => {
                self.data.add(path, watcher, PERSISTENT);
                self.child.add(path, watcher, PERSISTENT);
            }
            AddWatchMode::PersistentRecursive => self.data.add(path, watcher, RECURSIVE),
        }
    }

    /// Fires the watches for the changes of one applied txn, in order. One-shot watches disarm.
    pub fn trigger(&mut self, changes: &[Change]) -> Vec<(u64, WatcherEvent)> {
        let mut out = Vec::new();
        for c in changes {
            match c {
                Change::Created(p) => {
                    out.extend(
                        self.data
                            .trigger(p)
                            .into_iter()
                            .map(|w| (w, event(EventType::NodeCreated, p))),
                    );
                }
                Change::DataChanged(p) => {
                    out.extend(
                        self.data
                            .trigger(p)
                            .into_iter()
                            .map(|w| (w, event(EventType::NodeDataChanged, p))),
                    );
                }
                Change::Deleted(p) => {
                    let by_data = self.data.trigger(p);
                    let by_child = self.child.trigger(p);
                    out.extend(
                        by_data
                            .iter()
                            .map(|&w| (w, event(EventType::NodeDeleted, p))),
                    );
                    out.extend(
                        by_child
                            .into_iter()
                            .filter(|w| !by_data.contains(w))
                            .map(|w| (w, event(EventType::NodeDeleted, p))),
                    );
                }
                Change::ChildrenChanged(p) => {
                    out.extend(
                        self.child
                            .trigger(p)
                            .into_iter()
                            .map(|w| (w, event(EventType::NodeChildrenChanged, p))),
                    );
                }
            }
        }
        out
    }

    /// SetWatches2 after a reconnect (`DataTree.setWatches`): returns the events to send now; watches
    /// that did not fire are registered.
    pub fn set_watches(
        &mut self,
        state: &State,
        watcher: u64,
        sw: &SetWatches2,
    ) -> Vec<WatcherEvent> {
        let rel = sw.relative_zxid;
        let mut out = Vec::new();
        for p in &sw.data_watches {
            match state.node(p) {
                None => out.push(event(EventType::NodeDeleted, p)),
                Some(n) if n.mzxid > rel => out.push(event(EventType::NodeDataChanged, p)),
                Some(_) => self.data.add(p, watcher, STANDARD),
            }
        }
        for p in &sw.exist_watches {
            match state.node(p) {
                Some(_) => out.push(event(EventType::NodeCreated, p)),
                None => self.data.add(p, watcher, STANDARD),
            }
        }
        for p in &sw.child_watches {
            match state.node(p) {
                None => out.push(event(EventType::NodeDeleted, p)),
                Some(n) if n.pzxid > rel => out.push(event(EventType::NodeChildrenChanged, p)),
                Some(_) => self.child.add(p, watcher, STANDARD),
            }
        }
        for p in &sw.persistent_watches {
            self.add_watch(watcher, p, AddWatchMode::Persistent);
        }
        for p in &sw.persistent_recursive_watches {
            self.add_watch(watcher, p, AddWatchMode::PersistentRecursive);
        }
        out
    }

    /// SetWatches (v1), by way of SetWatches2 with no persistent watches.
    pub fn set_watches_v1(
        &mut self,
        state: &State,
        watcher: u64,
        sw: &SetWatches,
    ) -> Vec<WatcherEvent> {
        self.set_watches(state, watcher, &upgrade_set_watches(sw))
    }

    /// removeWatches (`DataTree.removeWatch`). `local` is the client's "remove locally even if the server
    /// cannot be reached" flag: it never changes what the server does, and is accepted for symmetry. The
    /// server sends no event for a removal (the client library makes the `*WatchRemoved` events), so the
    /// list is always empty on success.
    pub fn remove_watches(
        &mut self,
        watcher: u64,
        path: &str,
        wtype: WatcherType,
        local: bool,
    ) -> Result<Vec<WatcherEvent>, ErrorCode> {
        let _ = local;
        let removed = match wtype {
            WatcherType::Children => self.child.remove(path, watcher, STANDARD),
            WatcherType::Data => self.data.remove(path, watcher, STANDARD),
            WatcherType::Persistent => {
                let c = self.child.remove(path, watcher, PERSISTENT);
                let d = self.data.remove(path, watcher, PERSISTENT);
                c || d
            }
            WatcherType::PersistentRecursive => self.data.remove(path, watcher, RECURSIVE),
            WatcherType::Any => {
                let c = self
                    .child
                    .remove(path, watcher, STANDARD | PERSISTENT | RECURSIVE);
                let d = self
                    .data
                    .remove(path, watcher, STANDARD | PERSISTENT | RECURSIVE);
                c || d
            }
        };
        if removed {
            Ok(Vec::new())
        } else {
            Err(ErrorCode::NoWatcher)
        }
    }

    /// checkWatches (`DataTree.containsWatcher`): `Ok` when a matching watch exists, else `NoWatcher`.
    pub fn check_watches(
        &self,
        watcher: u64,
        path: &str,
        wtype: WatcherType,
    ) -> Result<(), ErrorCode> {
        let found = match wtype {
            WatcherType::Children => self.child.modes(path, watcher) & STANDARD != 0,
            WatcherType::Data => self.data.modes(path, watcher) & STANDARD != 0,
            WatcherType::Persistent => self.data.modes(path, watcher) & PERSISTENT != 0,
            WatcherType::PersistentRecursive => self.data.modes(path, watcher) & RECURSIVE != 0,
            WatcherType::Any => {
                self.child.modes(path, watcher) != 0 || self.data.modes(path, watcher) != 0
            }
        };
        if found {
            Ok(())
        } else {
            Err(ErrorCode::NoWatcher)
        }
    }

    /// Drops every watch of a closed connection.
    pub fn remove_watcher(&mut self, watcher: u64) {
        self.data.remove_watcher(watcher);
        self.child.remove_watcher(watcher);
    }

    /// Number of (path, manager) registrations of a connection.
    pub fn count_for(&self, watcher: u64) -> usize {
        self.data.count_for(watcher) + self.child.count_for(watcher)
    }

    /// Number of (path, watcher) registrations over both managers (ZooKeeper's `getWatchCount`).
    pub fn total(&self) -> usize {
        self.data.total() + self.child.total()
    }

    /// Watched paths → watcher ids of data and exist watches, for `wchp`. Like ZooKeeper, the
    /// watch dumps cover the data-watch manager only (`DataTree.dumpWatches`).
    pub fn by_path(&self) -> BTreeMap<String, Vec<u64>> {
        self.data
            .by_path
            .iter()
            .map(|(p, ws)| (p.clone(), ws.keys().copied().collect()))
            .collect()
    }

    /// Watcher ids → paths of their data and exist watches, for `wchc`.
    pub fn by_watcher(&self) -> BTreeMap<u64, Vec<String>> {
        self.data
            .by_watcher
            .iter()
            .map(|(w, ps)| (*w, ps.iter().cloned().collect()))
            .collect()
    }

    /// Watched paths → watcher ids over both managers (data/exist and child), for tests and debugging.
    pub fn all_by_path(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for m in [&self.data, &self.child] {
            for (p, ws) in &m.by_path {
                out.entry(p.clone()).or_default().extend(ws.keys().copied());
            }
        }
        out.into_iter()
            .map(|(p, ws)| (p, ws.into_iter().collect()))
            .collect()
    }

    /// Watcher ids → paths over both managers, for tests and debugging.
    pub fn all_by_watcher(&self) -> BTreeMap<u64, Vec<String>> {
        let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for m in [&self.data, &self.child] {
            for (w, ps) in &m.by_watcher {
                out.entry(*w).or_default().extend(ps.iter().cloned());
            }
        }
        out.into_iter()
            .map(|(w, ps)| (w, ps.into_iter().collect()))
            .collect()
    }

    /// Registrations by kind, for metrics: (data and exist one-shot, child one-shot, persistent,
    /// persistent-recursive). A persistent watch counts once although both managers hold it.
    pub fn count_by_kind(&self) -> [usize; 4] {
        let mut out = [0; 4];
        for (m, child) in [(&self.data, false), (&self.child, true)] {
            for modes in m.by_path.values().flat_map(BTreeMap::values) {
                if modes & STANDARD != 0 {
                    out[usize::from(child)] += 1;
                }
                if !child && modes & PERSISTENT != 0 {
                    out[2] += 1;
                }
                if modes & RECURSIVE != 0 {
                    out[3] += 1;
                }
            }
        }
        out
    }

    /// (connections, paths, watches) of data and exist watches, for `wchs`.
    pub fn summary(&self) -> (usize, usize, usize) {
        (
            self.data.by_watcher.len(),
            self.data.by_path.len(),
            self.data.total(),
        )
    }
}

/// Converts a SetWatches (v1) into a SetWatches2 with no persistent watches.
pub fn upgrade_set_watches(sw: &SetWatches) -> SetWatches2 {
    SetWatches2 {
        relative_zxid: sw.relative_zxid,
        data_watches: sw.data_watches.clone(),
        exist_watches: sw.exist_watches.clone(),
        child_watches: sw.child_watches.clone(),
        persistent_watches: Vec::new(),
        persistent_recursive_watches: Vec::new(),
    }
}
