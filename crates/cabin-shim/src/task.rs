//! containerd's Task service (ttrpc `containerd.task.v2.Task`) over cabin's containers:
//! each task is a container in cabin's store (named `containerd.<namespace>.<id>`,
//! labelled as containerd's), run in its own VM by its cabin supervisor; this service
//! keeps what containerd asks about (status, exit, stdio, execs) and publishes the
//! task events in the order containerd requires (create, start, exec-added,
//! exec-started, exit, delete).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use cabin_containers::containers::CreateOptions;
use cabin_containers::exec::{ExecEvent, Resizer};
use cabin_containers::process::Stream;
use cabin_containers::{AccelRequest, ContainerError, Containers};
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{EnumOrUnknown, MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::TtrpcResult;
use tokio::sync::{mpsc, oneshot, watch};

use cabin_base::confined::Leaf;

use crate::bundle::{self, RootMount};
use crate::stdio;

/// Where a process is in its life.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Created,
    /// Its VM is being started (Start's work, which a Kill waits for).
    Starting,
    Running,
    Paused,
    Exited {
        code: u32,
        at: Timestamp,
    },
}

/// One process of a task: its init (the container's process) or an exec.
struct Proc {
    io: stdio::Paths,
    terminal: bool,
    phase: watch::Sender<Phase>,
    /// An exec's process, until it is started.
    exec: StdMutex<Option<cabin_containers::control::ExecRequest>>,
    /// Its input, read from the client since the process was made, until it starts.
    stdin: StdMutex<Option<mpsc::Receiver<Vec<u8>>>>,
    /// Ends its input (containerd's CloseIO).
    close_stdin: StdMutex<Option<oneshot::Sender<()>>>,
    /// An exec's terminal size and signals.
    resizer: StdMutex<Option<Resizer>>,
}

impl Proc {
    /// A process made with stdio `io`; its input is read from now on.
    fn new(io: stdio::Paths, terminal: bool) -> TtrpcResult<Arc<Proc>> {
        let input = stdio::input(&io).map_err(|e| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("opening stdin {}: {e}", io.stdin),
            )
        })?;
        let (stdin, close) = match input {
            Some(i) => (Some(i.data), Some(i.close)),
            None => (None, None),
        };
        Ok(Arc::new(Proc {
            io,
            terminal,
            phase: watch::channel(Phase::Created).0,
            exec: StdMutex::new(None),
            stdin: StdMutex::new(stdin),
            close_stdin: StdMutex::new(close),
            resizer: StdMutex::new(None),
        }))
    }

    fn take_stdin(&self) -> Option<mpsc::Receiver<Vec<u8>>> {
        self.stdin.lock().expect("unpoisoned").take()
    }

    fn phase(&self) -> Phase {
        self.phase.borrow().clone()
    }

    /// Marks it exited at `at` (once: the first exit stands).
    fn exited(&self, code: u32, at: Timestamp) {
        self.phase.send_if_modified(|p| {
            if matches!(p, Phase::Exited { .. }) {
                return false;
            }
            *p = Phase::Exited { code, at };
            true
        });
    }

    /// Moves it from phase `from` to `to`; false if it was not in `from`.
    fn advance(&self, from: &Phase, to: Phase) -> bool {
        self.phase.send_if_modified(|p| {
            if p == from {
                *p = to;
                true
            } else {
                false
            }
        })
    }

    /// Waits while its VM is being started (bounded: a start gives up on its own).
    async fn settled(&self) -> Phase {
        let mut rx = self.phase.subscribe();
        let wait = async {
            loop {
                let phase = rx.borrow_and_update().clone();
                if phase != Phase::Starting {
                    return phase;
                }
                if rx.changed().await.is_err() {
                    return self.phase();
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(600), wait)
            .await
            .unwrap_or_else(|_| self.phase())
    }

    async fn wait_exit(&self) -> (u32, Timestamp) {
        let mut rx = self.phase.subscribe();
        loop {
            if let Phase::Exited { code, at } = &*rx.borrow_and_update() {
                return (*code, at.clone());
            }
            if rx.changed().await.is_err() {
                return (255, now());
            }
        }
    }
}

/// A task: a container of cabin's and its execs.
struct Task {
    bundle: PathBuf,
    /// A container of a pod, in its sandbox's VM.
    member: bool,
    /// The container's name in cabin's store.
    name: String,
    /// Where its root filesystem is mounted: `<bundle>/rootfs`, or (a pod member) its
    /// place on the pod's share.
    root: PathBuf,
    /// The disk built from its root filesystem, removed with the last task using it
    /// (none for a pod member, whose root reaches the VM on the pod's share).
    disk: Option<PathBuf>,
    init: Arc<Proc>,
    execs: HashMap<String, Arc<Proc>>,
}

/// The Task service of one shim (one task, or every task of a pod).
#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    containers: Containers,
    namespace: String,
    accel: AccelRequest,
    events: mpsc::UnboundedSender<(&'static str, Box<dyn MessageDyn>)>,
    /// Events sent and not yet published (a shim that ends waits for them).
    unpublished: Arc<std::sync::atomic::AtomicUsize>,
    tasks: tokio::sync::Mutex<HashMap<String, Task>>,
    exit: Arc<ExitSignal>,
}

/// Labels of cabin's containers that are containerd's tasks.
pub const RUNTIME_LABEL: &str = "io.cabin.runtime";
pub const NAMESPACE_LABEL: &str = "io.containerd.namespace";
pub const TASK_LABEL: &str = "io.containerd.task";
/// The cached disk a task's container was made from.
pub const DISK_LABEL: &str = "io.cabin.containerd.disk";
/// Where a pod member's root filesystem is mounted (on its pod's share).
pub const ROOT_LABEL: &str = "io.cabin.containerd.root";

/// The name of task `id` of namespace `namespace` in cabin's store.
pub fn container_name(namespace: &str, id: &str) -> String {
    format!("containerd.{namespace}.{id}")
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn status(code: ttrpc::Code, message: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.to_string()))
}

fn not_found(id: &str, exec_id: &str) -> ttrpc::Error {
    if exec_id.is_empty() {
        status(ttrpc::Code::NOT_FOUND, format!("task {id} not found"))
    } else {
        status(
            ttrpc::Code::NOT_FOUND,
            format!("process {exec_id} of task {id} not found"),
        )
    }
}

fn container_error(e: ContainerError) -> ttrpc::Error {
    let code = match &e {
        ContainerError::NotRunning(_) => ttrpc::Code::FAILED_PRECONDITION,
        _ => ttrpc::Code::INTERNAL,
    };
    status(code, e)
}

impl TaskService {
    pub fn new(
        containers: Containers,
        namespace: String,
        accel: AccelRequest,
        publisher: containerd_shim::publisher::RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> TaskService {
        // One task publishes every event, in the order they happened.
        let (events, mut rx) = mpsc::unbounded_channel::<(&'static str, Box<dyn MessageDyn>)>();
        let ns = namespace.clone();
        let unpublished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = unpublished.clone();
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                let ctx = ttrpc::context::with_duration(std::time::Duration::from_secs(5));
                if let Err(e) = publisher.publish(ctx, topic, &ns, event).await {
                    log::warn!("publishing {topic}: {e}");
                }
                count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        });
        TaskService {
            inner: Arc::new(Inner {
                containers,
                namespace,
                accel,
                events,
                unpublished,
                tasks: tokio::sync::Mutex::new(HashMap::new()),
                exit,
            }),
        }
    }

    fn publish(&self, topic: &'static str, event: impl MessageDyn) {
        let pending = &self.inner.unpublished;
        pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.inner.events.send((topic, Box::new(event))).is_err() {
            pending.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Process `id` (the task's id for its init, else an exec's) of task `task` has
    /// ended with `code`: /tasks/exit is published before the phase says so, so that
    /// whoever saw the exit through Wait and deletes the task publishes after it.
    fn end(&self, task: &str, id: &str, proc: &Proc, code: u32) {
        let at = now();
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            TaskExit {
                container_id: task.to_string(),
                id: id.to_string(),
                pid: std::process::id(),
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            },
        );
        proc.exited(code, at);
    }

    /// The task `id` and its process `exec_id` ("" for its init).
    async fn process(&self, id: &str, exec_id: &str) -> TtrpcResult<(String, Arc<Proc>)> {
        let tasks = self.inner.tasks.lock().await;
        let task = tasks.get(id).ok_or_else(|| not_found(id, ""))?;
        let proc = if exec_id.is_empty() {
            task.init.clone()
        } else {
            task.execs
                .get(exec_id)
                .cloned()
                .ok_or_else(|| not_found(id, exec_id))?
        };
        Ok((task.name.clone(), proc))
    }

    /// Starts task `id`'s container and follows its run: output to the task's stdio,
    /// its exit recorded and published (after its start). The work runs in a task of
    /// its own: a request that containerd gives up on does not leave it half done.
    async fn start_init(&self, id: &str, name: &str, proc: Arc<Proc>) -> TtrpcResult<u32> {
        if !proc.advance(&Phase::Created, Phase::Starting) {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {id} was already started"),
            ));
        }
        let service = self.clone();
        let (id, name) = (id.to_string(), name.to_string());
        let work = tokio::spawn(async move {
            let started = service.start_init_work(&id, &name, proc.clone()).await;
            if started.is_err() {
                // It never ran: it can be deleted (or started again).
                proc.advance(&Phase::Starting, Phase::Created);
            }
            started
        });
        work.await.map_err(|e| status(ttrpc::Code::INTERNAL, e))?
    }

    async fn start_init_work(&self, id: &str, name: &str, proc: Arc<Proc>) -> TtrpcResult<u32> {
        let containers = &self.inner.containers;
        let next = containers.next_run(name).await.map_err(container_error)?;
        let (out, written) = stdio::output(&proc.io);
        let stdin = proc.take_stdin().map(|rx| {
            Box::new(stdio::ChannelReader::new(rx)) as Box<dyn tokio::io::AsyncRead + Unpin + Send>
        });
        let (started_tx, started_rx) = oneshot::channel::<bool>();
        let follower = {
            let containers = containers.clone();
            let service = self.clone();
            let (id, proc) = (id.to_string(), proc.clone());
            tokio::spawn(async move {
                let exit = containers.follow_run(next, stdin, &mut out.sink()).await;
                drop(out);
                stdio::flushed(written).await;
                let (code, oom) = match exit {
                    Ok(e) => (e.code as u32, e.oom_killed()),
                    Err(e) => {
                        log::warn!("following task {id}: {e}");
                        (255, false)
                    }
                };
                // The exit is published after the start, never before.
                if started_rx.await != Ok(true) {
                    return;
                }
                if oom {
                    service.publish(
                        topics::TASK_OOM_EVENT_TOPIC,
                        TaskOOM {
                            container_id: id.clone(),
                            ..Default::default()
                        },
                    );
                }
                service.end(&id, &id, &proc, code);
            })
        };
        match containers.start(name).await {
            Ok(_) => {
                let pid = std::process::id();
                self.publish(
                    topics::TASK_START_EVENT_TOPIC,
                    TaskStart {
                        container_id: id.to_string(),
                        pid,
                        ..Default::default()
                    },
                );
                proc.advance(&Phase::Starting, Phase::Running);
                let _ = started_tx.send(true);
                Ok(pid)
            }
            Err(e) => {
                follower.abort();
                Err(container_error(e))
            }
        }
    }

    /// Starts exec `exec_id` of task `id`.
    async fn start_exec(
        &self,
        id: &str,
        exec_id: &str,
        name: &str,
        proc: Arc<Proc>,
    ) -> TtrpcResult<u32> {
        let Some(req) = proc.exec.lock().expect("unpoisoned").take() else {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("process {exec_id} of task {id} was already started"),
            ));
        };
        let mut session = match self.inner.containers.exec(name, req).await {
            Ok(s) => s,
            Err(e) => {
                // An exec that cannot start has ended, with docker's code for it.
                let code = e.exec_code().unwrap_or(126) as u32;
                proc.exited(code, now());
                return Err(container_error(e));
            }
        };
        let pid = std::process::id();
        if !proc.advance(&Phase::Created, Phase::Running) {
            // Killed while it was being started.
            session.signal(libc::SIGKILL).await;
        }
        *proc.resizer.lock().expect("unpoisoned") = Some(session.resizer());
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
                ..Default::default()
            },
        );
        if let (Some(input), Some(sink)) = (proc.take_stdin(), session.stdin()) {
            stdio::forward(input, sink);
        }
        let (out, written) = stdio::output(&proc.io);
        let service = self.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let code = loop {
                match session.next().await {
                    Ok(ExecEvent::Output(o)) => out.send(o.stream == Stream::Stderr, o.data),
                    Ok(ExecEvent::Exited(code)) => break code as u32,
                    Err(e) => {
                        log::warn!("exec {exec_id} of task {id}: {e}");
                        break 255;
                    }
                }
            };
            drop(out);
            stdio::flushed(written).await;
            service.end(&id, &exec_id, &proc, code);
        });
        Ok(pid)
    }

    /// The cabin ID of the pod sandbox that is task `sandbox` of this namespace, whose
    /// VM its pod's containers join; None when the sandbox is not cabin's (another
    /// runtime's: the container gets a VM of its own). A cabin sandbox that does not
    /// run is an error: its containers would not share its localhost.
    async fn running_sandbox(&self, sandbox: &str) -> TtrpcResult<Option<String>> {
        let name = container_name(&self.inner.namespace, sandbox);
        let (Ok(spec), Ok(record)) = (
            self.inner.containers.spec(&name).await,
            self.inner.containers.get(&name).await,
        ) else {
            return Ok(None);
        };
        if spec.pod != Some(cabin_containers::pod::PodRole::Sandbox) {
            return Ok(None);
        }
        if !matches!(
            record.status,
            cabin_containers::store::Status::Running { .. }
        ) {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("the pod's sandbox {sandbox} is not running: its containers run in its VM"),
            ));
        }
        Ok(Some(record.id))
    }

    /// containerd's Create: the container the bundle describes, recorded in cabin's
    /// store, its root's disk built.
    async fn create_work(
        &self,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let invalid = |e: &dyn std::fmt::Display| status(ttrpc::Code::INVALID_ARGUMENT, e);
        if self.inner.tasks.lock().await.contains_key(&req.id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("task {} already exists", req.id),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(status(
                ttrpc::Code::UNIMPLEMENTED,
                "cabin's shim cannot restore a task from a checkpoint",
            ));
        }
        let io = stdio::Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        stdio::check(&io).map_err(|e| invalid(&e))?;
        let bundle = PathBuf::from(&req.bundle);
        let spec = bundle::read_config(&bundle).map_err(|e| invalid(&e))?;
        let mounts: Vec<RootMount> = req
            .rootfs
            .iter()
            .map(|m| RootMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        // A container of a pod whose sandbox runs here joins the sandbox's VM: its
        // root goes on the pod's share instead of into a disk.
        let pod = match bundle::pod_part(&spec) {
            bundle::PodPart::Member(sandbox) => self.running_sandbox(&sandbox).await?,
            _ => None,
        }
        .map(|sandbox| {
            let share =
                cabin_containers::pod::share_dir(&self.inner.containers.host().paths, &sandbox);
            (sandbox, share)
        });
        let member = pod.is_some();
        let point = match &pod {
            Some((_, share)) => {
                if req.id.is_empty() || req.id.contains('/') || req.id.starts_with('.') {
                    return Err(invalid(&format!("task id {:?} is not a name", req.id)));
                }
                let rel = Path::new(&req.id).join("rootfs");
                bundle::MountPoint::in_share(share, &rel, Leaf::Dir).map_err(|e| {
                    unmount_task_root(&share.join(&rel), true);
                    invalid(&e)
                })?
            }
            None => bundle::MountPoint::at(bundle.join("rootfs")),
        };
        let target = point.path.clone();
        let root = bundle::root_dir(&bundle, &spec, &mounts, &point)
            .await
            .map_err(|e| {
                unmount_task_root(&target, member);
                invalid(&e)
            })?;
        let fail = |e: ttrpc::Error| {
            unmount_task_root(&target, member);
            e
        };
        let mut c = bundle::container_spec(&spec, &root, !io.stdin.is_empty(), self.inner.accel)
            .map_err(|e| fail(invalid(&e)))?;
        c.tty = req.terminal || c.tty;
        let mut labels = vec![
            (RUNTIME_LABEL.to_string(), "containerd".to_string()),
            (NAMESPACE_LABEL.to_string(), self.inner.namespace.clone()),
            (TASK_LABEL.to_string(), req.id.clone()),
        ];
        // The disk is built (or found in the cache) now, so that Start only boots. The
        // disks' lock is held until the container that names it is recorded: a task
        // deleted meanwhile does not remove the disk from under this one.
        let (disk, disks_lock) = match &pod {
            Some((sandbox, share)) => {
                bundle::join_pod(&mut c, sandbox, share, &req.id).map_err(|e| fail(invalid(&e)))?;
                labels.push((ROOT_LABEL.to_string(), target.display().to_string()));
                (None, None)
            }
            None => {
                bundle::drop_file_binds(&mut c);
                if bundle::pod_part(&spec) == bundle::PodPart::Sandbox {
                    c.pod = Some(cabin_containers::pod::PodRole::Sandbox);
                    bundle::sandbox_vm(&mut c, &spec);
                }
                let cache = self.inner.containers.host().paths.rootfs_cache();
                let dir = root.clone();
                let (disk, lock) = tokio::task::spawn_blocking(move || {
                    let lock = lock_disks(&cache)?;
                    let disk = cabin_image::rootfs::ensure_image(&dir, &cache)
                        .map_err(|e| status(ttrpc::Code::INTERNAL, e))?;
                    Ok::<_, ttrpc::Error>((disk.path, lock))
                })
                .await
                .map_err(|e| fail(status(ttrpc::Code::INTERNAL, e)))?
                .map_err(fail)?;
                labels.push((DISK_LABEL.to_string(), disk.display().to_string()));
                (Some(disk), Some(lock))
            }
        };
        let undo = |disk: Option<PathBuf>| async {
            if let Some(disk) = disk {
                release_disk(&self.inner.containers, disk).await;
            }
        };
        let init = match Proc::new(io.clone(), c.tty) {
            Ok(p) => p,
            Err(e) => {
                drop(disks_lock);
                undo(disk).await;
                return Err(fail(e));
            }
        };
        let name = container_name(&self.inner.namespace, &req.id);
        // One left by a shim that was killed before containerd's cleanup reached it.
        let _ = self.inner.containers.remove(&name, true).await;
        let opts = CreateOptions {
            name: Some(name.clone()),
            labels,
            auto_remove: false,
        };
        let created = self.inner.containers.create(&c, opts).await;
        drop(disks_lock);
        if let Err(e) = created {
            undo(disk).await;
            return Err(fail(container_error(e)));
        }
        let pid = std::process::id();
        self.inner.tasks.lock().await.insert(
            req.id.clone(),
            Task {
                bundle: bundle.clone(),
                root: target.clone(),
                member,
                name,
                disk,
                init,
                execs: HashMap::new(),
            },
        );
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: io.stdin,
                    stdout: io.stdout,
                    stderr: io.stderr,
                    terminal: c.tty,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            },
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }
}

/// Unmounts a task's root; a pod member's place on the pod's share (its root and
/// folders) goes too, once nothing is mounted below it: what could not be unmounted
/// is never deleted.
pub fn unmount_task_root(root: &std::path::Path, member: bool) {
    bundle::unmount_root(root);
    if let (true, Some(dir)) = (member, root.parent()) {
        match cabin_base::mountinfo::unmount_below(dir) {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Err(e) => log::warn!("unmounting {}: {e}", dir.display()),
        }
    }
}

/// Removes the disk built for a task's root filesystem once no container of cabin's
/// store was made from it any more.
pub async fn release_disk(containers: &Containers, disk: PathBuf) {
    let Some(cache) = disk.parent().map(PathBuf::from) else {
        return;
    };
    let Ok(Ok(_lock)) = tokio::task::spawn_blocking(move || lock_disks(&cache)).await else {
        return;
    };
    let Ok((records, _)) = containers.list().await else {
        return;
    };
    let wanted = disk.display().to_string();
    let used = records.iter().any(|r| {
        r.labels
            .iter()
            .any(|(k, v)| k == DISK_LABEL && *v == wanted)
    });
    if !used {
        let _ = std::fs::remove_file(&disk);
    }
}

/// The lock between tasks that build or find a disk in `cache` and tasks that remove
/// one (every shim of the data directory takes it).
fn lock_disks(cache: &std::path::Path) -> TtrpcResult<cabin_base::lock::Lock> {
    std::fs::create_dir_all(cache).map_err(|e| status(ttrpc::Code::INTERNAL, e))?;
    cabin_base::lock::lock_path_waiting(
        &cache.join(".containerd-disks.lock"),
        cabin_base::lock::Mode::Exclusive,
    )
    .map_err(|e| status(ttrpc::Code::INTERNAL, format!("locking cabin's disks: {e}")))
}

fn state_of(phase: &Phase) -> (api::Status, u32, Option<Timestamp>) {
    match phase {
        Phase::Created | Phase::Starting => (api::Status::CREATED, 0, None),
        Phase::Running => (api::Status::RUNNING, 0, None),
        Phase::Paused => (api::Status::PAUSED, 0, None),
        Phase::Exited { code, at } => (api::Status::STOPPED, *code, Some(at.clone())),
    }
}

#[async_trait]
impl containerd_shim::Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        // In a task of its own: a request containerd gives up on is still done whole,
        // or undone.
        let service = self.clone();
        tokio::spawn(async move { service.create_work(req).await })
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, e))?
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let (name, proc) = self.process(&req.id, &req.exec_id).await?;
        let pid = if req.exec_id.is_empty() {
            self.start_init(&req.id, &name, proc).await?
        } else {
            self.start_exec(&req.id, &req.exec_id, &name, proc).await?
        };
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let (_, proc) = self.process(&req.id, &req.exec_id).await?;
        let bundle = self
            .inner
            .tasks
            .lock()
            .await
            .get(&req.id)
            .map(|t| t.bundle.display().to_string())
            .unwrap_or_default();
        let (st, exit_status, exited_at) = state_of(&proc.phase());
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle,
            pid: std::process::id(),
            status: EnumOrUnknown::new(st),
            stdin: proc.io.stdin.clone(),
            stdout: proc.io.stdout.clone(),
            stderr: proc.io.stderr.clone(),
            terminal: proc.terminal,
            exit_status,
            exited_at: exited_at.into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let (_, proc) = self.process(&req.id, &req.exec_id).await?;
        let (code, at) = proc.wait_exit().await;
        Ok(api::WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let (name, proc) = self.process(&req.id, &req.exec_id).await?;
        let signal = req.signal as i32;
        let finished = || {
            status(
                ttrpc::Code::NOT_FOUND,
                format!("process already finished: task {}", req.id),
            )
        };
        // A VM being started is signalled once it runs.
        match proc.settled().await {
            Phase::Exited { .. } => {
                return Err(status(
                    ttrpc::Code::NOT_FOUND,
                    format!("process already finished: task {}", req.id),
                ))
            }
            // Never started: it ends as a killed process does.
            Phase::Created if req.exec_id.is_empty() => {
                self.end(&req.id, &req.id, &proc, 128 + signal as u32);
            }
            Phase::Created => {
                proc.exec.lock().expect("unpoisoned").take();
                proc.exited(128 + signal as u32, now());
            }
            _ if req.exec_id.is_empty() => {
                // `all`: every process of the task is in its VM; the init's signal
                // reaches them as it reaches a container's processes.
                match self.inner.containers.kill(&name, signal).await {
                    Ok(()) => {}
                    // Ended a moment ago (its exit is on its way to the phase).
                    Err(ContainerError::NotRunning(_)) => return Err(finished()),
                    Err(e) => return Err(container_error(e)),
                }
                // The supervisor lets a paused VM go on before it signals.
                proc.advance(&Phase::Paused, Phase::Running);
            }
            _ => {
                let resizer = proc.resizer.lock().expect("unpoisoned").clone();
                if let Some(r) = resizer {
                    r.signal(signal).await;
                }
            }
        }
        Ok(api::Empty::new())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (_, proc) = self.process(&req.id, &req.exec_id).await?;
        let phase = proc.phase();
        if matches!(phase, Phase::Starting | Phase::Running | Phase::Paused) {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} is still running: kill it first", req.id),
            ));
        }
        let (_, code, at) = state_of(&phase);
        let at = at.unwrap_or_else(now);
        if !req.exec_id.is_empty() {
            if let Some(t) = self.inner.tasks.lock().await.get_mut(&req.id) {
                t.execs.remove(&req.exec_id);
            }
            return Ok(api::DeleteResponse {
                pid: std::process::id(),
                exit_status: code,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }
        let Some(task) = self.inner.tasks.lock().await.remove(&req.id) else {
            return Err(not_found(&req.id, ""));
        };
        if let Err(e) = self.inner.containers.remove(&task.name, true).await {
            log::warn!("removing {}: {e}", task.name);
        }
        if let Some(disk) = task.disk {
            release_disk(&self.inner.containers, disk).await;
        }
        unmount_task_root(&task.root, task.member);
        let pid = std::process::id();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let io = stdio::Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        stdio::check(&io).map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        let mut x = bundle::exec_request(&req.spec.value, !io.stdin.is_empty())
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        if req.terminal && x.tty.is_none() {
            x.tty = Some((24, 80));
        }
        let mut tasks = self.inner.tasks.lock().await;
        let task = tasks
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id, ""))?;
        if !matches!(task.init.phase(), Phase::Running) {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} is not running", req.id),
            ));
        }
        if task.execs.contains_key(&req.exec_id) {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("process {} already exists", req.exec_id),
            ));
        }
        let proc = Proc::new(io, x.tty.is_some())?;
        *proc.exec.lock().expect("unpoisoned") = Some(x);
        task.execs.insert(req.exec_id.clone(), proc);
        drop(tasks);
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let (name, proc) = self.process(&req.id, &req.exec_id).await?;
        let (rows, cols) = (
            req.height.min(u16::MAX as u32) as u16,
            req.width.min(u16::MAX as u32) as u16,
        );
        if req.exec_id.is_empty() {
            self.inner
                .containers
                .resize(&name, rows, cols)
                .await
                .map_err(container_error)?;
        } else {
            let resizer = proc.resizer.lock().expect("unpoisoned").clone();
            if let Some(r) = resizer {
                r.resize(rows, cols).await;
            }
        }
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let (_, proc) = self.process(&req.id, &req.exec_id).await?;
        if req.stdin {
            if let Some(close) = proc.close_stdin.lock().expect("unpoisoned").take() {
                let _ = close.send(());
            }
        }
        Ok(api::Empty::new())
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let (name, proc) = self.process(&req.id, "").await?;
        if proc.phase() != Phase::Running {
            return Ok(api::PidsResponse::default());
        }
        let processes = self
            .inner
            .containers
            .top(&name)
            .await
            .map_err(container_error)?;
        Ok(api::PidsResponse {
            processes: processes
                .into_iter()
                .map(|p| containerd_shim::protos::api::ProcessInfo {
                    pid: p.pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let (name, proc) = self.process(&req.id, "").await?;
        if proc.phase() != Phase::Running {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} is not running", req.id),
            ));
        }
        self.inner
            .containers
            .pause(&name)
            .await
            .map_err(container_error)?;
        proc.advance(&Phase::Running, Phase::Paused);
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        let (name, proc) = self.process(&req.id, "").await?;
        if proc.phase() != Phase::Paused {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} is not paused", req.id),
            ));
        }
        self.inner
            .containers
            .unpause(&name)
            .await
            .map_err(container_error)?;
        proc.advance(&Phase::Paused, Phase::Running);
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (name, proc) = self.process(&req.id, "").await?;
        if proc.phase() == Phase::Paused {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!(
                    "task {} is paused: its VM answers nothing until it is resumed",
                    req.id
                ),
            ));
        }
        let st = self
            .inner
            .containers
            .stats(&name)
            .await
            .map_err(container_error)?;
        // The guest's cgroup (v2) of the container, as runc reports a cgroup v2 host's.
        let metrics = Metrics {
            pids: MessageField::some(PidsStat {
                current: st.pids,
                ..Default::default()
            }),
            cpu: MessageField::some(CPUStat {
                usage_usec: st.cpu_usage_micros,
                ..Default::default()
            }),
            memory: MessageField::some(MemoryStat {
                usage: st.memory_bytes,
                usage_limit: st.memory_limit_bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|e| status(ttrpc::Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    /// containerd's Update (CRI's UpdateContainerResources): the container's limits,
    /// changed in its running VM and kept for its record.
    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let (name, _) = self.process(&req.id, "").await?;
        let resources = req.resources.as_ref().ok_or_else(|| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                "the update names no resources",
            )
        })?;
        let limits = bundle::update_limits(&resources.type_url, &resources.value)
            .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, e))?;
        self.inner
            .containers
            .update(&name, limits)
            .await
            .map_err(container_error)?;
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            "cabin's shim cannot checkpoint a task (use cabin's own VM snapshots instead)",
        ))
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let pid = std::process::id();
        Ok(api::ConnectResponse {
            shim_pid: pid,
            task_pid: pid,
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        // Only a shim that serves no task any more goes (a pod's shim serves several).
        if self.inner.tasks.lock().await.is_empty() {
            // Its last events (the task's deletion) reach containerd first: bounded.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while self
                .inner
                .unpublished
                .load(std::sync::atomic::Ordering::Acquire)
                > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
