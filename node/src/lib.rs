//! Floe storage node: the Red Stuff codec, the node daemon and the client library.
//!
//! The [`codec`] module is pure (no I/O, no networking) so it can be fuzzed and benchmarked alone.

pub mod client;
pub mod codec;
pub mod proto;
pub mod protocol;
pub mod quilt;
pub mod server;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod tls;
