//! What happens to containers, as events (`docker events`, a console's live list):
//! created, started, died (with the exit code), destroyed. Containers are changed by
//! several processes (the CLI, supervisors, the servers), so the store writes each
//! change of a record as it saves it to one journal of JSON lines beside the
//! containers, and a [`Watcher`] follows that journal from any process: nothing that
//! happens between two looks is lost, however quickly a container comes and goes.
//!
//! The journal is bounded: beyond [`ROTATE_BYTES`] it is rotated (one old file kept);
//! a watcher finishes the old file before it moves on. Writing it is best effort: a
//! container's lifecycle never fails because its event could not be written.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cabin_base::lock::{self, Mode};
use serde::{Deserialize, Serialize};

use crate::health::HealthStatus;
use crate::log::Follower;

/// The live journal is rotated beyond this size.
pub const ROTATE_BYTES: u64 = 1 << 20;
const JOURNAL: &str = ".events.jsonl";

/// What happened to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Start,
    /// Its process ended, with this exit code.
    Die(i32),
    Destroy,
    /// Its health check says this now.
    Health(HealthStatus),
    /// A signal was sent to its process (by `kill`, or first by `stop`).
    Kill(i32),
    /// It was stopped (after its death, which `Die` told).
    Stop,
    /// Its VM was paused, or let go on.
    Pause,
    Unpause,
}

impl Action {
    /// Docker's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Start => "start",
            Action::Die(_) => "die",
            Action::Destroy => "destroy",
            Action::Health(HealthStatus::Starting) => "health_status: starting",
            Action::Health(HealthStatus::Healthy) => "health_status: healthy",
            Action::Health(HealthStatus::Unhealthy) => "health_status: unhealthy",
            Action::Kill(_) => "kill",
            Action::Stop => "stop",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
        }
    }
}

/// One event: the action, when it happened, and the container as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub action: Action,
    /// Unix nanoseconds.
    pub time_nanos: u64,
    pub id: String,
    pub name: String,
    /// The image reference or root directory.
    pub image: String,
    pub labels: Vec<(String, String)>,
}

/// The journal of the containers in `containers_dir`.
pub(crate) fn journal(containers_dir: &Path) -> PathBuf {
    containers_dir.join(JOURNAL)
}

/// Appends `events` to the journal at `path`, rotating it first when it is full.
pub(crate) fn append(path: &Path, events: &[Event]) -> io::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for e in events {
        serde_json::to_writer(&mut bytes, e)?;
        bytes.push(b'\n');
    }
    // Writers take turns, so that a rotation never splits another's lines.
    let _turn = lock::lock_path_waiting(&path.with_extension("lock"), Mode::Exclusive)?;
    if fs::metadata(path).is_ok_and(|m| m.len() + bytes.len() as u64 > ROTATE_BYTES) {
        fs::rename(path, path.with_extension("jsonl.1"))?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&bytes)
}

/// Follows the container events of a data directory from the moment it is opened.
pub struct Watcher {
    follower: Follower<Event>,
}

impl Watcher {
    pub(crate) fn open(journal: &Path) -> io::Result<Watcher> {
        Ok(Watcher {
            follower: Follower::open_path(journal, true)?,
        })
    }

    /// The events since the last call, in the order they happened.
    pub fn changes(&mut self) -> io::Result<Vec<Event>> {
        self.follower.read_new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> Event {
        Event {
            action: Action::Die(n as i32),
            time_nanos: n,
            id: format!("{n:032}"),
            name: format!("c{n}"),
            image: "img".into(),
            labels: vec![("k".into(), "v".into())],
        }
    }

    #[test]
    fn a_watcher_sees_what_is_appended_after_it_opened_across_rotations() {
        let t = tempfile::tempdir().unwrap();
        let path = journal(t.path());
        append(&path, &[event(0)]).unwrap();
        let mut w = Watcher::open(&path).unwrap();
        assert_eq!(w.changes().unwrap(), []);
        append(&path, &[event(1), event(2)]).unwrap();
        assert_eq!(w.changes().unwrap(), [event(1), event(2)]);
        // Enough to rotate several times between two looks: the watcher reads the file
        // it holds to its end, then goes on in the live one.
        let mut n = 3;
        let mut written = Vec::new();
        while fs::metadata(path.with_extension("jsonl.1")).is_err() {
            append(&path, &[event(n)]).unwrap();
            written.push(event(n));
            n += 1;
        }
        append(&path, &[event(n)]).unwrap();
        written.push(event(n));
        assert_eq!(w.changes().unwrap(), written);
        assert!(fs::metadata(&path).unwrap().len() <= ROTATE_BYTES);
    }

    #[test]
    fn the_journal_round_trips_every_action() {
        let t = tempfile::tempdir().unwrap();
        let path = journal(t.path());
        let mut w = Watcher::open(&path).unwrap();
        let all: Vec<Event> = [
            Action::Create,
            Action::Start,
            Action::Die(-1),
            Action::Destroy,
            Action::Health(HealthStatus::Healthy),
            Action::Kill(15),
            Action::Stop,
        ]
        .into_iter()
        .map(|action| Event { action, ..event(7) })
        .collect();
        append(&path, &all).unwrap();
        assert_eq!(w.changes().unwrap(), all);
    }
}
