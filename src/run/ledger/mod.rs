//! The claims ledger: the runs of resources that are gone, kept across restarts
//! of every replica. [`format`] is its text.

pub mod format;
