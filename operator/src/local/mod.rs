//! The local body: a whole Floe network as processes on this machine (`floe testnet`).
//!
//! A testnet of real `floe-node` processes on 127.0.0.1, kept alive by a supervisor process that
//! runs the control plane's brain (epochs, committees, challenges, rewards) against them:
//! [`layout`] (the directory and its files), [`process`] (node processes), [`body`] (the
//! control plane's `Body`), [`supervisor`] (the loop), [`commands`] (what the CLI does to a
//! running testnet), [`gateway`] (the HTTP gateway process).

pub mod body;
pub mod commands;
pub mod gateway;
pub mod layout;
pub mod process;
pub mod supervisor;

pub use commands::{down, kill_node, restart_node, wait_ready};
pub use layout::{
    load_control, send_request, ControlOptions, NodeEntry, Request, TestnetState, UpOptions,
    CONTROL_FILE, STATE_FILE,
};
pub use process::{alive, find_node_bin, signal};
pub use supervisor::Supervisor;
