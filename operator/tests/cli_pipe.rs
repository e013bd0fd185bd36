//! `floe … | head`: a closed stdout ends the CLI quietly, without a panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_floe_quietly() {
    // a pipe whose reading end is already closed: the first write fails (EPIPE / SIGPIPE)
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .arg("crd")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run floe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "floe panicked on a closed stdout: {stderr}"
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "floe ended with {:?}: {stderr}",
        out.status
    );
}
