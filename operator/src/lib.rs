//! Floe's control plane. `control` is the brain and knows nothing of Kubernetes or processes;
//! `local` is the body that runs a testnet as processes on this machine (the Kubernetes body
//! joins with the operator issue).

pub mod control;
pub mod local;
