//! The per-container supervisor: the one process that owns a detached container's VM.
//! It boots the VM, writes the container's output to its log, answers `stop` and `kill`
//! on a control socket, and records the exit status. Nothing else is long-lived: when
//! it dies (even by SIGKILL) its QEMU dies with it (parent-death signal), its lock is
//! released, and the next `cabin ps` records the container as exited, with the reason.
//!
//! Clients reach it on its control socket (see [`crate::control`]).

use std::time::{Duration, Instant};

use cabin_base::sync::Locked;
use cabin_base::Host;
use cabin_proto::v1::{ContainerRef, ProcessRef};
use tokio::net::{UnixListener, UnixStream};

use crate::control::{self, Reply, Request, Stats};
use crate::log::LogWriter;
use crate::pod::{PodLink, PodRole};
use crate::process::{self, Output, Stream};
use crate::spec::{self, ContainerSpec, SpecError};
use crate::store::StoreError;
use crate::store::{now_unix, Status, Store};
use crate::vm::{memory_limit_note, WarmVm};
use crate::{agent, ContainerVm};

/// How long a guest gets to act on SIGKILL before its VM is killed instead.
const KILL_GRACE: Duration = Duration::from_secs(5);
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(3);
/// The container's writable layer (qcow2 on its image's disk), kept across starts.
pub const LAYER_FILE: &str = "layer.qcow2";

/// Why a supervisor could not take charge of its container at all.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("container {0} already has a supervisor")]
    Taken(String),
    /// The start this supervisor was made for has been served already: the record no
    /// longer says "created" (a pool member took the container after its requester had
    /// given up waiting and started a supervisor of its own, say).
    #[error("container {0} is not waiting to be started (another supervisor ran it)")]
    NotPending(String),
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// How one run of the container ended.
struct Ended {
    code: i32,
    reason: Option<String>,
    /// Ended by `cabin stop`: no restart.
    stopped: bool,
    /// The VM never started (a boot or set-up error): restarting would fail the same way.
    failed_start: bool,
    /// The VM, killed but maybe not yet gone, when nothing of it is kept: torn down
    /// once its end has been told.
    dying: Option<ContainerVm>,
}

/// Runs container `id` to its end, restarting it as its restart policy says: the work
/// of `cabin container supervise ID`, the process [`crate::Containers::start`] leaves a
/// container to. Returns an error only when it could not take charge of the container
/// at all (another supervisor has it, its records are unreadable).
pub async fn supervise(host: &Host, id: &str) -> Result<(), SuperviseError> {
    Charge::take(host, id, true).await?.run(None).await
}

/// A container this process has taken charge of: its supervisor lock held, its records
/// read, its log open and its control socket listening, so that clients can attach
/// before its VM is even asked for.
pub struct Charge<'h> {
    host: &'h Host,
    id: String,
    store: Store,
    lock: cabin_base::lock::Lock,
    record: crate::store::Record,
    cfg: ContainerSpec,
    log: LogWriter,
    listener: UnixListener,
}

impl<'h> Charge<'h> {
    /// Takes charge of container `id`. `prepare`: make the boot snapshot of its VM's
    /// shape in the background if there is none (a pooled VM resumed from it already).
    pub async fn take(host: &'h Host, id: &str, prepare: bool) -> Result<Self, SuperviseError> {
        let store = Store::open(&host.paths)?;
        // The previous supervisor of a container started again right after it ended may
        // still be on its way out (its record says exited before its process is gone):
        // give it a moment rather than failing the start.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let lock = loop {
            if let Some(l) = store.lock_supervisor(id)? {
                break l;
            }
            if std::time::Instant::now() > deadline {
                return Err(SuperviseError::Taken(id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut record = store.load(id)?;
        // Every start marks the record created before it asks for a supervisor, and a
        // supervisor's run leaves it running or exited: so exactly one supervisor runs
        // each start, however many were asked.
        if record.status != Status::Created {
            return Err(SuperviseError::NotPending(id.to_string()));
        }
        let dir = store.container_dir(id);
        let io = |what: &'static str| {
            move |source| SuperviseError::Io {
                id: id.to_string(),
                what,
                source,
            }
        };
        let cfg = match spec::read(&dir, id) {
            Ok(spec) => running_spec(spec, id, &record.name, &dir, record.auto_remove),
            Err(e) => {
                // Said where the starter looks: the record.
                record.status = Status::Exited {
                    code: 125,
                    reason: Some(e.to_string()),
                    finished_unix: now_unix(),
                };
                store.save(&record)?;
                return Err(e.into());
            }
        };
        // As after a foreground run: the next container of this shape should resume (a
        // pod member's VM is its sandbox's).
        if prepare && !matches!(cfg.pod, Some(PodRole::Member { .. })) {
            crate::vm::prepare_in_background(host, &cfg);
        }
        let log = LogWriter::open(&dir).map_err(io("opening the log"))?;
        let sock = control::socket(&dir);
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).map_err(io("binding the control socket"))?;
        let _ =
            std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600));
        Ok(Charge {
            host,
            id: id.to_string(),
            store,
            lock,
            record,
            cfg,
            log,
            listener,
        })
    }

    /// The container's spec as this supervisor runs it.
    pub fn spec(&self) -> &ContainerSpec {
        &self.cfg
    }

    /// Runs the container to its end, restarting it as its restart policy says; its
    /// first run on `warm` when given (a pooled VM that took the container, see
    /// `pool.rs`); restarts boot VMs of their own.
    pub async fn run(self, mut warm: Option<WarmVm>) -> Result<(), SuperviseError> {
        let Charge {
            host,
            id,
            store,
            lock,
            mut record,
            mut cfg,
            mut log,
            listener,
        } = self;
        let id = id.as_str();
        let dir = store.container_dir(id);
        let sock = control::socket(&dir);
        let policy = cfg.restart;

        let mut backoff = Duration::from_millis(100);
        let mut attached = crate::attach::Attached::default();
        let ended = loop {
            let supervised = Supervised {
                host,
                cfg: &cfg,
                store: &store,
                listener: &listener,
            };
            let mut ended = run_once(
                supervised,
                &mut record,
                &mut log,
                &mut attached,
                warm.take(),
            )
            .await?;
            let again = !ended.stopped
                && !ended.failed_start
                && policy.wants_restart(ended.code, record.restart_count);
            if !again {
                break ended;
            }
            if let Some(vm) = ended.dying.take() {
                vm.teardown().await;
            }
            // Docker's back-off: 100 ms, doubling, capped; a stop during it ends the loop.
            store.journal(&record, &[crate::events::Action::Die(ended.code)]);
            record.restart_count += 1;
            let _ = store.save(&record);
            let _ = log.note(&format!(
                "exited with code {}; restarting ({} so far)",
                ended.code, record.restart_count
            ));
            if wait_or_stop(&listener, backoff).await {
                break ended;
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            // What changed since (cabin update) holds for the next run.
            if let Ok(spec) = spec::read(&dir, id) {
                cfg = running_spec(spec, id, &record.name, &dir, record.auto_remove);
            }
        };
        let _ = log.flush();
        let _ = std::fs::remove_file(&sock);
        let exit = crate::store::RemovedExit {
            code: ended.code,
            reason: ended.reason,
        };
        record.status = Status::Exited {
            code: exit.code,
            reason: exit.reason.clone(),
            finished_unix: now_unix(),
        };
        record.network = None;
        let _ = store.save(&record);
        if record.auto_remove {
            let _ = store.record_removed_exit(&record.id, &exit);
            let _ = store.remove(&record.id);
        }
        // The container is settled: the clients attached to it may go on to the next
        // command (a `cabin start`, which needs this lock).
        drop(lock);
        attached.finish(ended.code).await;
        if let Some(vm) = ended.dying {
            vm.teardown().await;
        }
        Ok(())
    }
}

/// A stored container's spec as its runs use it: called by the start of its ID inside
/// (as docker does), its file system changes kept until it is removed, its name known
/// to its peers.
fn running_spec(
    mut spec: ContainerSpec,
    id: &str,
    name: &str,
    dir: &std::path::Path,
    auto_remove: bool,
) -> ContainerSpec {
    spec.hostname
        .get_or_insert_with(|| id[..12.min(id.len())].to_string());
    // A container removed when its one run ends has no later run to keep its files
    // for: its layer dies with its VM, which then needs no flush and no clean quit.
    if !(auto_remove && spec.restart == crate::spec::RestartPolicy::No) {
        spec.layer = Some(dir.join(LAYER_FILE));
    }
    spec.name = Some(name.to_string());
    spec.container_id = Some(id.to_string());
    spec
}

/// Sleeps `d` while answering control requests; true if a stop came in.
async fn wait_or_stop(listener: &UnixListener, d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return false,
            Ok((mut conn, _)) = listener.accept() => {
                match control::read_request(&mut conn).await {
                    Some(Request::Stop(_)) => {
                        reply(conn, Reply::done()).await;
                        return true;
                    }
                    _ => reply(conn, Reply::failed("the container is restarting")).await,
                }
            }
        }
    }
}

async fn reply(mut conn: UnixStream, reply: Reply) {
    let _ = control::write_reply(&mut conn, &reply).await;
}

/// Records whether the container's VM is paused (its record's change is the event).
fn mark_paused(store: &Store, record: &mut crate::store::Record, paused: bool) {
    if let Status::Running { paused: p, .. } = &mut record.status {
        *p = paused;
    }
    let _ = store.save(record);
}

/// Stops (`SIGSTOP`) or continues (`SIGCONT`) the VM's QEMU process: every vCPU,
/// timer and device thread of the VM at once. (A stopped QEMU answers nothing, QMP
/// included, so QMP's `stop` would gain nothing here.)
fn freeze(vmm_pid: u32, stop: bool) -> std::io::Result<()> {
    let signal = if stop { libc::SIGSTOP } else { libc::SIGCONT };
    cabin_base::spawn::send_signal(vmm_pid, signal)
}

async fn stats(agent: &crate::agent::Agent, container_id: &str, vmm_pid: u32) -> Reply {
    let mut a = agent.clone();
    let r = ContainerRef {
        container_id: container_id.to_string(),
    };
    match agent::call("Stats", cabin_proto::CALL_TIMEOUT, a.stats(r)).await {
        Ok(st) => Reply::Stats {
            ok: true,
            stats: Stats {
                vm_host_memory_bytes: cabin_base::memory::proportional_set_size(vmm_pid)
                    .unwrap_or(0),
                ..Stats::from(st)
            },
        },
        Err(e) => Reply::failed(e.message()),
    }
}

/// Applies new limits to the running container, within what its VM has (a pod
/// member's VM is its sandbox's, whose size its own spec does not say).
async fn update(
    agent: &crate::agent::Agent,
    container_id: &str,
    cfg: &ContainerSpec,
    limits: control::Limits,
) -> Result<(), String> {
    if !matches!(cfg.pod, Some(PodRole::Member { .. })) {
        let room = (cfg.vm_memory_mib() - crate::vm::VM_MEMORY_OVERHEAD_MIB) << 20;
        if limits.memory_bytes.is_some_and(|m| m > room) {
            return Err(format!(
                "its VM has room for {} MiB: a higher memory limit needs a new start with it (stop, update, start)",
                room >> 20
            ));
        }
        if limits.cpus.is_some_and(|c| c > f64::from(cfg.vcpus())) {
            return Err(format!(
                "its VM has {} CPUs: more need a new start with them (stop, update, start)",
                cfg.vcpus()
            ));
        }
    }
    let mut a = agent.clone();
    let request = cabin_proto::v1::UpdateResourcesRequest {
        container_id: container_id.to_string(),
        memory_bytes: limits.memory_bytes,
        cpu_micros: limits.cpus.map(|c| (c * 1e6) as u64),
        pids_limit: limits.pids_limit,
    };
    agent::call(
        "UpdateResources",
        cabin_proto::CALL_TIMEOUT,
        a.update_resources(request),
    )
    .await
    .map(drop)
    .map_err(|e| e.message().to_string())
}

async fn top(agent: &crate::agent::Agent, container_id: &str) -> Reply {
    let mut a = agent.clone();
    let r = ContainerRef {
        container_id: container_id.to_string(),
    };
    match agent::call("Processes", cabin_proto::CALL_TIMEOUT, a.processes(r)).await {
        Ok(list) => Reply::Processes {
            ok: true,
            processes: control::Process::from_guest(list, cabin_base::time::now_unix_nanos()),
        },
        Err(e) => Reply::failed(e.message()),
    }
}

/// Opens a running sandbox's VM to its pod's members: the relay of its cabin-init on
/// `agent.sock`, then the link that names its container in the guest.
fn open_pod(
    host: &Host,
    sandbox: &str,
    vm: &ContainerVm,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = crate::pod::agent_socket(&host.paths, sandbox);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let relay = tokio::spawn(crate::pod::serve_agent(listener, vm.agent_channel()));
    let link = PodLink {
        guest_container: vm.id.clone(),
        vmm_pid: vm.vmm_pid(),
    };
    if let Err(e) = link.write(&host.paths, sandbox) {
        relay.abort();
        return Err(e);
    }
    Ok(relay)
}

/// What stays the same across a supervisor's runs of its container.
#[derive(Clone, Copy)]
struct Supervised<'a> {
    host: &'a Host,
    cfg: &'a ContainerSpec,
    store: &'a Store,
    listener: &'a UnixListener,
}

/// Boots the container's VM (or takes `warm`), runs its process to the end, tears the
/// VM down.
async fn run_once(
    s: Supervised<'_>,
    record: &mut crate::store::Record,
    log: &mut LogWriter,
    attached: &mut crate::attach::Attached,
    warm: Option<WarmVm>,
) -> Result<Ended, StoreError> {
    let Supervised {
        host,
        cfg,
        store,
        listener,
    } = s;
    // What the user should hear about the start goes to the container's log.
    let notes = std::sync::Mutex::new(Vec::<String>::new());
    let notify = |m: &str| notes.locked().push(m.to_string());
    // Requests are taken while the VM boots: a client attached now gets the run's
    // output from its very start (a `docker run` attaches before it starts); the other
    // requests wait for the VM, in order.
    attached.run_started(log.size());
    let (requests, mut pending) =
        tokio::sync::mpsc::unbounded_channel::<(UnixStream, Option<Request>)>();
    let booted = {
        let boot = ContainerVm::boot_on(host, cfg, Instant::now(), &notify, warm);
        tokio::pin!(boot);
        loop {
            tokio::select! {
                b = &mut boot => break b,
                Ok((mut conn, _)) = listener.accept() => {
                    match control::read_request(&mut conn).await {
                        Some(Request::Attach(a)) => attached.add(conn, a, log, cfg.stdin),
                        req => {
                            let _ = requests.send((conn, req));
                        }
                    }
                }
            }
        }
    };
    for note in notes.locked().drain(..) {
        let _ = log.note(&note);
    }
    let mut vm = match booted {
        Ok(vm) => vm,
        Err(e) => {
            let _ = log.note(&e.to_string());
            for (conn, _) in std::iter::from_fn(|| pending.try_recv().ok()) {
                reply(conn, Reply::failed(e.to_string())).await;
            }
            return Ok(Ended {
                code: e.exit_code(),
                reason: Some(e.to_string()),
                stopped: false,
                failed_start: true,
                dying: None,
            });
        }
    };
    // Running already: this is a restart by the container's policy.
    let restarted = matches!(record.status, Status::Running { .. });
    record.status = Status::Running {
        supervisor_pid: std::process::id(),
        started_unix: now_unix(),
        paused: false,
    };
    let (ip_address, published) = vm.network_info();
    record.network = Some(crate::store::NetworkInfo {
        mode: cfg.network.as_str().to_string(),
        network: cfg.user_network.as_ref().map(|u| u.name.clone()),
        gateway: vm.gateway(),
        ip_address,
        ports: published.iter().map(cabin_net::ports::describe).collect(),
        published,
    });
    // Its health is "starting" before anyone can see it running (and not what its
    // previous run left).
    if vm.healthcheck.is_some() {
        if let Err(e) = crate::health::begin(&store.container_dir(&record.id)) {
            let _ = log.note(&format!("its health could not be recorded: {e}"));
        }
    }
    if let Err(e) = store.save(record) {
        vm.teardown().await;
        return Err(e);
    }
    if restarted {
        store.journal(record, &[crate::events::Action::Start]);
    }
    let agent = vm.agent();
    let proc_ref = vm.process_ref();
    let started = vm.process.clone();
    // A pod's sandbox lets its members reach the VM's cabin-init for as long as it runs.
    let relay = match &cfg.pod {
        Some(PodRole::Sandbox) => match open_pod(host, &record.id, &vm) {
            Ok(relay) => Some(relay),
            Err(e) => {
                let _ = log.note(&format!("the pod's members cannot join its VM: {e}"));
                None
            }
        },
        _ => None,
    };
    let member = matches!(cfg.pod, Some(PodRole::Member { .. }));
    attached.run_started(log.size());
    attached.connect_stdin(&agent, &proc_ref);
    let mut out_rx = process::output(&agent, proc_ref.clone());
    // Its health check runs for as long as its process does.
    let health = vm.healthcheck.clone().map(|check| {
        let (store, r) = (store.clone(), record.clone());
        tokio::spawn(crate::health::run(
            agent.clone(),
            proc_ref.container_id.clone(),
            started.env.clone(),
            started.user.clone(),
            check,
            store.container_dir(&record.id),
            move |status| store.journal(&r, &[crate::events::Action::Health(status)]),
        ))
    });
    // Short: a guest that does not take a signal at once is hung, and the supervisor's
    // loop (logs, other requests, the stop escalation) must go on.
    let signal = |n: i32| process::signal(&agent, &proc_ref, n, SIGNAL_TIMEOUT);
    // Escalation of a stop: SIGKILL at the first deadline, the VM itself at the second.
    let mut kill_at: Option<Instant> = None;
    let mut stopped = false;
    let mut execs = 0u64;
    let mut paused = false;
    let mut vm_kill_at: Option<Instant> = None;
    let mut pauses = vm.disk_pauses();
    let vmm_pid = vm.vmm_pid();
    let outcome = {
        let wait = vm.wait();
        tokio::pin!(wait);
        loop {
            let next_deadline = kill_at.or(vm_kill_at);
            tokio::select! {
                s = &mut wait => break Some(s),
                Some(pause) = pauses.recv() => {
                    let _ = log.note(&pause.to_string());
                }
                Some(Output { stream, data }) = out_rx.recv() => {
                    let stderr = stream == Stream::Stderr;
                    let _ = log.write(stderr, &data);
                    attached.output(stderr, &data);
                }
                Ok((mut conn, _)) = listener.accept() => {
                    let req = control::read_request(&mut conn).await;
                    let _ = requests.send((conn, req));
                }
                Some((conn, req)) = pending.recv() => {
                    let id = proc_ref.container_id.clone();
                    // A paused guest answers nothing: what needs it is refused at once,
                    // so that the loop (unpause, signals, stops) never waits on it.
                    let needs_guest = matches!(
                        req,
                        Some(
                            Request::Stats
                                | Request::Top
                                | Request::Exec(_)
                                | Request::CopyOut(_)
                                | Request::CopyIn(_)
                                | Request::Resize { .. }
                                | Request::Update(_)
                        )
                    );
                    if paused && needs_guest {
                        reply(conn, Reply::failed("the container is paused: unpause it first")).await;
                        continue;
                    }
                    match req {
                        Some(Request::Stats) => reply(conn, stats(&agent, &id, vmm_pid).await).await,
                        Some(Request::Top) => reply(conn, top(&agent, &id).await).await,
                        Some(Request::Exec(x)) => {
                            execs += 1;
                            let process = ProcessRef {
                                container_id: id,
                                process_id: format!("exec-{execs}"),
                            };
                            let x = crate::exec::completed(x, &started);
                            tokio::spawn(crate::exec::relay(agent.clone(), process, x, conn));
                        }
                        Some(Request::CopyOut(c)) => {
                            tokio::spawn(crate::copy::relay_out(agent.clone(), id, c, conn));
                        }
                        Some(Request::CopyIn(c)) => {
                            tokio::spawn(crate::copy::relay_in(agent.clone(), id, c, conn));
                        }
                        Some(Request::Attach(a)) => {
                            attached.add(conn, a, log, cfg.stdin);
                            attached.connect_stdin(&agent, &proc_ref);
                        }
                        Some(Request::Update(limits)) => {
                            let answer = match update(&agent, &id, cfg, limits).await {
                                Ok(()) => Reply::done(),
                                Err(e) => Reply::failed(e),
                            };
                            reply(conn, answer).await;
                        }
                        Some(Request::Pause | Request::Unpause) if member => {
                            reply(conn, Reply::failed(
                                "a container of a pod is paused with its pod: pause the pod's sandbox container",
                            )).await;
                        }
                        Some(Request::Pause) if stopped => {
                            reply(conn, Reply::failed("the container is stopping")).await;
                        }
                        Some(r @ (Request::Pause | Request::Unpause)) => {
                            let pause = r == Request::Pause;
                            let answer = match freeze(vmm_pid, pause) {
                                Ok(()) => {
                                    paused = pause;
                                    mark_paused(store, record, pause);
                                    Reply::done()
                                }
                                Err(e) => Reply::failed(format!("pausing or resuming its VM: {e}")),
                            };
                            reply(conn, answer).await;
                        }
                        Some(Request::Signal(n)) => {
                            // A paused VM cannot take a signal: it goes on first, as
                            // a frozen container does when it is killed.
                            if std::mem::take(&mut paused) {
                                let _ = freeze(vmm_pid, false);
                                mark_paused(store, record, false);
                            }
                            let answer = match signal(n).await {
                                Ok(()) => Reply::done(),
                                Err(e) => Reply::failed(e.message()),
                            };
                            reply(conn, answer).await;
                        }
                        Some(Request::Resize { rows, cols }) => {
                            let answer = if !cfg.tty {
                                Reply::failed("the container has no terminal (it was not made with -t)")
                            } else {
                                match process::resize(&agent, &proc_ref, rows, cols).await {
                                    Ok(()) => Reply::done(),
                                    Err(e) => Reply::failed(e.message()),
                                }
                            };
                            reply(conn, answer).await;
                        }
                        Some(Request::Stop(secs)) => {
                            stopped = true;
                            if std::mem::take(&mut paused) {
                                let _ = freeze(vmm_pid, false);
                                mark_paused(store, record, false);
                            }
                            // A guest that does not take SIGTERM gets the rest of the
                            // escalation all the same: the stop itself succeeds.
                            let _ = signal(libc::SIGTERM).await;
                            kill_at = Some(Instant::now() + Duration::from_secs(secs));
                            reply(conn, Reply::done()).await;
                        }
                        None => reply(conn, Reply::failed("unreadable request")).await,
                    }
                }
                _ = async {
                    match next_deadline {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if kill_at.take().is_some() {
                        let _ = signal(libc::SIGKILL).await;
                        vm_kill_at = Some(Instant::now() + KILL_GRACE);
                    } else {
                        // The guest does not act on SIGKILL: it is hung.
                        break None;
                    }
                }
            }
        }
    };
    if let Some(h) = health {
        h.abort();
    }
    if let Some(relay) = relay {
        relay.abort();
        PodLink::remove(&host.paths, &record.id);
    }
    let (code, reason) = match outcome {
        Some(Ok(status)) => {
            // Whatever the process wrote last is on its way; bounded wait.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Output { stream, data }) = out_rx.recv().await {
                    let stderr = stream == Stream::Stderr;
                    let _ = log.write(stderr, &data);
                    attached.output(stderr, &data);
                }
            })
            .await;
            let code = process::exit_code(&status);
            let reason = status.oom_killed.then(|| {
                format!(
                    "{}{}: the kernel killed its process",
                    crate::store::OOM_REASON,
                    memory_limit_note(cfg)
                )
            });
            (code, reason)
        }
        Some(Err(e)) => (e.exit_code().max(1), Some(e.to_string())),
        None => (
            137,
            Some("it did not stop after SIGKILL; its VM was killed".to_string()),
        ),
    };
    let _ = log.flush();
    let dying = if vm.kill_if_throwaway() {
        Some(vm)
    } else {
        vm.teardown().await;
        None
    };
    Ok(Ended {
        code,
        reason,
        stopped,
        failed_start: false,
        dying,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use cabin_base::Paths;

    #[tokio::test]
    async fn a_supervisor_asked_for_a_start_already_served_refuses_to_run_it_again() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::with_paths(Paths::at(t.path()));
        let store = Store::open(&host.paths).unwrap();
        for status in [
            Status::Exited {
                code: 0,
                reason: None,
                finished_unix: now_unix(),
            },
            Status::Running {
                supervisor_pid: std::process::id(),
                started_unix: now_unix(),
                paused: false,
            },
        ] {
            let r = store.create(Record::for_tests(status), None).unwrap();
            match Charge::take(&host, &r.id, false).await {
                Err(SuperviseError::NotPending(id)) => assert_eq!(id, r.id),
                Err(e) => panic!("wrong refusal: {e}"),
                Ok(_) => panic!("took charge of a start that was served already"),
            }
            // the refusal changed nothing
            assert_eq!(store.load(&r.id).unwrap().status, r.status);
        }
    }
}
