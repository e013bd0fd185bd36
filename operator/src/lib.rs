//! Floe control plane: the brain (`control`), its Kubernetes body and its local body.
//! Filled in by the operator and testnet issues.
