//! The brain: pure decisions about committees (and, later, epochs, recovery and challenges).

pub mod committee;
