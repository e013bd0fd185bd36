//! The local body: a whole Floe network as processes on this machine (`floe testnet`).

pub mod testnet;
