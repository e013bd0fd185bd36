//! The Kubernetes body: pure builders of the objects a `StorageCluster` owns ([`builders`]),
//! their names, labels and owner references ([`meta`]), and the PodDisruptionBudget sizing
//! ([`pdb`]).

pub mod body;
pub mod builders;
pub mod controller;
pub mod http;
pub mod meta;
pub mod pdb;
pub mod plane;

#[cfg(test)]
mod builders_tests;
