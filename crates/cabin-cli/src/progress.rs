//! Progress bars for blob transfers, on a terminal only: piped output stays clean.

use cabin_base::sync::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cabin_image::registry::{Progress, ProgressHook};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::terminal;

struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn start(&self, digest: &str, total: u64, done: u64) {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(
            digest
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>(),
        );
        bar.set_position(done);
        self.bars.locked().insert(digest.to_string(), bar);
    }

    fn advance(&self, digest: &str, bytes: u64) {
        if let Some(b) = self.bars.locked().get(digest) {
            b.inc(bytes);
        }
    }

    fn finish(&self, digest: &str) {
        if let Some(b) = self.bars.locked().get(digest) {
            b.finish();
        }
    }
}

/// Bars on stderr when it is a terminal; nothing otherwise.
pub fn hook() -> ProgressHook {
    if !terminal::is_tty(2) {
        return ProgressHook::default();
    }
    ProgressHook(Some(Arc::new(Bars {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        bars: Mutex::default(),
    })))
}
