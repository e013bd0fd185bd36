//! The brain: every decision of the control plane, free of Kubernetes and of processes
//! (PROTOCOL.md §6–§7). `assignment`, `challenge`, `ledger` and `brain` are pure; `driver` runs
//! the brain against real members through the [`driver::Body`] a body implements (the local
//! testnet in `crate::local`, the Kubernetes operator in `crate::kube`), each running it in a
//! task of its own so that nothing else waits on members.

pub mod api;
pub mod assignment;
pub mod brain;
pub mod challenge;
pub mod driver;
pub mod economy;
pub mod ledger;
pub mod market;
pub mod metrics;
pub mod prices;
pub mod registry;
pub mod server;
