//! Floe's control plane. `control` is the brain and knows nothing of Kubernetes or processes;
//! `local` is the body that runs a testnet as processes on this machine; `crd` is the
//! `StorageCluster` resource and `kube` the Kubernetes body (builders of desired objects).

pub mod control;
pub mod crd;
pub mod gateway;
pub mod kube;
pub mod local;
