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

/// SIGPIPE stays ignored while the CLI talks to nodes: with its default action, a node that
/// resets a connection while the client writes to it (a pod deleted in a rolling upgrade) kills
/// the CLI, since hyper writes with `writev`, which has no `MSG_NOSIGNAL`. The CLI is held in
/// its TLS handshake by a listener that accepts and never answers, and its signal dispositions
/// are read from /proc.
#[test]
fn the_cli_ignores_sigpipe_while_it_talks_to_nodes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("address");
    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["--connect", &format!("https://{addr}"), "status"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run floe");
    // the CLI connects: it is past main's set-up and waits for the handshake
    let (_conn, _) = listener.accept().expect("the CLI connects");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    let _ = child.kill();
    let _ = child.wait();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("SigIgn in /proc/PID/status");
    assert!(
        ignored & (1 << (libc::SIGPIPE - 1)) != 0,
        "SIGPIPE is not ignored (SigIgn {ignored:x}): a reset connection would kill the CLI"
    );
}
