//! All openraft glue, in one place so that an openraft upgrade touches only this module:
//! [`types`] (the type configuration), [`state_machine`] (applying entries, snapshots),
//! [`log_store`] (the durable log under openraft) and [`network`] (peers).

pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod types;
