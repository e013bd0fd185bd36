//! Protocol objects shared by node, client and operator (PROTOCOL.md §4, §6): committees,
//! storage confirmations and certificates, shard sync requests, and the typed refusals that cross
//! the gRPC boundary. Pure: no I/O.

mod account;
mod certificate;
mod committee;
mod lifetime;
mod stale;
mod sync;

pub use account::{control_request_message, sign_request, AccountError, AccountId};
pub use certificate::{
    confirmation_message, verify_certificate, Certificate, CertificateError, Confirmation,
};
#[cfg(test)]
pub(crate) use committee::fixtures;
pub use committee::{Committee, CommitteeError, Member, NodeId};
pub use lifetime::{
    encoded_size, units, Economics, Gone, Lifetime, LifetimeError, SignedLifetime, BLOB_GONE_KEY,
    UNIT_BYTES,
};
pub use stale::{StaleCommittee, NODE_EPOCH_KEY, REQUEST_EPOCH_KEY};
pub use sync::{gained_shards, sync_request_message, SyncAuthError, SyncRequest};
