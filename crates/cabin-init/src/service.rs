//! The agent's gRPC service: what the host can ask of the guest.

use cabin_base::sync::Locked;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cabin_proto::v1::agent_server::Agent;
use cabin_proto::v1::{
    output_chunk, ContainerRef, ContainerStats, CopyInChunk, CopyOutRequest,
    CreateContainerRequest, Empty, ExitStatus, HelloRequest, HelloResponse, InputChunk,
    MountRequest, OutputChunk, ProcessList, ProcessRef, ResizeTtyRequest, SetHostsRequest,
    SetTimeRequest, SignalRequest, StartProcessRequest, StartProcessResponse,
    UpdateResourcesRequest,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::block::{before_mount, block_device_by_serial};
use crate::clock;
use crate::container::{self, Container, StartError, Stdio3};
use crate::entropy;
use crate::mounts;
use crate::network;
use crate::reaper::{self, Exit, ExitWatch, Reaper};

enum Input {
    Pipe(pipe::Sender),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

enum Output {
    Pipes(pipe::Receiver, pipe::Receiver),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

struct Process {
    pid: i32,
    exit: ExitWatch,
    input: tokio::sync::Mutex<Option<Input>>,
    output: Mutex<Option<Output>>,
    pty: Option<Arc<AsyncFd<OwnedFd>>>,
    cgroup: PathBuf,
}

/// The process IDs the host gives health probes (cabin-containers' health checks).
const HEALTH_PROBE_PREFIX: &str = "health-";

pub struct AgentService {
    init_started: u64,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    processes: Mutex<HashMap<(String, String), Arc<Process>>>,
}

impl AgentService {
    pub fn new(init_started: u64, reaper: Arc<Reaper>) -> Self {
        Self {
            init_started,
            reaper,
            containers: Mutex::default(),
            processes: Mutex::default(),
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, Status> {
        self.containers
            .locked()
            .get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no container {id}")))
    }

    fn process(&self, r: Option<&ProcessRef>) -> Result<Arc<Process>, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("no process named"))?;
        self.processes
            .locked()
            .get(&(r.container_id.clone(), r.process_id.clone()))
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no process {} in container {}",
                    r.process_id, r.container_id
                ))
            })
    }
}

fn io_status(what: &str, e: io::Error) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// Mount flags by their mount(8) names; any other option goes to the filesystem.
/// A container ID the host may name: letters, digits, `-` and `_` (a name in paths).
fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn split_mount_options(options: &[String], read_only: bool) -> (libc::c_ulong, String) {
    let mut flags = if read_only { libc::MS_RDONLY } else { 0 };
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" => flags &= !libc::MS_RDONLY,
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "noatime" => flags |= libc::MS_NOATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            // A guest directory (a pod member's root on the pod's share) bound elsewhere.
            "bind" => flags |= libc::MS_BIND,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

async fn read_pty(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        let r = guard.try_io(|fd| {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0), // slave closed
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_pty(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        let r = guard.try_io(|fd| {
            // SAFETY: writing from our buffer.
            let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

async fn forward_pipe(
    mut from: pipe::Receiver,
    stream: output_chunk::Stream,
    to: mpsc::Sender<Result<OutputChunk, Status>>,
) {
    let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = OutputChunk {
                    stream: stream as i32,
                    data: buf[..n].to_vec(),
                };
                if to.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
}

type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        crate::trace::mark("hello");
        let req = req.into_inner();
        if req.host_time_unix_nanos > 0 {
            clock::set_if_off(req.host_time_unix_nanos);
        }
        if !req.entropy.is_empty() {
            entropy::add_and_reseed(&req.entropy)
                .map_err(|e| io_status("reseed the kernel's random pool", e))?;
        }
        crate::trace::mark("hello: clock and entropy");
        Ok(Response::new(HelloResponse {
            protocol_version: cabin_proto::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            init_started_boottime_nanos: self.init_started,
            answered_boottime_nanos: clock::boottime_nanos(),
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
        }))
    }

    async fn set_time(&self, req: Request<SetTimeRequest>) -> Result<Response<Empty>, Status> {
        clock::set(req.into_inner().unix_nanos).map_err(|e| io_status("set the clock", e))?;
        Ok(Response::new(Empty {}))
    }

    async fn mount(&self, req: Request<MountRequest>) -> Result<Response<Empty>, Status> {
        crate::trace::mark("mount called");
        let req = req.into_inner();
        let source = match req.source.strip_prefix("blk:") {
            Some(serial) => {
                let dev =
                    block_device_by_serial(serial).map_err(|e| Status::not_found(e.to_string()))?;
                crate::trace::mark("mount: device found");
                before_mount(&dev).map_err(|e| io_status("flush the disk's cached pages", e))?;
                dev.to_string_lossy().into_owned()
            }
            None => req.source.clone(),
        };
        let target = Path::new(&req.target);
        if !target.is_absolute() {
            return Err(Status::invalid_argument("mount target must be absolute"));
        }
        std::fs::create_dir_all(target).map_err(|e| io_status("create the mount point", e))?;
        let (flags, data) = split_mount_options(&req.options, req.read_only);
        crate::trace::mark("mount start");
        container::mount(&source, target, &req.fstype, flags, &data)
            .map_err(|e| Status::internal(e.to_string()))?;
        crate::trace::mark("mount done");
        Ok(Response::new(Empty {}))
    }

    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        if !valid_container_id(&req.container_id) {
            return Err(Status::invalid_argument("invalid container id"));
        }
        if self.containers.locked().contains_key(&req.container_id) {
            return Err(Status::already_exists("container exists"));
        }
        // A pod's container joins the namespaces of its sandbox, which must be running.
        let joins = if req.share_namespaces_of.is_empty() {
            None
        } else {
            if req.network.is_some() {
                return Err(Status::invalid_argument(
                    "a container that shares another's network has no network card of its own",
                ));
            }
            let sandbox = self
                .containers
                .locked()
                .get(&req.share_namespaces_of)
                .cloned()
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "no container {:?} to share namespaces with",
                        req.share_namespaces_of
                    ))
                })?;
            if sandbox.first_process.get().is_none() {
                return Err(Status::failed_precondition(format!(
                    "container {:?} has no running process to share namespaces with",
                    req.share_namespaces_of
                )));
            }
            Some(sandbox)
        };
        let paths = req
            .paths
            .as_ref()
            .map(container::PathRules::from_request)
            .transpose()
            .map_err(Status::invalid_argument)?;
        let rootfs = PathBuf::from(&req.rootfs);
        let ctr_dir = rootfs
            .parent()
            .ok_or_else(|| Status::invalid_argument("the root filesystem has no parent"))?
            .to_path_buf();
        container::prepare_rootfs(&rootfs)
            .map_err(|e| io_status("prepare the root filesystem", e))?;
        crate::trace::mark("rootfs prepared");
        // A pod's container has its sandbox's host name (one UTS namespace) and address.
        let hostname = match (&joins, req.hostname.is_empty()) {
            (Some(sandbox), _) => sandbox.hostname.clone(),
            (None, true) => req.container_id.chars().take(12).collect(),
            (None, false) => req.hostname.clone(),
        };
        let own_ip = match &req.network {
            Some(net) => {
                network::configure(net).map_err(|e| io_status("configure the network", e))?;
                crate::trace::mark("network configured");
                net.address.split('/').next().map(str::to_string)
            }
            None => joins.as_ref().and_then(|s| s.ip.clone()),
        };
        let root =
            crate::inroot::open(&rootfs).map_err(|e| io_status("open the root filesystem", e))?;
        // One network namespace, one set of name servers: a pod's container reads its
        // sandbox's.
        let resolv_conf = match &joins {
            Some(sandbox) => std::fs::read_to_string(sandbox.etc_dir.join("resolv.conf"))
                .map_err(|e| io_status("read the pod's /etc/resolv.conf", e))?,
            None => network::resolv_conf(
                &req.network
                    .as_ref()
                    .map(|n| n.dns.clone())
                    .unwrap_or_default(),
            ),
        };
        mounts::etc_files(
            &root,
            &ctr_dir.join("etc"),
            &[
                ("hostname", format!("{hostname}\n")),
                (
                    "hosts",
                    network::hosts_file(&hostname, own_ip.as_deref(), &req.hosts),
                ),
                ("resolv.conf", resolv_conf),
            ],
        )
        .map_err(|e| io_status("write /etc/hosts, /etc/hostname and /etc/resolv.conf", e))?;
        crate::trace::mark("etc files bound");
        mounts::attach(&root, &ctr_dir.join("mounts"), &req.mounts)
            .map_err(|e| Status::failed_precondition(format!("mounting {e}")))?;
        if req.read_only_root {
            mounts::read_only_root(&rootfs)
                .map_err(|e| io_status("make the root filesystem read-only", e))?;
        }
        crate::trace::mark("mounts attached");
        let cgroup =
            container::create_cgroup(&req.container_id, &req.resources.unwrap_or_default())
                .map_err(|e| io_status("create the cgroup", e))?;
        crate::trace::mark("cgroup created");
        self.containers.locked().insert(
            req.container_id,
            Arc::new(Container {
                rootfs,
                hostname,
                cgroup,
                first_process: Default::default(),
                own_network: req.network.is_none() && joins.is_none(),
                ip: own_ip,
                joins,
                paths,
                first_security: Default::default(),
                etc_dir: ctr_dir.join("etc"),
            }),
        );
        Ok(Response::new(Empty {}))
    }

    async fn start_process(
        &self,
        req: Request<StartProcessRequest>,
    ) -> Result<Response<StartProcessResponse>, Status> {
        let req = req.into_inner();
        let ctr = self
            .containers
            .locked()
            .get(&req.container_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no container {}", req.container_id)))?;
        let key = (req.container_id.clone(), req.process_id.clone());
        if self.processes.locked().contains_key(&key) {
            return Err(Status::already_exists("process exists"));
        }
        crate::trace::mark("start process");
        // No .await between the spawn and the reaper registration (see Reaper::watch).
        let first = req.process_id == "init";
        let join = if first {
            None
        } else {
            Some(ctr.first_process.get().ok_or_else(|| {
                Status::failed_precondition("the container's first process has not started")
            })?)
        };
        let started = container::start_process(&ctr, &req, join).map_err(|e| match e {
            StartError::NotFound(m) => Status::not_found(m),
            StartError::NotExecutable(m) => Status::permission_denied(m),
            StartError::InvalidSpec(m) => Status::invalid_argument(m),
            StartError::Setup(m) => Status::internal(m),
        })?;
        let exit = self.reaper.watch(started.pid);
        crate::trace::mark("process exec'd");
        if first {
            // Opened before the process can be reaped (no .await since the spawn), so
            // the pidfd names this process, not a later one with its pid.
            if let Ok(fd) = container::pidfd(started.pid) {
                let _ = ctr.first_process.set(fd);
            }
            let _ = ctr
                .first_security
                .set(container::process_security(&ctr, &req, false));
        }
        let started_at = clock::boottime_nanos();
        let (input, output, pty) = match started.stdio {
            Stdio3::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let open = |fd: OwnedFd| {
                    pipe::Receiver::from_owned_fd(fd).map_err(|e| io_status("output pipe", e))
                };
                let input = match stdin {
                    Some(fd) => Some(Input::Pipe(
                        pipe::Sender::from_owned_fd(fd).map_err(|e| io_status("input pipe", e))?,
                    )),
                    None => None,
                };
                (input, Output::Pipes(open(stdout)?, open(stderr)?), None)
            }
            Stdio3::Pty { master } => {
                set_nonblocking(&master).map_err(|e| io_status("pty", e))?;
                let master =
                    Arc::new(crate::port::register(master).map_err(|e| io_status("pty", e))?);
                (
                    Some(Input::Pty(master.clone())),
                    Output::Pty(master.clone()),
                    Some(master),
                )
            }
        };
        self.processes.locked().insert(
            key,
            Arc::new(Process {
                pid: started.pid,
                exit,
                input: tokio::sync::Mutex::new(input),
                output: Mutex::new(Some(output)),
                pty,
                cgroup: ctr.cgroup.clone(),
            }),
        );
        Ok(Response::new(StartProcessResponse {
            pid: started.pid as u32,
            started_boottime_nanos: started_at,
        }))
    }

    type ReadOutputStream = OutputStream;

    async fn read_output(
        &self,
        req: Request<ProcessRef>,
    ) -> Result<Response<Self::ReadOutputStream>, Status> {
        let proc = self.process(Some(&req.into_inner()))?;
        let output = proc
            .output
            .locked()
            .take()
            .ok_or_else(|| Status::failed_precondition("the output is already being read"))?;
        let (tx, rx) = mpsc::channel(16);
        match output {
            Output::Pipes(stdout, stderr) => {
                tokio::spawn(forward_pipe(
                    stdout,
                    output_chunk::Stream::Stdout,
                    tx.clone(),
                ));
                tokio::spawn(forward_pipe(stderr, output_chunk::Stream::Stderr, tx));
            }
            Output::Pty(master) => {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
                    while let Ok(n) = read_pty(&master, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let chunk = OutputChunk {
                            stream: output_chunk::Stream::Stdout as i32,
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn write_input(
        &self,
        req: Request<Streaming<InputChunk>>,
    ) -> Result<Response<Empty>, Status> {
        let mut stream = req.into_inner();
        let Some(first) = stream.next().await.transpose()? else {
            return Ok(Response::new(Empty {}));
        };
        let proc = self.process(first.process.as_ref())?;
        let mut input = proc.input.lock().await;
        let Some(sink) = input.as_mut() else {
            return Err(Status::failed_precondition("the process has no open stdin"));
        };
        let mut chunk = first;
        loop {
            if !chunk.data.is_empty() {
                let written = match sink {
                    Input::Pipe(p) => p.write_all(&chunk.data).await,
                    Input::Pty(m) => write_pty(m, &chunk.data).await,
                };
                if written.is_err() {
                    // The process closed its stdin or exited: the rest has nowhere to go.
                    break;
                }
            }
            match stream.next().await.transpose()? {
                Some(next) => chunk = next,
                None => break,
            }
        }
        if matches!(sink, Input::Pipe(_)) {
            // End of the host's input is end of file for the process.
            *input = None;
        }
        Ok(Response::new(Empty {}))
    }

    async fn signal(&self, req: Request<SignalRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let proc = self.process(req.process.as_ref())?;
        if proc.exit.borrow().is_some() {
            return Ok(Response::new(Empty {}));
        }
        // SAFETY: kill(2) on a pid the reaper has not yet collected, so it is still ours.
        if unsafe { libc::kill(proc.pid, req.signal) } != 0 {
            return Err(io_status("signal", io::Error::last_os_error()));
        }
        Ok(Response::new(Empty {}))
    }

    async fn resize_tty(&self, req: Request<ResizeTtyRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let proc = self.process(req.process.as_ref())?;
        let (Some(pty), Some(size)) = (&proc.pty, req.size) else {
            return Err(Status::failed_precondition("the process has no terminal"));
        };
        let ws = libc::winsize {
            ws_row: size.rows as u16,
            ws_col: size.cols as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ with a winsize on the pty master.
        unsafe { libc::ioctl(pty.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        Ok(Response::new(Empty {}))
    }

    async fn wait(&self, req: Request<ProcessRef>) -> Result<Response<ExitStatus>, Status> {
        let r = req.into_inner();
        let proc = self.process(Some(&r))?;
        let exit = reaper::wait(proc.exit.clone()).await;
        // A health probe is forgotten once its end is told: one runs every interval
        // for the container's life, and nothing asks about it again.
        if r.process_id.starts_with(HEALTH_PROBE_PREFIX) {
            self.processes
                .locked()
                .remove(&(r.container_id.clone(), r.process_id.clone()));
        }
        crate::trace::mark("exit seen");
        let (code, signal) = match exit {
            Exit::Code(c) => (c, 0),
            Exit::Signal(s) => (-1, s),
        };
        Ok(Response::new(ExitStatus {
            code,
            signal,
            oom_killed: container::oom_killed(&proc.cgroup),
        }))
    }

    async fn sync(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        tokio::task::spawn_blocking(nix::unistd::sync)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Empty {}))
    }

    async fn stats(&self, req: Request<ContainerRef>) -> Result<Response<ContainerStats>, Status> {
        let id = req.into_inner().container_id;
        let ctr = self
            .containers
            .locked()
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no container {id}")))?;
        Ok(Response::new(container::stats(&ctr.cgroup)))
    }

    async fn processes(&self, req: Request<ContainerRef>) -> Result<Response<ProcessList>, Status> {
        let ctr = self.container(&req.into_inner().container_id)?;
        let cgroup = ctr.cgroup.clone();
        let list = tokio::task::spawn_blocking(move || crate::top::processes(&cgroup))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(list))
    }

    async fn set_hosts(&self, req: Request<SetHostsRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let ctr = self.container(&req.container_id)?;
        let hosts = network::hosts_file(&ctr.hostname, ctr.ip.as_deref(), &req.hosts);
        mounts::rewrite(&ctr.etc_dir.join("hosts"), &hosts)
            .map_err(|e| io_status("rewrite /etc/hosts", e))?;
        Ok(Response::new(Empty {}))
    }

    async fn remove_container(
        &self,
        req: Request<ContainerRef>,
    ) -> Result<Response<Empty>, Status> {
        let id = req.into_inner().container_id;
        let ctr = match self.container(&id) {
            Ok(ctr) => ctr,
            Err(e) => {
                // A start that failed after its root was mounted (CreateContainer
                // refused) leaves the mount in a VM that goes on: it goes now.
                let dir = Path::new("/run/cabin/containers").join(&id);
                if valid_container_id(&id) && dir.exists() {
                    cabin_base::mountinfo::unmount_below(&dir)
                        .map_err(|e| io_status("unmount the container's files", e))?;
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| io_status("remove the container's files", e))?;
                }
                return Err(e);
            }
        };
        container::remove(&ctr)
            .await
            .map_err(|e| io_status("remove the container", e))?;
        self.processes.locked().retain(|(c, _), _| c != &id);
        self.containers.locked().remove(&id);
        Ok(Response::new(Empty {}))
    }

    async fn update_resources(
        &self,
        req: Request<UpdateResourcesRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        let ctr = self.container(&req.container_id)?;
        container::set_limits(
            &ctr.cgroup,
            req.memory_bytes,
            req.cpu_micros,
            req.pids_limit,
        )
        .map_err(|e| io_status("change the container's limits", e))?;
        Ok(Response::new(Empty {}))
    }

    type CopyOutStream = crate::copy::CopyOutStream;

    async fn copy_out(
        &self,
        req: Request<CopyOutRequest>,
    ) -> Result<Response<Self::CopyOutStream>, Status> {
        let req = req.into_inner();
        let ctr = self.container(&req.container_id)?;
        crate::copy::copy_out(&ctr, &self.reaper, req).map(Response::new)
    }

    async fn copy_in(
        &self,
        req: Request<Streaming<CopyInChunk>>,
    ) -> Result<Response<Empty>, Status> {
        crate::copy::copy_in(|id| self.container(id), &self.reaper, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn shutdown(&self, _req: Request<Empty>) -> Result<Response<Empty>, Status> {
        tokio::task::spawn_blocking(nix::unistd::sync)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tokio::spawn(async {
            // Let the answer reach the host first; it also watches QEMU exit, so a lost
            // answer costs nothing.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            crate::power_off();
        });
        Ok(Response::new(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nosuid", "trans=virtio", "version=9p2000.L"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = split_mount_options(&opts, false);
        assert_eq!(flags, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(data, "trans=virtio,version=9p2000.L");
        let (flags, _) = split_mount_options(&["rw".into()], true);
        assert_eq!(flags, 0, "rw overrides read_only");
    }
}
