//! Progress for long operations: a bar on a terminal, plain lines otherwise, nothing in --json.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use floe_node::client::{Progress, ProgressFn};
use indicatif::{ProgressBar, ProgressStyle};

pub fn reporter(verb: &'static str, quiet: bool) -> Option<ProgressFn> {
    if quiet {
        return None;
    }
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        bar.set_message(verb);
        Some(Arc::new(move |p: Progress| match p {
            Progress::Encoded {
                encoded_bytes,
                elapsed,
            } => {
                bar.set_length(encoded_bytes);
                bar.println(format!("encoded in {:.2?}", elapsed));
            }
            Progress::Bytes { done, total } => {
                bar.set_length(total);
                bar.set_position(done);
            }
            Progress::Confirmed { shards, quorum } => {
                bar.set_message(format!("{shards}/{quorum} shards"))
            }
            Progress::Certified { .. } => bar.finish_and_clear(),
        }))
    } else {
        let last_decile = Mutex::new(0u64);
        Some(Arc::new(move |p: Progress| match p {
            Progress::Encoded {
                encoded_bytes,
                elapsed,
            } => {
                eprintln!("{verb}: encoded into {encoded_bytes} bytes of slivers in {elapsed:.2?}")
            }
            Progress::Bytes { done, total } if total > 0 => {
                let decile = done * 10 / total;
                let mut last = last_decile.lock().unwrap_or_else(|p| p.into_inner());
                if decile > *last {
                    *last = decile;
                    eprintln!("{verb}: {}% ({done}/{total} bytes)", decile * 10);
                }
            }
            Progress::Confirmed { shards, quorum } => {
                eprintln!("{verb}: {shards} shards confirmed (quorum {quorum})")
            }
            _ => {}
        }))
    }
}
