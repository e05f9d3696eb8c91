//! The container state store: what `cabin ps`, `inspect`, `rm` and the per-container
//! supervisors read and write. No service: one directory per container under
//! `<data>/containers/<id>/`, its record in `state.json`.
//!
//! - Crash safety: a record is written to a temporary file, fsync'ed, renamed over the
//!   old one and the directory fsync'ed, so a crash leaves the old record or the new
//!   one, never a mix.
//! - Names: creating, renaming and removing containers happen under one store-wide
//!   lock (`.lock`), so two `cabin run --name x` cannot both get `x`.
//! - Liveness: a container's supervisor holds `supervisor.lock` (flock) for as long as
//!   it lives. A record that says "running" while nobody holds that lock belongs to a
//!   supervisor that was killed or a host that rebooted; [`Store::reconcile`] marks it
//!   exited with that reason.
//! - Events: every save that changes a container's state, and every removal, is
//!   written to the events journal (see [`crate::events`]) as it happens.
//! - Hostile or damaged files: records are bounded in size and parsed strictly; a
//!   record that cannot be read is reported as such and can still be removed.

use std::fs;
use std::io;
use std::path::PathBuf;

use cabin_base::files::{create_private_dir, read_bounded, write_atomic};
use cabin_base::lock::{self, Lock, Mode, Wait};
pub use cabin_base::time::now_unix;
use serde::{Deserialize, Serialize};

use cabin_base::Paths;

use crate::events::{self, Action, Event};

/// How a container removed at its end (`--rm`) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedExit {
    pub code: i32,
    pub reason: Option<String>,
}

/// Where the exit codes of removed (`--rm`) containers wait for their waiters.
const REMOVED_EXITS: &str = ".removed";

/// Records are small; anything larger is not one of ours.
const MAX_RECORD_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Made by `cabin create`; never started.
    Created,
    Running {
        /// The supervisor process that owns the VM.
        supervisor_pid: u32,
        started_unix: u64,
        /// Its VM is paused (`cabin pause`, docker's and containerd's pause).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        paused: bool,
    },
    Exited {
        /// The process's exit code; 128+N when signal N killed it.
        code: i32,
        /// Why, when it was not the process's own doing (OOM kill, a supervisor that
        /// died, a VM that failed).
        reason: Option<String>,
        finished_unix: u64,
    },
}

/// How a reason begins when the guest's OOM killer ended the container's process.
pub const OOM_REASON: &str = "out of memory";

/// Whether `reason` (an exit's) says the OOM killer ended the process.
pub fn oom_killed(reason: Option<&str>) -> bool {
    reason.is_some_and(|r| r.starts_with(OOM_REASON))
}

impl Status {
    /// How long ago, as docker's `ps` says it ("Up 5 seconds", "Exited (0) 2 minutes
    /// ago", "Created").
    pub fn describe(&self, now_unix: u64) -> String {
        let ago = |t: u64| {
            let d = now_unix.saturating_sub(t);
            match d {
                0..=59 => format!("{d} seconds"),
                60..=3599 => format!("{} minutes", d / 60),
                3600..=86399 => format!("{} hours", d / 3600),
                _ => format!("{} days", d / 86400),
            }
        };
        match self {
            Status::Created => "Created".into(),
            Status::Running {
                started_unix,
                paused,
                ..
            } => {
                let paused = if *paused { " (Paused)" } else { "" };
                format!("Up {}{paused}", ago(*started_unix))
            }
            Status::Exited {
                code,
                finished_unix,
                ..
            } => format!("Exited ({code}) {} ago", ago(*finished_unix)),
        }
    }

    /// What happened to take a container from `before` (None: it is new) to `self`.
    pub fn changes_from(&self, before: Option<&Status>) -> Vec<Action> {
        match (before, self) {
            (None, Status::Created) => vec![Action::Create],
            (None, Status::Running { .. }) => vec![Action::Create, Action::Start],
            (None, Status::Exited { code, .. }) => {
                vec![Action::Create, Action::Start, Action::Die(*code)]
            }
            // (Running to running is a restart by its policy: its supervisor tells the
            // death and the start as they happen, which a clock in seconds could not.)
            (Some(Status::Running { .. }), Status::Exited { code, .. }) => {
                vec![Action::Die(*code)]
            }
            (Some(Status::Created | Status::Exited { .. }), Status::Running { .. }) => {
                vec![Action::Start]
            }
            (Some(Status::Running { paused: was, .. }), Status::Running { paused: is, .. })
                if was != is =>
            {
                vec![if *is { Action::Pause } else { Action::Unpause }]
            }
            // Failed to start: it never ran.
            (Some(Status::Created), Status::Exited { code, .. }) => vec![Action::Die(*code)],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// The image reference or `--rootfs` directory.
    pub root: String,
    pub command: Vec<String>,
    pub created_unix: u64,
    #[serde(flatten)]
    pub status: Status,
    /// Remove the container when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// How often the supervisor has started the process again (`--restart`).
    #[serde(default)]
    pub restart_count: u32,
    /// Started with a reaper as PID 1 (`--init`).
    #[serde(default)]
    pub init: bool,
    /// Its process's stdin is kept open for `cabin start -a -i` (`-i`).
    #[serde(default)]
    pub stdin: bool,
    /// The named volumes it mounts (they cannot be removed while it exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Its network while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkInfo>,
    /// It was running when its supervisor died (killed, or the host restarted), not
    /// stopped by anyone: its restart policy brings it back when the service starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub mode: String,
    /// The user-defined network it is on (mode bridge), by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Its gateway there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Its own address (bridge network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Published ports, docker style: "127.0.0.1:8080->80/tcp".
    #[serde(default)]
    pub ports: Vec<String>,
    /// The same, as the host and guest ports they join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<cabin_vmm::PortForward>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such container: {0}")]
    NotFound(String),
    #[error("{0:?} matches more than one container ({1}); give more of the ID or the name")]
    Ambiguous(String, String),
    #[error("the name {name:?} is already in use by container {id}; remove it (cabin rm {name}) or choose another name")]
    NameInUse { name: String, id: String },
    #[error("invalid container name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("container {id}: its record is unreadable ({detail}); `cabin rm -f {id}` removes it")]
    Unreadable { id: String, detail: String },
    #[error("container state in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, bounded here.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
}

/// Whether `id` is a container ID of the store's (32 hex digits).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(paths: &Paths) -> Result<Store, StoreError> {
        let dir = paths.containers();
        create_private_dir(&dir).map_err(|source| StoreError::Io {
            dir: dir.clone(),
            source,
        })?;
        Ok(Store { dir })
    }

    fn io(&self, source: io::Error) -> StoreError {
        StoreError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn store_lock(&self) -> Result<Lock, StoreError> {
        lock::lock_path_waiting(&self.dir.join(".lock"), Mode::Exclusive).map_err(|e| self.io(e))
    }

    /// Adds a container with a fresh ID; `name` (or a generated one) must be free.
    pub fn create(&self, mut record: Record, name: Option<&str>) -> Result<Record, StoreError> {
        let _guard = self.store_lock()?;
        self.prune_removed_exits();
        let taken = self.names()?;
        record.id = cabin_base::random::id().map_err(|e| self.io(e))?;
        record.name = match name {
            Some(n) => free_name(&taken, n)?,
            None => generated_name(&record.id, |n| taken.iter().any(|(t, _)| t == n)),
        };
        let dir = self.container_dir(&record.id);
        create_private_dir(&dir).map_err(|e| self.io(e))?;
        if let Err(e) = self.save(&record) {
            // A full disk, say: no directory without its record is left behind.
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(record)
    }

    /// Container directories without a record: what a create killed between making the
    /// directory and writing the record left (a create holds the store's lock across
    /// both, so under it this is never work in progress).
    pub fn recordless(&self) -> Result<Vec<PathBuf>, StoreError> {
        let _guard = self.store_lock()?;
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| self.container_dir(&id))
            .filter(|d| !d.join("state.json").exists())
            .collect())
    }

    /// Every container's (name, ID); the caller holds the store lock.
    fn names(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .ids()?
            .into_iter()
            .filter_map(|id| self.load(&id).ok().map(|r| (r.name, r.id)))
            .collect())
    }

    /// Gives container `id` the name `name`, which must be free.
    pub fn rename(&self, id: &str, name: &str) -> Result<Record, StoreError> {
        let _guard = self.store_lock()?;
        let mut r = self.load(id)?;
        if r.name == name {
            return Ok(r);
        }
        r.name = free_name(&self.names()?, name)?;
        self.save(&r)?;
        Ok(r)
    }

    /// Writes a container's record crash-safely (see the module comment).
    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let before = self.load(&record.id).ok().map(|r| r.status);
        let dir = self.container_dir(&record.id);
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| self.io(e.into()))?;
        write_atomic(&dir.join("state.json"), &bytes, 0o600).map_err(|e| self.io(e))?;
        let actions = record.status.changes_from(before.as_ref());
        self.journal(record, &actions);
        Ok(())
    }

    /// Writes what happened to `record` to the events journal (best effort).
    pub fn journal(&self, record: &Record, actions: &[Action]) {
        let time_nanos = cabin_base::time::now_unix_nanos();
        let events: Vec<Event> = actions
            .iter()
            .map(|&action| Event {
                action,
                time_nanos,
                id: record.id.clone(),
                name: record.name.clone(),
                image: record.root.clone(),
                labels: record.labels.clone(),
            })
            .collect();
        let _ = events::append(&events::journal(&self.dir), &events);
    }

    /// Follows the events of this store's containers from now on.
    pub fn watch(&self) -> Result<events::Watcher, StoreError> {
        events::Watcher::open(&events::journal(&self.dir)).map_err(|e| self.io(e))
    }

    /// A container's record as stored (see [`Store::reconcile`] for its real state).
    pub fn load(&self, id: &str) -> Result<Record, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let path = self.container_dir(id).join("state.json");
        let unreadable = |detail: String| StoreError::Unreadable {
            id: id.to_string(),
            detail,
        };
        let bytes = match read_bounded(&path, MAX_RECORD_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(unreadable("larger than 1 MiB".into()))
            }
            Err(e) => return Err(unreadable(e.to_string())),
        };
        let r: Record = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if r.id != id {
            return Err(unreadable(format!("it names container {:?}", r.id)));
        }
        Ok(r)
    }

    /// The IDs of all containers, including those whose records are unreadable.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = fs::read_dir(&self.dir)
            .map_err(|e| self.io(e))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_id(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Finds a container by name, full ID or unique ID prefix, as docker does.
    pub fn resolve(&self, what: &str) -> Result<String, StoreError> {
        let ids = self.ids()?;
        if let Some(id) = ids
            .iter()
            .find(|id| self.load(id).map(|r| r.name == what).unwrap_or(false))
        {
            return Ok(id.clone());
        }
        let matches: Vec<&String> = if what.is_empty() {
            Vec::new()
        } else {
            ids.iter().filter(|id| id.starts_with(what)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::NotFound(what.to_string())),
            many => Err(StoreError::Ambiguous(
                what.to_string(),
                many.iter().map(|i| &i[..12]).collect::<Vec<_>>().join(", "),
            )),
        }
    }

    /// Takes the supervisor lock of a container: `Some` for the one process that will
    /// own its VM, `None` if a live supervisor already holds it.
    pub fn lock_supervisor(&self, id: &str) -> Result<Option<Lock>, StoreError> {
        lock::lock_path(
            &self.container_dir(id).join("supervisor.lock"),
            Mode::Exclusive,
            Wait::NoWait,
        )
        .map_err(|e| self.io(e))
    }

    /// The record with the truth about liveness: a "running" container whose supervisor
    /// is gone is recorded as exited, with the reason.
    pub fn reconcile(&self, id: &str) -> Result<Record, StoreError> {
        let mut r = self.load(id)?;
        if let Status::Running { .. } = r.status {
            // Reconcilers take turns: one holding the supervisor lock for its probe
            // would look like a live supervisor to another.
            let _turn = lock::lock_path_waiting(
                &self.container_dir(id).join("reconcile.lock"),
                Mode::Exclusive,
            )
            .map_err(|e| self.io(e))?;
            r = self.load(id)?;
            if !matches!(r.status, Status::Running { .. }) {
                return Ok(r);
            }
            if let Some(_lock) = self.lock_supervisor(id)? {
                r.network = None;
                r.lost = true;
                r.status = Status::Exited {
                    code: 137,
                    reason: Some(
                        "its supervisor process died (killed, or the host restarted), taking the VM with it"
                            .into(),
                    ),
                    finished_unix: now_unix(),
                };
                self.save(&r)?;
            }
        }
        Ok(r)
    }

    /// Keeps the exit code of container `id`, which is about to be removed (`--rm`), for
    /// whoever waits for its removal (docker's `wait?condition=removed`): the record
    /// goes with the directory, the code stays an hour.
    pub fn record_removed_exit(&self, id: &str, exit: &RemovedExit) -> Result<(), StoreError> {
        let dir = self.dir.join(REMOVED_EXITS);
        create_private_dir(&dir).map_err(|e| self.io(e))?;
        let bytes = serde_json::to_vec(exit).map_err(|e| self.io(e.into()))?;
        write_atomic(&dir.join(id), &bytes, 0o600).map_err(|e| self.io(e))
    }

    /// How container `id` ended, recorded when it was removed, if that was recent.
    pub fn removed_exit(&self, id: &str) -> Option<RemovedExit> {
        if !valid_id(id) {
            return None;
        }
        let bytes = read_bounded(&self.dir.join(REMOVED_EXITS).join(id), 64 << 10).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the removed containers' exit codes older than an hour.
    fn prune_removed_exits(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join(REMOVED_EXITS)) else {
            return;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Deletes a container's directory (record, log, anything left); the caller has
    /// made sure it is not running.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !valid_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let _guard = self.store_lock()?;
        let before = self.load(id).ok();
        // A pod sandbox's share may still hold a member's root mounted by its shim:
        // deleting through it would delete the member's files.
        cabin_base::mountinfo::unmount_below(&self.container_dir(id)).map_err(|e| self.io(e))?;
        match fs::remove_dir_all(self.container_dir(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => Err(self.io(e)),
            Ok(()) => {
                if let Some(r) = before {
                    let actions = match r.status {
                        // Removed while it ran (its owner killed it, or died).
                        Status::Running { .. } => vec![Action::Die(137), Action::Destroy],
                        _ => vec![Action::Destroy],
                    };
                    self.journal(&r, &actions);
                }
                Ok(())
            }
        }
    }
}

/// `name`, if it is valid and not among `taken` (name, ID).
fn free_name(taken: &[(String, String)], name: &str) -> Result<String, StoreError> {
    if !valid_name(name) {
        return Err(StoreError::InvalidName(name.to_string()));
    }
    match taken.iter().find(|(t, _)| t == name) {
        Some((_, id)) => Err(StoreError::NameInUse {
            name: name.to_string(),
            id: id[..12].to_string(),
        }),
        None => Ok(name.to_string()),
    }
}

/// Docker-style adjective_noun names, picked deterministically from the ID.
fn generated_name(id: &str, taken: impl Fn(&str) -> bool) -> String {
    const ADJECTIVES: &[&str] = &[
        "brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nimble", "quiet", "swift",
        "tidy", "witty",
    ];
    const NOUNS: &[&str] = &[
        "alder", "birch", "cedar", "elm", "fir", "hazel", "larch", "maple", "oak", "pine", "rowan",
        "yew",
    ];
    let n = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
    let base = format!(
        "{}_{}",
        ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize],
        NOUNS[((n / 16) % NOUNS.len() as u64) as usize]
    );
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| !taken(n))
        .expect("some suffix is free")
}

#[cfg(test)]
impl Record {
    /// A record of a busybox container in `status`, for tests (the store names it).
    pub(crate) fn for_tests(status: Status) -> Record {
        Record {
            id: String::new(),
            name: String::new(),
            root: "busybox:latest".into(),
            command: vec!["sh".into()],
            created_unix: now_unix(),
            status,
            auto_remove: false,
            labels: vec![],
            restart_count: 0,
            init: false,
            stdin: false,
            network: None,
            volumes: vec![],
            lost: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record::for_tests(Status::Created)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&Paths::at(t.path())).unwrap();
        (t, s)
    }

    #[test]
    fn every_change_saved_and_every_removal_is_journaled_in_order() {
        let (_t, s) = store();
        let mut w = s.watch().unwrap();
        let mut a = s.create(record(), Some("a")).unwrap();
        a.status = Status::Running {
            supervisor_pid: 1,
            started_unix: 5,
            paused: false,
        };
        s.save(&a).unwrap();
        s.save(&a).unwrap(); // no change, no event
        a.status = Status::Exited {
            code: 3,
            reason: None,
            finished_unix: 6,
        };
        s.save(&a).unwrap();
        s.remove(&a.id).unwrap();
        // Created and removed at once, running when removed: nothing is missed.
        let mut b = s.create(record(), Some("b")).unwrap();
        b.status = Status::Running {
            supervisor_pid: 1,
            started_unix: 7,
            paused: false,
        };
        s.save(&b).unwrap();
        s.remove(&b.id).unwrap();
        let seen: Vec<(String, Action)> = w
            .changes()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.action))
            .collect();
        let want = [
            ("a", Action::Create),
            ("a", Action::Start),
            ("a", Action::Die(3)),
            ("a", Action::Destroy),
            ("b", Action::Create),
            ("b", Action::Start),
            ("b", Action::Die(137)),
            ("b", Action::Destroy),
        ];
        assert_eq!(seen, want.map(|(n, a)| (n.to_string(), a)));
    }

    #[test]
    fn status_changes_are_the_actions_between_them() {
        let running = |at| Status::Running {
            supervisor_pid: 1,
            started_unix: at,
            paused: false,
        };
        let exited = |code| Status::Exited {
            code,
            reason: None,
            finished_unix: 9,
        };
        assert_eq!(
            exited(2).changes_from(None),
            [Action::Create, Action::Start, Action::Die(2)]
        );
        assert_eq!(running(2).changes_from(Some(&running(1))), []);
        assert_eq!(running(1).changes_from(Some(&running(1))), []);
        assert_eq!(running(1).changes_from(Some(&exited(0))), [Action::Start]);
        assert_eq!(
            exited(1).changes_from(Some(&Status::Created)),
            [Action::Die(1)]
        );
        assert_eq!(exited(1).changes_from(Some(&exited(1))), []);
        let paused = Status::Running {
            supervisor_pid: 1,
            started_unix: 1,
            paused: true,
        };
        assert_eq!(paused.changes_from(Some(&running(1))), [Action::Pause]);
        assert_eq!(running(1).changes_from(Some(&paused)), [Action::Unpause]);
        assert_eq!(exited(137).changes_from(Some(&paused)), [Action::Die(137)]);
        assert!(paused.describe(1).ends_with(" (Paused)"));
    }

    #[test]
    fn names_are_unique_valid_and_generated_when_absent() {
        let (_t, s) = store();
        let a = s.create(record(), Some("web")).unwrap();
        assert_eq!(a.name, "web");
        assert!(matches!(
            s.create(record(), Some("web")),
            Err(StoreError::NameInUse { .. })
        ));
        for bad in ["", "-x", "a/b", "a b", "../x"] {
            assert!(matches!(
                s.create(record(), Some(bad)),
                Err(StoreError::InvalidName(_))
            ));
        }
        let g1 = s.create(record(), None).unwrap();
        let g2 = s.create(record(), None).unwrap();
        assert!(valid_name(&g1.name) && valid_name(&g2.name));
        assert_ne!(g1.name, g2.name);
        assert_eq!(s.ids().unwrap().len(), 3);
    }

    #[test]
    fn containers_resolve_by_name_id_and_unique_prefix() {
        let (_t, s) = store();
        let a = s.create(record(), Some("alpha")).unwrap();
        let b = s.create(record(), Some("beta")).unwrap();
        assert_eq!(s.resolve("alpha").unwrap(), a.id);
        assert_eq!(s.resolve(&b.id).unwrap(), b.id);
        assert_eq!(s.resolve(&a.id[..12]).unwrap(), a.id);
        assert!(matches!(s.resolve("nope"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.resolve(""), Err(StoreError::NotFound(_))));
        let common: usize =
            a.id.chars()
                .zip(b.id.chars())
                .take_while(|(x, y)| x == y)
                .count();
        if common > 0 {
            assert!(matches!(
                s.resolve(&a.id[..common]),
                Err(StoreError::Ambiguous(..))
            ));
        }
        // A path is never a container.
        assert!(s.load("../../etc").is_err());
    }

    #[test]
    fn records_survive_round_trips_and_damage_is_reported_not_fatal() {
        let (_t, s) = store();
        let mut a = s.create(record(), Some("a")).unwrap();
        a.status = Status::Exited {
            code: 3,
            reason: None,
            finished_unix: 1,
        };
        s.save(&a).unwrap();
        assert_eq!(s.load(&a.id).unwrap(), a);
        let dir = s.container_dir(&a.id);
        assert!(fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp")));

        fs::write(dir.join("state.json"), b"{\"id\": \"trunc").unwrap();
        assert!(matches!(s.load(&a.id), Err(StoreError::Unreadable { .. })));
        // Other containers are unaffected, names stay resolvable, and removal works.
        let b = s.create(record(), Some("b")).unwrap();
        assert_eq!(s.resolve("b").unwrap(), b.id);
        s.remove(&a.id).unwrap();
        assert_eq!(s.ids().unwrap(), vec![b.id.clone()]);
        assert!(matches!(s.remove(&a.id), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_running_record_without_its_supervisor_becomes_exited_with_the_reason() {
        let (_t, s) = store();
        let mut a = s.create(record(), Some("a")).unwrap();
        a.status = Status::Running {
            supervisor_pid: 1,
            started_unix: now_unix(),
            paused: false,
        };
        s.save(&a).unwrap();
        // While its supervisor holds the lock, the container is running.
        let held = s.lock_supervisor(&a.id).unwrap().expect("free at first");
        assert!(s.lock_supervisor(&a.id).unwrap().is_none());
        assert!(matches!(
            s.reconcile(&a.id).unwrap().status,
            Status::Running { .. }
        ));
        // The supervisor dies: its lock goes with it.
        drop(held);
        match s.reconcile(&a.id).unwrap().status {
            Status::Exited { code, reason, .. } => {
                assert_eq!(code, 137);
                assert!(reason.unwrap().contains("supervisor process died"));
            }
            other => panic!("still {other:?}"),
        }
        // And that is what the store now says.
        assert!(matches!(
            s.load(&a.id).unwrap().status,
            Status::Exited { .. }
        ));
    }
}
