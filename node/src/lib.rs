//! Floe storage node: the Red Stuff codec, the node daemon and the client library.
//!
//! The [`codec`] module is pure (no I/O, no networking) so it can be fuzzed and benchmarked alone.

pub mod codec;
pub mod protocol;
pub mod store;
pub mod client;
pub mod proto;
pub mod server;
#[doc(hidden)]
pub mod testing;
