//! The Kubernetes body: the reconcile ([`controller`]), each cluster's control-plane task
//! ([`plane`]) and the brain's `Body` for a cluster ([`body`]), pure builders of the objects a
//! `StorageCluster` owns ([`builders`]), their names, labels and owner references ([`meta`]),
//! the PodDisruptionBudget sizing ([`pdb`]), the HTTP gateway's objects ([`gateway`]), the market's control pod
//! ([`market`]) and the HTTP endpoints ([`http`]).

pub mod body;
pub mod builders;
pub mod controller;
pub mod gateway;
pub mod http;
pub mod market;
pub mod meta;
pub mod pdb;
pub mod plane;

#[cfg(test)]
mod builders_tests;
