//! Client side of the node API: one typed client per node ([`NodeClient`]) and, on top of it,
//! the blob client that writes and reads whole blobs.

mod blob;
mod certify;
pub mod control;
mod node;
mod quilt;
mod ranged;
mod source;
mod status;

pub use blob::{
    BlobClient, ClientConfig, Progress, ProgressFn, PutOptions, ReadError, Registrar, WriteError,
    WriteOutcome, DEFAULT_EPOCHS,
};
pub use node::{ClientError, NodeClient};
pub use quilt::QuiltReadError;
pub use ranged::rows_for;
pub use source::FileSource;
