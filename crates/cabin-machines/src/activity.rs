//! VM image transfers under way in a long-lived process (`cabin serve`), with their
//! progress: the Lume API starts pulls and pushes in the background, and every front
//! end of the same server reads them here (the API's VM details while a pull runs,
//! the web console's dashboard). A failed transfer stays listed with its reason until
//! the VM's next transfer begins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cabin_base::sync::Locked;
use cabin_image::registry::Progress;
use serde::Serialize;

use crate::store::VmError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Pull,
    Push,
}

/// Byte counts of one transfer's blobs (each counted once, however often it restarts).
#[derive(Default)]
pub struct Counter {
    blobs: Mutex<HashMap<String, (u64, u64)>>,
}

impl Progress for Counter {
    fn start(&self, digest: &str, total: u64, done: u64) {
        self.blobs
            .locked()
            .insert(digest.to_string(), (total, done));
    }
    fn advance(&self, digest: &str, bytes: u64) {
        if let Some((total, done)) = self.blobs.locked().get_mut(digest) {
            *done = (*done + bytes).min(*total);
        }
    }
    fn finish(&self, digest: &str) {
        if let Some((total, done)) = self.blobs.locked().get_mut(digest) {
            *done = *total;
        }
    }
}

impl Counter {
    /// 0 to 100, from the bytes of the blobs begun so far (as Lume computes it, from
    /// compressed bytes).
    pub fn percent(&self) -> f64 {
        let (t, d) = self
            .blobs
            .locked()
            .values()
            .fold((0u64, 0u64), |(t, d), (bt, bd)| (t + bt, d + bd));
        if t == 0 {
            0.0
        } else {
            (d as f64 * 100.0 / t as f64).min(100.0)
        }
    }
}

struct Transfer {
    direction: Direction,
    image: String,
    counter: Arc<Counter>,
    failed: Option<String>,
}

/// What a front end shows of one transfer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferStatus {
    pub vm: String,
    pub direction: Direction,
    pub image: String,
    pub percent: f64,
    /// Why it failed; None while it runs.
    pub error: Option<String>,
}

/// The transfers of one process, by VM name.
#[derive(Default)]
pub struct Transfers {
    by_vm: Mutex<HashMap<String, Transfer>>,
}

impl Transfers {
    /// Records the start of a transfer of `vm`; its counter, for the registry's
    /// progress hook. A second transfer of the same VM while one runs is refused.
    pub fn begin(
        &self,
        vm: &str,
        direction: Direction,
        image: &str,
    ) -> Result<Arc<Counter>, VmError> {
        let mut all = self.by_vm.locked();
        if all.get(vm).is_some_and(|t| t.failed.is_none()) {
            return Err(VmError::Invalid(format!(
                "A transfer of {vm} is already under way"
            )));
        }
        let counter = Arc::new(Counter::default());
        all.insert(
            vm.to_string(),
            Transfer {
                direction,
                image: image.to_string(),
                counter: counter.clone(),
                failed: None,
            },
        );
        Ok(counter)
    }

    /// The transfer of `vm` ended: forgotten when it succeeded, kept with its reason
    /// when it failed.
    pub fn end(&self, vm: &str, outcome: Result<(), String>) {
        let mut all = self.by_vm.locked();
        match outcome {
            Ok(()) => {
                all.remove(vm);
            }
            Err(why) => {
                if let Some(t) = all.get_mut(vm) {
                    t.failed = Some(why);
                }
            }
        }
    }

    pub fn get(&self, vm: &str) -> Option<TransferStatus> {
        self.by_vm.locked().get(vm).map(|t| status(vm, t))
    }

    /// Every transfer, by VM name.
    pub fn list(&self) -> Vec<TransferStatus> {
        let all = self.by_vm.locked();
        let mut out: Vec<_> = all.iter().map(|(vm, t)| status(vm, t)).collect();
        out.sort_by(|a, b| a.vm.cmp(&b.vm));
        out
    }
}

fn status(vm: &str, t: &Transfer) -> TransferStatus {
    TransferStatus {
        vm: vm.to_string(),
        direction: t.direction,
        image: t.image.clone(),
        percent: t.counter.percent(),
        error: t.failed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_every_blob_once_and_failures_stay_until_the_next_try() {
        let t = Transfers::default();
        let c = t.begin("web", Direction::Pull, "r/o/web:1").unwrap();
        assert!(
            t.begin("web", Direction::Push, "x").is_err(),
            "one at a time"
        );
        c.start("a", 100, 0);
        c.start("b", 100, 50);
        c.advance("a", 50);
        assert_eq!(t.get("web").unwrap().percent, 50.0);
        // A blob that starts again (a retry) is not counted twice.
        c.start("a", 100, 0);
        c.advance("a", 100);
        c.finish("b");
        assert_eq!(t.get("web").unwrap().percent, 100.0);
        t.end("web", Err("the registry refused".into()));
        let s = t.get("web").unwrap();
        assert_eq!(s.error.as_deref(), Some("the registry refused"));
        assert_eq!(t.list().len(), 1);
        t.begin("web", Direction::Pull, "r/o/web:1").unwrap();
        t.end("web", Ok(()));
        assert!(t.get("web").is_none());
    }
}
