//! The typed lifecycle of containers that live on: what every front end calls (the CLI
//! today, the web console, the Docker API and the containerd shim next). Create, start,
//! stop, kill, wait, restart, remove, prune, list and inspect; exec, attach, logs, stats
//! and copies. A container is named by its name, its ID or a unique prefix of its ID,
//! as docker names them.
//!
//! Each running container belongs to its supervisor (a `cabin container supervise ID`
//! process, started by [`Containers::start`]), which owns its VM; everything here talks
//! to it over its control socket (see [`crate::control`]). Every method is async and
//! keeps blocking work (files, locks) off the caller's async threads, so long-lived
//! servers can call them as the CLI does. (A container run in the foreground, which
//! lives and dies with its caller, is a [`crate::ContainerVm`] instead.)

use std::io;
use std::time::{Duration, Instant};

use cabin_base::spawn::{cabin_service, Output};
use cabin_base::Host;
use tokio::io::AsyncRead;

use crate::attach::{self, AttachError, Detached};
use crate::control::{self, CallError, ExecRequest, Reply, Request, Stats};
use crate::copy::{self, Copied, CopyError, HostDest, HostSource};
use crate::events::Action;
use crate::exec::{ExecError, ExecSession};
use crate::log::{self, Entry};
use crate::spec::{self, ContainerSpec, SpecError, UserNetwork};
use crate::store::{now_unix, Record, Status, Store, StoreError};
use crate::volumes::{MountSpec, VolumeError, Volumes};
use cabin_net::NetworkMode;

/// How long a start may take beyond the container's own boot deadline.
const START_SLACK: Duration = Duration::from_secs(30);
/// How long a stopping container's VM gets after SIGKILL before giving up on it.
const STOP_SLACK: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is running: stop it first (cabin stop {0}) or use rm -f")]
    Running(String),
    #[error("container {0}: its record is unreadable; use rm -f")]
    UnreadableRecord(String),
    #[error("container {0} is running: cabin puts a container on its network when it starts; stop it, connect it, start it again")]
    RunningNetworkChange(String),
    #[error("container {name} is on network {network}: cabin puts a container on one network; disconnect it from {network} first")]
    OneNetwork { name: String, network: String },
    #[error(transparent)]
    Network(#[from] cabin_net::networks::NetworkError),
    #[error("invalid label {0:?}: use KEY=VALUE")]
    InvalidLabel(String),
    #[error("starting the container's supervisor: {0}")]
    Spawn(io::Error),
    #[error("container {0} did not start in time; see cabin logs {0}")]
    StartTimeout(String),
    #[error("container {0} did not stop; not removed")]
    DidNotStop(String),
    #[error("container {0} was removed while waiting")]
    Removed(String),
    #[error("container {0} was created without -i: its standard input is closed")]
    NoStdin(String),
    #[error("container {name}: {source}")]
    Supervisor { name: String, source: CallError },
    #[error("container {name}: the supervisor's answer has no {wanted}")]
    UnexpectedReply { name: String, wanted: &'static str },
    /// An exec'd process that did not start keeps its message as it is (with docker's
    /// 126 or 127 as its exit code).
    #[error("{source}")]
    ExecNotStarted { source: ExecError },
    #[error("container {name}: {source}")]
    Exec { name: String, source: ExecError },
    #[error("container {name}: {source}")]
    Attach { name: String, source: AttachError },
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("volume {volume} is used by container(s) {containers}; remove them first (cabin rm)")]
    VolumeUsed { volume: String, containers: String },
    #[error("reading the log of {name}: {source}")]
    Log { name: String, source: io::Error },
    #[error("the container work was cut short: {0}")]
    Task(String),
}

impl ContainerError {
    /// The exit code a failed exec reports (docker's 126 and 127 for a command that is
    /// not executable or not found), when this is one.
    pub fn exec_code(&self) -> Option<i32> {
        match self {
            ContainerError::ExecNotStarted {
                source: ExecError::NotStarted { code, .. },
            } => Some(*code),
            _ => None,
        }
    }
}

/// What a container is created with besides its spec.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// A name (docker's rule); a free one is made up otherwise.
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
}

/// How a start went.
#[derive(Debug, Clone)]
pub enum Started {
    /// It runs.
    Running(Record),
    /// It ran and has already ended (or never started: the record says why).
    Exited(Record),
    /// It ran (or failed to start), ended, and was removed (`--rm`): how it ended, when
    /// that is known.
    Removed(Option<crate::store::RemovedExit>),
}

/// What [`Containers::wait_until`] waits for (docker's `condition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    NotRunning,
    NextExit,
    Removed,
}

/// Which logs to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Keep reading new output until the container exits.
    pub follow: bool,
    /// Only the last this many entries of what is there now.
    pub tail: Option<usize>,
    /// Only entries from this time on (Unix nanoseconds).
    pub since_unix_nanos: Option<u64>,
}

/// The containers of a data directory.
#[derive(Clone)]
pub struct Containers {
    host: Host,
    store: Store,
}

fn running(r: &Record) -> bool {
    matches!(r.status, Status::Running { .. })
}

impl Containers {
    /// The containers of `host`'s data directory (created if missing).
    pub fn open(host: &Host) -> Result<Containers, ContainerError> {
        Ok(Containers {
            host: host.clone(),
            store: Store::open(&host.paths)?,
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Runs store work on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ContainerError> + Send + 'static,
    ) -> Result<T, ContainerError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ContainerError::Task(e.to_string()))?
    }

    /// The container `name` names, with the truth about whether it runs.
    pub async fn get(&self, name: &str) -> Result<Record, ContainerError> {
        let name = name.to_string();
        self.blocking(move |s| Ok(s.reconcile(&s.resolve(&name)?)?))
            .await
    }

    /// Every container, newest first, and the errors of those whose records cannot be
    /// read.
    pub async fn list(&self) -> Result<(Vec<Record>, Vec<StoreError>), ContainerError> {
        self.blocking(|s| {
            let mut rows = Vec::new();
            let mut errors = Vec::new();
            for id in s.ids()? {
                match s.reconcile(&id) {
                    Ok(r) => rows.push(r),
                    // Removed since it was listed, or a directory without its record
                    // (`cabin system check` reports that one).
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => errors.push(e),
                }
            }
            rows.sort_by_key(|r| std::cmp::Reverse(r.created_unix));
            Ok((rows, errors))
        })
        .await
    }

    /// Records a container made of `spec` without starting it.
    pub async fn create(
        &self,
        spec: &ContainerSpec,
        opts: CreateOptions,
    ) -> Result<Record, ContainerError> {
        if let Some((k, v)) = opts.labels.iter().find(|(k, _)| k.is_empty()) {
            return Err(ContainerError::InvalidLabel(format!("{k}={v}")));
        }
        spec.check()?;
        let record = Record {
            id: String::new(),
            name: String::new(),
            root: match &spec.root {
                crate::RootSource::Dir(d) => d.display().to_string(),
                crate::RootSource::Image(i) => i.clone(),
            },
            command: spec.args.clone(),
            created_unix: now_unix(),
            status: Status::Created,
            auto_remove: opts.auto_remove,
            labels: opts.labels,
            restart_count: 0,
            network: None,
            lost: false,
            volumes: spec
                .mounts
                .iter()
                .filter_map(|m| match m {
                    MountSpec::Volume { name, .. } => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            init: spec.init,
            stdin: spec.stdin,
        };
        let mut spec = spec.clone();
        let networks = cabin_net::networks::Networks::open(&self.host.paths);
        self.blocking(move |s| {
            // The network must be there; its name is kept as recorded (given by ID).
            if let Some(u) = spec.user_network.as_mut() {
                u.name = networks.get(&u.name)?.name;
            }
            let record = s.create(record, opts.name.as_deref())?;
            if let Err(e) = spec::write(&s.container_dir(&record.id), &record.id, &spec) {
                let _ = s.remove(&record.id);
                return Err(e.into());
            }
            Ok(record)
        })
        .await
    }

    /// What container `name` is made of.
    pub async fn spec(&self, name: &str) -> Result<ContainerSpec, ContainerError> {
        let name = name.to_string();
        self.blocking(move |s| {
            let id = s.resolve(&name)?;
            Ok(spec::read(&s.container_dir(&id), &id)?)
        })
        .await
    }

    /// Starts container `name` (created, or exited) and waits until it runs or has
    /// already ended. A running one is left as it is.
    pub async fn start(&self, name: &str) -> Result<Started, ContainerError> {
        self.start_then(name, || {}).await
    }

    /// As [`Containers::start`], calling `launched` once its supervisor has been asked
    /// for (a pooled VM took it, or its process was started): a client attaching to the
    /// run may connect from then on.
    async fn start_then(
        &self,
        name: &str,
        launched: impl FnOnce(),
    ) -> Result<Started, ContainerError> {
        let record = self.get(name).await?;
        if running(&record) {
            return Ok(Started::Running(record));
        }
        // Refused here, before any process is started for it.
        let spec = self.spec(&record.id).await?;
        // A container just made is in that state already: no write needed.
        if record.status != Status::Created || record.lost {
            let mut fresh = record.clone();
            fresh.status = Status::Created;
            fresh.lost = false;
            self.blocking(move |s| Ok(s.save(&fresh)?)).await?;
        }
        // A warm VM from the pool of this data directory's server, if it has one of
        // this container's shape; else a supervisor that starts a VM of its own.
        let pooled = match crate::pool::poolable(&spec) {
            Some(shape) => crate::pool::take(&self.host.paths, &record.id, &shape).await,
            None => false,
        };
        if !pooled {
            // Not a child of this process: a long-lived caller (a server, containerd's
            // shim) would keep every ended supervisor as a zombie.
            cabin_service(&self.host, supervise_args(&record.id), Output::Discard)
                .map_err(ContainerError::Spawn)?;
        }
        launched();
        let deadline = Instant::now() + spec.boot_timeout + START_SLACK;
        loop {
            let id = record.id.clone();
            match self.blocking(move |s| Ok(s.reconcile(&id)?)).await {
                Ok(r) if matches!(r.status, Status::Created) => {}
                Ok(r) if running(&r) => return Ok(Started::Running(r)),
                Ok(r) => return Ok(Started::Exited(r)),
                Err(ContainerError::Store(StoreError::NotFound(_))) => {
                    return Ok(Started::Removed(self.store.removed_exit(&record.id)))
                }
                Err(e) => return Err(e),
            }
            if Instant::now() > deadline {
                return Err(ContainerError::StartTimeout(record.name));
            }
            // A pooled VM has the process running some 70 ms after the request: a
            // coarser poll would be a good part of the start.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Puts container `name`, which must not be running, on the user-defined network
    /// `network` from its next start (docker's `network connect`); it may be on one
    /// network at a time.
    pub async fn connect(&self, name: &str, network: UserNetwork) -> Result<(), ContainerError> {
        let networks = cabin_net::networks::Networks::open(&self.host.paths);
        let network = UserNetwork {
            name: networks.get(&network.name)?.name,
            ..network
        };
        self.change_network(name, move |spec, record| match &spec.user_network {
            Some(u) if u.name != network.name => Err(ContainerError::OneNetwork {
                name: record.name.clone(),
                network: u.name.clone(),
            }),
            _ => {
                spec.network = NetworkMode::Bridge;
                spec.user_network = Some(network);
                Ok(())
            }
        })
        .await
    }

    /// Takes container `name`, which must not be running, off the user-defined network
    /// `network` (back on the default network from its next start).
    pub async fn disconnect(&self, name: &str, network: &str) -> Result<(), ContainerError> {
        let networks = cabin_net::networks::Networks::open(&self.host.paths);
        let network = networks.get(network)?.name;
        self.change_network(name, move |spec, record| match &spec.user_network {
            Some(u) if u.name == network => {
                spec.network = NetworkMode::default();
                spec.user_network = None;
                Ok(())
            }
            _ => Err(ContainerError::Network(
                cabin_net::networks::NetworkError::NotConnected {
                    container: record.name.clone(),
                    network,
                },
            )),
        })
        .await
    }

    /// Removes the user-defined networks no container is attached to or set to join;
    /// their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>, ContainerError> {
        let networks = cabin_net::networks::Networks::open(&self.host.paths);
        self.blocking(move |s| {
            let mut wanted = Vec::new();
            for id in s.ids()? {
                if let Ok(spec) = spec::read(&s.container_dir(&id), &id) {
                    wanted.extend(spec.user_network.map(|u| u.name));
                }
            }
            let mut removed = Vec::new();
            for r in networks.list() {
                if !wanted.contains(&r.name) && networks.remove(&r.id).is_ok() {
                    removed.push(r.name);
                }
            }
            Ok(removed)
        })
        .await
    }

    async fn change_network(
        &self,
        name: &str,
        change: impl FnOnce(&mut ContainerSpec, &Record) -> Result<(), ContainerError> + Send + 'static,
    ) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        if running(&record) {
            return Err(ContainerError::RunningNetworkChange(record.name));
        }
        self.blocking(move |s| {
            let dir = s.container_dir(&record.id);
            let mut spec = spec::read(&dir, &record.id)?;
            change(&mut spec, &record)?;
            spec::write(&dir, &record.id, &spec)?;
            Ok(())
        })
        .await
    }

    /// Gives container `name` the name `new_name` (free, and valid as docker's are).
    /// A running container keeps the names its peers on a bridge know until it starts
    /// again.
    pub async fn rename(&self, name: &str, new_name: &str) -> Result<Record, ContainerError> {
        let (name, new_name) = (name.to_string(), new_name.to_string());
        self.blocking(move |s| Ok(s.rename(&s.resolve(&name)?, &new_name)?))
            .await
    }

    /// Starts again the containers whose restart policy wants it after they were lost
    /// with their supervisors (a killed service, a host that restarted), as Docker's
    /// daemon does when it starts: `always` (and `unless-stopped`) ones, and
    /// `on-failure` ones within their count. What each start gave, by name.
    pub async fn revive(
        &self,
    ) -> Result<Vec<(String, Result<Started, ContainerError>)>, ContainerError> {
        let (records, _) = self.list().await?;
        let mut out = Vec::new();
        for r in records.into_iter().filter(|r| r.lost && !r.auto_remove) {
            let Ok(spec) = self.spec(&r.id).await else {
                continue;
            };
            if spec.restart.wants_restart(137, r.restart_count) {
                out.push((r.name.clone(), self.start(&r.id).await));
            }
        }
        Ok(out)
    }

    /// Sends `req` to the supervisor of `record`, which must be running.
    async fn call(&self, record: &Record, req: &Request) -> Result<Reply, ContainerError> {
        if !running(record) {
            return Err(ContainerError::NotRunning(record.name.clone()));
        }
        control::call(&self.store.container_dir(&record.id), req)
            .await
            .map_err(|source| ContainerError::Supervisor {
                name: record.name.clone(),
                source,
            })
    }

    /// Stops container `name`: SIGTERM, SIGKILL after `timeout`, then its VM; returns
    /// once it has exited (or at once, if it was not running).
    pub async fn stop(&self, name: &str, timeout: Duration) -> Result<Record, ContainerError> {
        let record = self.get(name).await?;
        if !running(&record) {
            return Ok(record);
        }
        // Told first: the death it causes may be journaled before this call returns.
        self.store.journal(&record, &[Action::Kill(libc::SIGTERM)]);
        self.call(&record, &Request::Stop(timeout.as_secs()))
            .await?;
        // SIGKILL after `timeout`, the VM itself a few seconds later: bounded.
        let stopped = self
            .wait_for_exit(&record.id, Some(timeout + STOP_SLACK))
            .await;
        self.store.journal(&record, &[Action::Stop]);
        Ok(stopped.unwrap_or(record))
    }

    /// Stops container `name` if it runs and starts it again.
    pub async fn restart(&self, name: &str, timeout: Duration) -> Result<Started, ContainerError> {
        self.stop(name, timeout).await?;
        self.start(name).await
    }

    /// Sends signal `signal` to container `name`'s process.
    pub async fn kill(&self, name: &str, signal: i32) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        if running(&record) {
            self.store.journal(&record, &[Action::Kill(signal)]);
        }
        self.call(&record, &Request::Signal(signal)).await.map(drop)
    }

    /// Waits until container `id` has exited; its record then, or None if it was removed
    /// meanwhile or `limit` passed.
    async fn wait_for_exit(&self, id: &str, limit: Option<Duration>) -> Option<Record> {
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let owned = id.to_string();
            match self.blocking(move |s| Ok(s.reconcile(&owned)?)).await {
                Ok(r) if matches!(r.status, Status::Exited { .. }) => return Some(r),
                Ok(_) => {}
                Err(_) => return None, // removed (--rm)
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until container `name` has exited; its record then.
    pub async fn wait(&self, name: &str) -> Result<Record, ContainerError> {
        let record = self.get(name).await?;
        self.wait_for_exit(&record.id, None)
            .await
            .ok_or(ContainerError::Removed(record.name))
    }

    /// Removes container `name`; a running one only with `force` (it is stopped at once
    /// first), and one whose record is unreadable only with `force` too.
    pub async fn remove(&self, name: &str, force: bool) -> Result<(), ContainerError> {
        let owned = name.to_string();
        let id = self.blocking(move |s| Ok(s.resolve(&owned)?)).await?;
        let owned = id.clone();
        match self.blocking(move |s| Ok(s.reconcile(&owned)?)).await {
            Ok(r) if running(&r) => {
                if !force {
                    return Err(ContainerError::Running(r.name));
                }
                let _ = self.call(&r, &Request::Stop(0)).await;
                let stopped = self.wait_for_exit(&id, Some(STOP_SLACK)).await.is_some();
                let owned = id.clone();
                let gone = self.blocking(move |s| Ok(s.load(&owned).is_err())).await?;
                if !stopped && !gone {
                    return Err(ContainerError::DidNotStop(r.name));
                }
            }
            // Unreadable records can still be removed (that is what rm -f is for).
            Err(ContainerError::Store(StoreError::Unreadable { .. })) if !force => {
                return Err(ContainerError::UnreadableRecord(name.to_string()))
            }
            _ => {}
        }
        self.blocking(move |s| match s.remove(&id) {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// Removes every container that is not running; their IDs.
    pub async fn prune(&self) -> Result<Vec<String>, ContainerError> {
        self.blocking(|s| {
            let mut removed = Vec::new();
            for id in s.ids()? {
                let gone = match s.reconcile(&id) {
                    Ok(r) => !running(&r),
                    Err(StoreError::Unreadable { .. }) => true,
                    Err(_) => false,
                };
                if gone && s.remove(&id).is_ok() {
                    removed.push(id);
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Runs another process in running container `name`; returns once it runs.
    pub async fn exec(&self, name: &str, req: ExecRequest) -> Result<ExecSession, ContainerError> {
        let record = self.get(name).await?;
        if !running(&record) {
            return Err(ContainerError::NotRunning(record.name));
        }
        ExecSession::start(&self.store.container_dir(&record.id), req)
            .await
            .map_err(|source| match source {
                ExecError::NotStarted { .. } => ContainerError::ExecNotStarted { source },
                source => ContainerError::Exec {
                    name: record.name,
                    source,
                },
            })
    }

    /// Tells the terminal of running container `name` (made with one) its new size.
    pub async fn resize(&self, name: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        self.call(&record, &Request::Resize { rows, cols })
            .await
            .map(drop)
    }

    /// Pauses running container `name`'s whole VM (its QEMU process stops): its
    /// processes stop advancing until [`Containers::unpause`]. A signal, a stop or a
    /// removal lets it go on first.
    pub async fn pause(&self, name: &str) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        self.call(&record, &Request::Pause).await.map(drop)
    }

    /// Lets container `name`'s paused VM go on.
    pub async fn unpause(&self, name: &str) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        self.call(&record, &Request::Unpause).await.map(drop)
    }

    /// Changes container `name`'s limits (`docker update`, containerd's Update): at once
    /// in its running VM, and in its record for its later starts. A limit its running
    /// VM cannot give is refused and nothing changes.
    pub async fn update(
        &self,
        name: &str,
        limits: crate::control::Limits,
    ) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        if running(&record) {
            self.call(&record, &Request::Update(limits)).await?;
        }
        let id = record.id.clone();
        self.blocking(move |s| {
            let dir = s.container_dir(&id);
            let mut spec = spec::read(&dir, &id)?;
            let given = |v: u64| (v > 0).then_some(v);
            if let Some(m) = limits.memory_bytes {
                spec.memory_bytes = given(m);
            }
            if let Some(c) = limits.cpus {
                spec.cpus = (c > 0.0).then_some(c);
            }
            if let Some(p) = limits.pids_limit {
                spec.pids_limit = given(p);
            }
            spec::write(&dir, &id, &spec)?;
            Ok(())
        })
        .await
    }

    /// The bytes container `id`'s own files (its record, log, kept disk) take on disk.
    pub fn disk_bytes(&self, id: &str) -> u64 {
        crate::system::allocated_bytes(&self.store.container_dir(id))
    }

    /// Container `id`'s health as its check last found it (None: it has no check, or
    /// it never ran).
    pub fn health(&self, id: &str) -> Option<crate::health::Health> {
        crate::health::read(&self.store.container_dir(id))
    }

    /// What a running container's health check says now (None: it is not running, or
    /// has no check).
    pub fn health_status(&self, r: &Record) -> Option<crate::health::HealthStatus> {
        running(r)
            .then(|| self.health(&r.id))
            .flatten()
            .map(|h| h.status)
    }

    /// Container `name`'s processes now.
    pub async fn top(&self, name: &str) -> Result<Vec<crate::control::Process>, ContainerError> {
        let record = self.get(name).await?;
        match self.call(&record, &Request::Top).await? {
            Reply::Processes { processes, .. } => Ok(processes),
            _ => Err(ContainerError::UnexpectedReply {
                name: record.name,
                wanted: "process list",
            }),
        }
    }

    /// Follows what happens to containers (created, started, died, destroyed) from
    /// now on, whoever makes it happen.
    pub fn events(&self) -> Result<crate::events::Watcher, ContainerError> {
        Ok(self.store.watch()?)
    }

    /// Container `name`'s resource use now.
    pub async fn stats(&self, name: &str) -> Result<Stats, ContainerError> {
        let record = self.get(name).await?;
        match self.call(&record, &Request::Stats).await? {
            Reply::Stats { stats, .. } => Ok(stats),
            _ => Err(ContainerError::UnexpectedReply {
                name: record.name,
                wanted: "statistics",
            }),
        }
    }

    /// Starts container `name` if it is not running and stays with its current run
    /// (`start -a`): `out` gets its output from the start of the run (stderr flag,
    /// bytes), `stdin` goes to it (the container must have been created with it), and
    /// the result is the run's exit code, with the reason when cabin or its VM ended it.
    pub async fn attach(
        &self,
        name: &str,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        out: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<Exit, ContainerError> {
        let record = self.get(name).await?;
        if stdin.is_some() && !record.stdin {
            return Err(ContainerError::NoStdin(record.name));
        }
        if running(&record) {
            return self.follow(&record.id, stdin, out).await;
        }
        // Attached while it starts, so that not a byte of the run is missed.
        let next = self.next_run(&record.id).await?;
        let starter = self.clone();
        let id = record.id.clone();
        // A pooled VM listens by the time it says it took the container: the attach
        // tries again then rather than at its next poll.
        let launched = std::sync::Arc::new(tokio::sync::Notify::new());
        let poke = launched.clone();
        let mut start =
            tokio::spawn(async move { starter.start_then(&id, || poke.notify_one()).await });
        let follow = self.follow_run_woken(next, stdin, out, Some(&launched));
        tokio::pin!(follow);
        let mut started = false;
        loop {
            tokio::select! {
                exit = &mut follow => return exit,
                s = &mut start, if !started => {
                    started = true;
                    match s {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) => return Err(ContainerError::Task(e.to_string())),
                    }
                }
            }
        }
    }

    /// Stays with container `name`'s current run (it runs): `out` gets its output from
    /// the start of the run, then live, `stdin` goes to its process.
    pub async fn follow(
        &self,
        name: &str,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        out: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<Exit, ContainerError> {
        let record = self.get(name).await?;
        let next = NextRun {
            log_start: self.log_end(&record.id).await?,
            before: Status::Created,
            record,
        };
        self.follow_run(next, stdin, out).await
    }

    /// Container `name`'s next run, to follow from its start with
    /// [`Containers::follow_run`]: take it before the run starts.
    pub async fn next_run(&self, name: &str) -> Result<NextRun, ContainerError> {
        let record = self.get(name).await?;
        Ok(NextRun {
            log_start: self.log_end(&record.id).await?,
            before: record.status.clone(),
            record,
        })
    }

    /// Stays with the run `next` names, from its start (attaching as soon as its
    /// supervisor listens, while its VM boots) to its end: `out` gets its output, `stdin`
    /// goes to its process. A run that ended before the attachment (or was removed,
    /// `--rm`) is read from its log. The result is the run's exit code, with the reason
    /// when cabin or its VM ended it.
    pub async fn follow_run(
        &self,
        next: NextRun,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        out: &mut (dyn FnMut(bool, &[u8]) + Send),
    ) -> Result<Exit, ContainerError> {
        self.follow_run_woken(next, stdin, out, None).await
    }

    /// As [`Containers::follow_run`]; `wake`, when notified, cuts short the wait
    /// between two attempts to reach the run's supervisor.
    async fn follow_run_woken(
        &self,
        next: NextRun,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        out: &mut (dyn FnMut(bool, &[u8]) + Send),
        wake: Option<&tokio::sync::Notify>,
    ) -> Result<Exit, ContainerError> {
        let NextRun {
            record,
            log_start,
            before,
        } = next;
        let dir = self.store.container_dir(&record.id);
        let print_log = |out: &mut (dyn FnMut(bool, &[u8]) + Send)| {
            if let Ok((entries, _)) = log::read_from(&dir, log_start) {
                for e in entries {
                    out(e.stream == "stderr", e.log.as_bytes());
                }
            }
        };
        let removed = || {
            self.store
                .removed_exit(&record.id)
                .map(|e| Exit {
                    code: e.code,
                    reason: e.reason,
                })
                .unwrap_or_default()
        };
        let conn = loop {
            if let Ok(conn) = attach::request(&dir, stdin.is_some()).await {
                break conn;
            }
            let id = record.id.clone();
            match self.blocking(move |s| Ok(s.reconcile(&id)?)).await {
                // The run ended before its supervisor could be reached.
                Ok(r) if matches!(r.status, Status::Exited { .. }) && r.status != before => {
                    print_log(out);
                    return Ok(Exit::of(&r));
                }
                Ok(_) => {}
                Err(ContainerError::Store(StoreError::NotFound(_))) => return Ok(removed()),
                Err(e) => return Err(e),
            }
            let pause = tokio::time::sleep(Duration::from_millis(10));
            match wake {
                Some(w) => {
                    tokio::select! {
                        () = pause => {}
                        () = w.notified() => {}
                    }
                }
                None => pause.await,
            }
        };
        match attach::stream(conn, &dir, stdin, out).await {
            Ok(Detached::Exited(code)) => {
                // The supervisor saves the record before it sends the code: the
                // record says why, when it was not the process's own doing.
                let id = record.id.clone();
                let reason = match self.blocking(move |s| Ok(s.load(&id)?)).await {
                    Ok(Record {
                        status: Status::Exited { reason, .. },
                        ..
                    }) => reason,
                    Ok(_) => None,
                    Err(_) => removed().reason,
                };
                Ok(Exit { code, reason })
            }
            Ok(Detached::Lost { attached }) => {
                // The supervisor went away, or refused: the record and the log have the
                // rest.
                let r = self.wait_for_exit(&record.id, None).await;
                if !attached {
                    print_log(out);
                }
                Ok(r.as_ref().map(Exit::of).unwrap_or_else(removed))
            }
            Err(source) => Err(ContainerError::Attach {
                name: record.name,
                source,
            }),
        }
    }

    /// Where container `name`'s log ends now: a run started after this call writes its
    /// output from there.
    pub async fn log_end(&self, name: &str) -> Result<u64, ContainerError> {
        let name = name.to_string();
        self.blocking(move |s| Ok(log::end(&s.container_dir(&s.resolve(&name)?))))
            .await
    }

    /// Waits for container `name` as docker's `wait?condition=` does; its exit code.
    /// `NotRunning`: at once when it is not running. `NextExit`: the end of its next
    /// (or current) run. `Removed`: its removal (`--rm`), with the code its last run
    /// ended with.
    pub async fn wait_until(&self, name: &str, condition: WaitFor) -> Result<i32, ContainerError> {
        let record = self.get(name).await?;
        self.wait_after(record, condition).await
    }

    /// As [`Containers::wait_until`], from `record` as it was read (with
    /// [`Containers::get`]) when the waiter arrived: a server reads it before it answers
    /// the waiter's headers, so that a run started after them is never missed.
    pub async fn wait_after(
        &self,
        record: Record,
        condition: WaitFor,
    ) -> Result<i32, ContainerError> {
        let id = record.id.clone();
        let code = |r: &Record| match r.status {
            Status::Exited { code, .. } => code,
            _ => 0,
        };
        let before = record.status.clone();
        let mut last = code(&record);
        loop {
            let owned = id.clone();
            match self.blocking(move |s| Ok(s.reconcile(&owned)?)).await {
                Ok(r) => {
                    let exited = matches!(r.status, Status::Exited { .. });
                    last = code(&r);
                    let done = match condition {
                        WaitFor::NotRunning => !running(&r),
                        WaitFor::NextExit => exited && r.status != before,
                        WaitFor::Removed => false,
                    };
                    if done {
                        return Ok(last);
                    }
                }
                Err(ContainerError::Store(StoreError::NotFound(_))) => {
                    return Ok(self.store.removed_exit(&id).map_or(last, |e| e.code));
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Container `name`'s output as it was kept.
    pub async fn logs(&self, name: &str, opts: LogOptions) -> Result<Logs, ContainerError> {
        let record = self.get(name).await?;
        // Opened now: what the container writes from here is read even if it is
        // removed before the reader gets to it.
        let dir = self.store.container_dir(&record.id);
        let follower =
            log::LogFollower::open(&dir, false).map_err(|source| ContainerError::Log {
                name: record.name.clone(),
                source,
            })?;
        Ok(Logs {
            containers: self.clone(),
            record,
            opts,
            follower,
            started: false,
            done: false,
        })
    }

    /// Copies `src` (absolute, in the container) out of running container `name`.
    pub async fn copy_out(
        &self,
        name: &str,
        src: &str,
        follow_link: bool,
        dest: HostDest,
    ) -> Result<Copied, ContainerError> {
        let record = self.get(name).await?;
        if !running(&record) {
            return Err(ContainerError::NotRunning(record.name));
        }
        let dir = self.store.container_dir(&record.id);
        Ok(copy::copy_out(&dir, src, follow_link, dest).await?)
    }

    /// Copies into running container `name` at `dest` (absolute, in the container).
    pub async fn copy_in(
        &self,
        name: &str,
        src: HostSource,
        dest: &str,
    ) -> Result<(), ContainerError> {
        let record = self.get(name).await?;
        if !running(&record) {
            return Err(ContainerError::NotRunning(record.name));
        }
        let dir = self.store.container_dir(&record.id);
        Ok(copy::copy_in(&dir, src, dest).await?)
    }
}

impl Containers {
    /// The named volumes of this data directory.
    pub fn volumes(&self) -> Volumes {
        Volumes::open(&self.host.paths)
    }

    /// Which containers (in any state) mount each volume, as (volume, container name):
    /// a volume a container names cannot go while the container exists.
    pub async fn volume_users(&self) -> Result<Vec<(String, String)>, ContainerError> {
        self.blocking(|s| {
            let mut out = Vec::new();
            for id in s.ids()? {
                if let Ok(r) = s.load(&id) {
                    out.extend(r.volumes.into_iter().map(|v| (v, r.name.clone())));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes volume `name`, unless a container names it or one runs with it.
    pub async fn remove_volume(&self, name: &str) -> Result<(), ContainerError> {
        let users: Vec<String> = self
            .volume_users()
            .await?
            .into_iter()
            .filter(|(v, _)| v == name)
            .map(|(_, c)| c)
            .collect();
        if !users.is_empty() {
            return Err(ContainerError::VolumeUsed {
                volume: name.to_string(),
                containers: users.join(", "),
            });
        }
        let volumes = self.volumes();
        let name = name.to_string();
        self.blocking(move |_| Ok(volumes.remove(&name)?)).await
    }

    /// Removes every volume no container names or uses; their names.
    pub async fn prune_volumes(&self) -> Result<Vec<String>, ContainerError> {
        let users = self.volume_users().await?;
        let volumes = self.volumes();
        self.blocking(move |_| {
            let mut removed = Vec::new();
            for v in volumes.list() {
                if users.iter().any(|(u, _)| *u == v.name) {
                    continue;
                }
                match volumes.remove(&v.name) {
                    Ok(()) => removed.push(v.name),
                    Err(VolumeError::InUse(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(removed)
        })
        .await
    }
}

/// How a container's run ended, as a client sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    /// Why, when it was not the process's own doing.
    pub reason: Option<String>,
}

impl Exit {
    /// The guest's OOM killer ended the process.
    pub fn oom_killed(&self) -> bool {
        crate::store::oom_killed(self.reason.as_deref())
    }

    fn of(r: &Record) -> Exit {
        match &r.status {
            Status::Exited { code, reason, .. } => Exit {
                code: *code,
                reason: reason.clone(),
            },
            _ => Exit::default(),
        }
    }
}

/// A container's next run, as [`Containers::next_run`] found it before it started.
#[derive(Debug, Clone)]
pub struct NextRun {
    record: Record,
    /// Where its log ended.
    log_start: u64,
    /// Its status then: the run has ended once the status is another exit.
    before: Status,
}

/// A container's log being read (see [`Containers::logs`]).
pub struct Logs {
    containers: Containers,
    record: Record,
    opts: LogOptions,
    follower: log::LogFollower,
    /// The first batch (what was there) has been given.
    started: bool,
    done: bool,
}

impl Logs {
    /// The next entries: what is there at first, then (following) what comes, until the
    /// container has exited (or was removed) and all of it was read; None then.
    pub async fn next(&mut self) -> Result<Option<Vec<Entry>>, ContainerError> {
        if self.done {
            return Ok(None);
        }
        let since = self.opts.since_unix_nanos;
        let keep = move |mut entries: Vec<Entry>| {
            if let Some(s) = since {
                entries.retain(|e| e.time >= s);
            }
            entries
        };
        let name = self.record.name.clone();
        let log_err = |source| ContainerError::Log { name, source };
        if !self.started {
            self.started = true;
            let dir = self.containers.store.container_dir(&self.record.id);
            let mut entries = log::read_rotated(&dir);
            entries.extend(self.follower.read_new().map_err(log_err)?);
            if let Some(n) = self.opts.tail {
                let skip = entries.len().saturating_sub(n);
                entries.drain(..skip);
            }
            self.done = !self.opts.follow;
            return Ok(Some(keep(entries)));
        }
        loop {
            let id = self.record.id.clone();
            // Asked before the log is read: whatever the run wrote before it ended is in
            // the file by then.
            let exited = !matches!(
                self.containers
                    .blocking(move |s| Ok(s.reconcile(&id)?))
                    .await,
                Ok(Record {
                    status: Status::Running { .. } | Status::Created,
                    ..
                })
            );
            let new = self
                .follower
                .read_new()
                .map_err(|source| ContainerError::Log {
                    name: self.record.name.clone(),
                    source,
                })?;
            if exited {
                self.done = true;
            }
            if !new.is_empty() || exited {
                return Ok(Some(keep(new)));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The helper command a container's supervisor runs as.
pub fn supervise_args(id: &str) -> [String; 3] {
    ["container".into(), "supervise".into(), id.to_string()]
}
