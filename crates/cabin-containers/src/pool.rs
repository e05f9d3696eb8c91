//! The warm pool: VMs resumed and warmed up ahead of any request ([`WarmVm`]), each
//! waiting in a process of its own (`cabin container pool-member`) that becomes the
//! supervisor of the container it is given. Under TCG a VM resumed per request
//! translates every guest path of a container's start afresh; a pooled VM has done so
//! already, and its QEMU, state and memory are in place.
//!
//! `cabin serve --pool N` keeps N members ([`serve`]), of the common shape until a
//! container of another shape finds none (the pool then follows it, a waiting VM of
//! the old shape making room): it starts them, replaces one that is taken or dies, and
//! never has more than N; members watch
//! their link to it and end with their VM when it is gone (killed or not), until they
//! are taken. [`take`] is the requester's side: `Containers::start` (so `cabin run`,
//! `run -d`, `start` and the Docker API) asks the pool of its data directory first and
//! starts a supervisor of its own when there is no pool, no member of the container's
//! shape, or no answer in time.
//!
//! The pool's socket is `snapshots/pool.sock` (a private directory); one request per
//! connection, one JSON line each way.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use cabin_base::{Host, Paths};
use cabin_net::NetworkMode;
use cabin_vmm::{accel, AccelRequest};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::spec::ContainerSpec;
use crate::vm::{VmShape, WarmVm};

/// How long a requester waits for the pool's answer before starting its own VM.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest line either side of a link reads.
const MAX_LINE: u64 = 64 * 1024;
/// The pause after a member that failed before it was ready, doubled each time in a
/// row, up to [`MAX_BACKOFF`]: a pool that cannot start VMs must not spin.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The pause before a member that took a container is replaced: its container's start
/// (some 70 ms under TCG) then has the host's CPUs to itself rather than sharing them
/// with the next VM's resume and warm-up, which take several times as long.
const REFILL_AFTER_TAKE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn socket(paths: &Paths) -> PathBuf {
    paths.snapshots().join("pool.sock")
}

/// Whether a server keeps a pool for this data directory (its socket answers).
pub fn available(paths: &Paths) -> bool {
    std::os::unix::net::UnixStream::connect(socket(paths)).is_ok()
}

/// The helper command of one member.
pub fn member_args(shape: &VmShape) -> Vec<String> {
    vec![
        "container".into(),
        "pool-member".into(),
        "--shape".into(),
        serde_json::to_string(shape).unwrap_or_default(),
    ]
}

/// The shape under which a container like `cfg` is pooled; None when no pooled VM can
/// take it: it needs devices or host resources of its own (shared folders, volumes,
/// published ports, a bridge or a user-defined network).
pub fn poolable(cfg: &ContainerSpec) -> Option<VmShape> {
    if cfg.network != NetworkMode::User || cfg.user_network.is_some() || !cfg.publish.is_empty() {
        return None;
    }
    let shape = normal(VmShape::of(cfg));
    pooled_kind(&shape).then_some(shape)
}

/// Whether a pooled VM can have `shape`: no device a container brings (shared folders,
/// volumes; a pod's sandbox has its pod's share, and a member has no VM of its own),
/// the user-mode network, the accelerator decided. A shape a requester sends is
/// checked with this before the pool starts VMs of it.
fn pooled_kind(shape: &VmShape) -> bool {
    shape.shares == 0
        && shape.volumes == 0
        && !shape.pod_sandbox
        && shape.network == NetworkMode::User
        && matches!(shape.accel, AccelRequest::Force(_))
}

/// `shape` with the accelerator decided, so that "auto" and the choice it makes are
/// one shape.
fn normal(mut shape: VmShape) -> VmShape {
    shape.accel = AccelRequest::Force(accel::choose(shape.accel).accel);
    shape
}

/// The shape `cabin serve --pool` keeps: that of a container run with no options, on
/// accelerator `accel`.
pub fn common_shape(accel: AccelRequest) -> VmShape {
    let mut spec = ContainerSpec::new(crate::root::RootSource::Dir("/".into()), Vec::new());
    spec.accel = accel;
    normal(VmShape::of(&spec))
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: String,
    shape: VmShape,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    taken: bool,
}

/// What a member tells the pool.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FromMember {
    Ready {
        vmm_pid: u32,
    },
    Failed {
        reason: String,
    },
    Took {
        id: String,
    },
    /// Its VM died while it waited (said just before the member ends).
    Died {
        reason: String,
    },
}

/// What the pool tells a member.
#[derive(Debug, Serialize, Deserialize)]
struct Take {
    take: String,
}

/// Container IDs as the store makes them (hex); anything else is refused before it
/// reaches a path.
fn valid_id(id: &str) -> bool {
    (12..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Asks the pool of this data directory to run container `id` (whose VM has `shape`)
/// on one of its VMs. True when a member took it: that member is the container's
/// supervisor now. False, at once, when there is no pool or no member of this shape.
pub async fn take(paths: &Paths, id: &str, shape: &VmShape) -> bool {
    let ask = async {
        let mut conn = UnixStream::connect(socket(paths)).await.ok()?;
        let mut line = serde_json::to_vec(&Request {
            id: id.to_string(),
            shape: shape.clone(),
        })
        .ok()?;
        line.push(b'\n');
        conn.write_all(&line).await.ok()?;
        let mut answer = String::new();
        BufReader::new((&mut conn).take(MAX_LINE))
            .read_line(&mut answer)
            .await
            .ok()?;
        serde_json::from_str::<Reply>(&answer).ok()
    };
    matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, ask).await,
        Ok(Some(Reply { taken: true }))
    )
}

/// A pool member's life (`cabin container pool-member`; its standard input is its
/// link to the pool): resumes and warms up a VM of `shape`, says it is ready, and waits.
/// Told to take a container, it says so and supervises it to its end; when the link
/// closes first (the pool ended) or the VM dies, it stops the VM and returns.
pub async fn member(host: &Host, shape: &VmShape) -> Result<(), MemberError> {
    let link = std::os::unix::net::UnixStream::from(take_link().map_err(MemberError::Link)?);
    link.set_nonblocking(true).map_err(MemberError::Link)?;
    let link = UnixStream::from_std(link).map_err(MemberError::Link)?;
    let (read, mut write) = link.into_split();
    let mut read = BufReader::new(read.take(MAX_LINE));
    let mut line = String::new();
    // The pool says nothing to a member before it is ready: anything read here, its
    // end-of-file above all, means the pool is gone (a server killed while the VM
    // resumes). Dropping the start then stops the VM at once.
    let started = tokio::select! {
        started = WarmVm::start(host, shape) => started,
        _ = read.read_line(&mut line) => return Ok(()),
    };
    let mut warm = match started {
        Ok(w) => w,
        Err(e) => {
            let reason = e.to_string();
            let _ = say(&mut write, &FromMember::Failed { reason }).await;
            return Err(MemberError::Start(e));
        }
    };
    say(
        &mut write,
        &FromMember::Ready {
            vmm_pid: warm.vmm_pid(),
        },
    )
    .await
    .map_err(MemberError::Link)?;
    // The VM's end first: a take that arrives as the VM dies is not taken (the
    // requester then starts a VM of its own) rather than failed.
    let told = tokio::select! {
        biased;
        why = warm.died() => {
            let _ = say(&mut write, &FromMember::Died { reason: why.clone() }).await;
            return Err(MemberError::Died(why));
        }
        r = read.read_line(&mut line) => r.ok().filter(|n| *n > 0).and_then(|_| serde_json::from_str::<Take>(&line).ok()),
    };
    let Some(Take { take: id }) = told.filter(|t| valid_id(&t.take)) else {
        warm.discard().await;
        return Ok(());
    };
    // In charge of the container (its control socket listening) before saying so: the
    // requester attaches as soon as it hears. A member that cannot take charge says
    // nothing, and the requester starts a supervisor of its own.
    let charge = match crate::supervisor::Charge::take(host, &id, false).await {
        Ok(c) => c,
        Err(e) => {
            warm.discard().await;
            return Err(MemberError::Supervise(e));
        }
    };
    // The container's VM must be this VM's shape whatever the requester said (one of
    // another cabin version, say): its devices and memory come with the shape.
    if poolable(charge.spec()).as_ref() != Some(shape) {
        drop(charge);
        warm.discard().await;
        return Err(MemberError::Mismatch(id));
    }
    let _ = say(&mut write, &FromMember::Took { id: id.clone() }).await;
    drop((read, write));
    charge.run(Some(warm)).await.map_err(MemberError::Supervise)
}

/// The member's link to the pool, moved off standard input (descriptor 0, where the
/// pool put it), which becomes /dev/null: a descriptor 0 left free would be the next one
/// opened, and a pipe there would be closed in the children that take it as their input.
fn take_link() -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC of descriptor 0, the link the pool made for this process;
    // the copy is owned by the OwnedFd from here on.
    let copy = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` was just made and nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(copy) };
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 onto descriptor 0, which this process owns; the link has its copy.
    if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(link)
}

async fn say(to: &mut OwnedWriteHalf, what: &FromMember) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(what).map_err(std::io::Error::other)?;
    line.push(b'\n');
    to.write_all(&line).await
}

/// Why a pool member ended without a container.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("the link to the pool: {0}")]
    Link(std::io::Error),
    #[error("starting the pooled VM: {0}")]
    Start(crate::vm::RunError),
    #[error("the pooled VM died: {0}")]
    Died(String),
    #[error(transparent)]
    Supervise(crate::supervisor::SuperviseError),
    #[error("container {0} was asked for on a VM of another shape than its own")]
    Mismatch(String),
}

/// Why a pool could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("a pool's VMs resume from boot snapshots, which CABIN_SNAPSHOTS=off turns off: unset it, or serve without --pool")]
    NoSnapshots,
    #[error("another cabin serve keeps a pool for this data directory ({0}): stop it, or serve without --pool")]
    Taken(PathBuf),
    #[error("the pool's socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the pool's members and requesters tell the pool's one task.
enum Event {
    Ready(u64, u32),
    Failed(u64, String),
    Took(u64),
    /// A member's link closed; why its VM died, when it said.
    Gone(u64, Option<String>),
    Take(Request, oneshot::Sender<bool>),
    Refill,
}

enum State {
    Starting,
    Idle,
    Taking(oneshot::Sender<bool>),
    /// Told to stop its VM (the pool makes room for another shape): still counted
    /// until its link closes, so that its replacement never runs beside it.
    Leaving,
}

struct Member {
    shape: VmShape,
    write: OwnedWriteHalf,
    state: State,
    vmm_pid: u32,
    /// The container it was told to take.
    container: String,
}

/// What the pool did, for whoever runs it (`cabin serve` prints it).
pub type Report = Box<dyn Fn(&str) + Send + Sync>;

/// Keeps `size` VMs ready until this future is dropped (the members then see their
/// link close and stop their VMs): of `shape` first, then of the shape a request last
/// found none of. Errors only when it cannot start: another pool serves the data
/// directory, or its socket cannot be made.
pub async fn serve(
    host: Host,
    size: usize,
    shape: VmShape,
    report: Report,
) -> Result<(), PoolError> {
    if !host.snapshots {
        return Err(PoolError::NoSnapshots);
    }
    let paths = &host.paths;
    let dir = paths.snapshots();
    let sock = socket(paths);
    let fail = |source| PoolError::Socket {
        path: sock.clone(),
        source,
    };
    cabin_base::files::create_private_dir(&dir).map_err(fail)?;
    let Some(_lock) = cabin_base::lock::lock_path(
        &dir.join("pool.lock"),
        cabin_base::lock::Mode::Exclusive,
        cabin_base::lock::Wait::NoWait,
    )
    .map_err(fail)?
    else {
        return Err(PoolError::Taken(sock));
    };
    // Whatever is there is a dead pool's: the lock is ours.
    let _ = std::fs::remove_file(&sock);
    // Made once here rather than by each of the first members at once.
    if let Err(e) = crate::vm::prepare_snapshot(&host, &shape).await {
        report(&format!("pool: the boot snapshot its VMs resume from: {e}"));
    }
    let listener = UnixListener::bind(&sock).map_err(fail)?;
    report(&format!("pool of {size} warm VMs started"));
    let (events, mut inbox) = mpsc::unbounded_channel::<Event>();
    let accept = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let events = events.clone();
                tokio::spawn(answer(conn, events));
            }
        })
    };
    let _accept = AbortOnDrop(accept);
    let mut members: HashMap<u64, Member> = HashMap::new();
    // The shape of the VMs it starts: the common one, then the last one asked for.
    let mut wanted = shape;
    let mut next_id = 0u64;
    let mut failures = 0u32;
    let mut refill_due = false;
    let _ = events.send(Event::Refill);
    while let Some(event) = inbox.recv().await {
        let took = matches!(event, Event::Took(_));
        match event {
            Event::Refill => {
                refill_due = false;
                while members.len() < size {
                    next_id += 1;
                    match spawn_member(&host, next_id, &wanted, events.clone()) {
                        Ok(write) => {
                            members.insert(
                                next_id,
                                Member {
                                    shape: wanted.clone(),
                                    write,
                                    state: State::Starting,
                                    vmm_pid: 0,
                                    container: String::new(),
                                },
                            );
                        }
                        Err(e) => {
                            report(&format!("pool: cannot start a VM: {e}"));
                            failures += 1;
                            break;
                        }
                    }
                }
            }
            Event::Ready(id, pid) => {
                failures = 0;
                if let Some(m) = members.get_mut(&id) {
                    m.state = State::Idle;
                    m.vmm_pid = pid;
                    report(&format!("pool: VM ready (QEMU pid {pid})"));
                }
            }
            Event::Failed(id, reason) => {
                members.remove(&id);
                failures += 1;
                report(&format!("pool: a VM failed to start: {reason}"));
            }
            Event::Took(id) => {
                if let Some(Member {
                    state: State::Taking(reply),
                    container,
                    vmm_pid,
                    ..
                }) = members.remove(&id)
                {
                    report(&format!(
                        "pool: container {} took a warm VM (QEMU pid {vmm_pid})",
                        &container[..12.min(container.len())]
                    ));
                    let _ = reply.send(true);
                }
            }
            Event::Gone(id, why) => {
                if let Some(m) = members.remove(&id) {
                    match m.state {
                        State::Taking(reply) => {
                            let _ = reply.send(false);
                        }
                        State::Starting => failures += 1,
                        State::Leaving => {}
                        State::Idle => report(&match why {
                            Some(why) => format!(
                                "pool: a waiting VM died; replacing it ({})",
                                why.lines().next().unwrap_or_default()
                            ),
                            None => "pool: a waiting VM died; replacing it".into(),
                        }),
                    }
                }
            }
            Event::Take(request, reply) => {
                let found = members
                    .iter()
                    .find(|(_, m)| matches!(m.state, State::Idle) && m.shape == request.shape)
                    .map(|(id, _)| *id)
                    .filter(|_| valid_id(&request.id) && pooled_kind(&request.shape));
                match found {
                    Some(id) => {
                        let m = members.get_mut(&id).expect("found above");
                        let mut line = serde_json::to_vec(&Take {
                            take: request.id.clone(),
                        })
                        .unwrap_or_default();
                        line.push(b'\n');
                        if m.write.write_all(&line).await.is_ok() {
                            m.state = State::Taking(reply);
                            m.container = request.id;
                        } else {
                            members.remove(&id);
                            let _ = reply.send(false);
                        }
                    }
                    None => {
                        let _ = reply.send(false);
                        // The pool follows demand: the VMs it starts next have the shape
                        // last asked for, and when it is full a waiting VM of another
                        // shape makes room (its link closes: it stops its VM).
                        if valid_id(&request.id)
                            && pooled_kind(&request.shape)
                            && request.shape != wanted
                        {
                            report("pool: a container of another VM shape came; the pool's next VMs take that shape");
                            wanted = request.shape;
                        }
                        if members.len() >= size {
                            let other = members
                                .iter()
                                .find(|(_, m)| matches!(m.state, State::Idle) && m.shape != wanted)
                                .map(|(id, _)| *id);
                            if let Some(m) = other.and_then(|id| members.get_mut(&id)) {
                                // Its link's end: it stops its VM and ends.
                                let _ = m.write.shutdown().await;
                                m.state = State::Leaving;
                            }
                        }
                    }
                }
            }
        }
        if members.len() < size && !refill_due {
            refill_due = true;
            let events = events.clone();
            let pause = if failures == 0 {
                if took {
                    REFILL_AFTER_TAKE
                } else {
                    Duration::ZERO
                }
            } else {
                (FIRST_BACKOFF * 2u32.saturating_pow(failures - 1)).min(MAX_BACKOFF)
            };
            tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                let _ = events.send(Event::Refill);
            });
        }
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts member `id`: a process of its own (not this one's child, so that a taken
/// member, now a supervisor, outlives the pool), linked by a socket pair on its
/// standard input; a task reads what it says.
fn spawn_member(
    host: &Host,
    id: u64,
    shape: &VmShape,
    events: mpsc::UnboundedSender<Event>,
) -> std::io::Result<OwnedWriteHalf> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut cmd = std::process::Command::new(host.cabin_binary()?);
    cmd.args(member_args(shape));
    cabin_base::spawn::orphaned_with_stdin(
        cmd,
        std::process::Stdio::from(OwnedFd::from(theirs)),
        cabin_base::spawn::Output::Discard,
    )?;
    ours.set_nonblocking(true)?;
    let (read, write) = UnixStream::from_std(ours)?.into_split();
    tokio::spawn(async move {
        let mut read = BufReader::new(read.take(MAX_LINE * 4));
        let mut line = String::new();
        loop {
            line.clear();
            let said = match read.read_line(&mut line).await {
                Ok(n) if n > 0 => serde_json::from_str::<FromMember>(&line).ok(),
                _ => None,
            };
            let event = match said {
                Some(FromMember::Ready { vmm_pid }) => Event::Ready(id, vmm_pid),
                Some(FromMember::Failed { reason }) => Event::Failed(id, reason),
                Some(FromMember::Took { .. }) => {
                    let _ = events.send(Event::Took(id));
                    return;
                }
                Some(FromMember::Died { reason }) => {
                    let _ = events.send(Event::Gone(id, Some(reason)));
                    return;
                }
                None => {
                    let _ = events.send(Event::Gone(id, None));
                    return;
                }
            };
            let _ = events.send(event);
        }
    });
    Ok(write)
}

/// One requester: its request to the pool's task, the answer back. Only this user's
/// processes reach the socket (a private directory); a request is one bounded line.
async fn answer(mut conn: UnixStream, events: mpsc::UnboundedSender<Event>) {
    let mut line = String::new();
    {
        let mut reader = BufReader::new((&mut conn).take(MAX_LINE));
        let read = reader.read_line(&mut line);
        if !matches!(tokio::time::timeout(ANSWER_TIMEOUT, read).await, Ok(Ok(n)) if n > 0) {
            return;
        }
    }
    let taken = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            let _ = events.send(Event::Take(request, tx));
            rx.await.unwrap_or(false)
        }
        Err(_) => false,
    };
    let mut reply = serde_json::to_vec(&Reply { taken }).unwrap_or_default();
    reply.push(b'\n');
    let _ = conn.write_all(&reply).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::MountSpec;

    #[test]
    fn only_containers_without_devices_of_their_own_are_pooled() {
        let plain = ContainerSpec::new(crate::root::RootSource::Dir("/x".into()), vec![]);
        assert_eq!(poolable(&plain), Some(common_shape(AccelRequest::Auto)));
        let mut bigger = plain.clone();
        bigger.memory_bytes = Some(1 << 30);
        assert!(poolable(&bigger).is_some_and(|s| s != common_shape(AccelRequest::Auto)));
        let mut bridged = plain.clone();
        bridged.network = NetworkMode::Bridge;
        assert_eq!(poolable(&bridged), None);
        let mut shared = plain.clone();
        shared.mounts.push(MountSpec::Bind {
            source: "/tmp".into(),
            target: "/t".into(),
            read_only: false,
        });
        assert_eq!(poolable(&shared), None);
        let mut published = plain;
        published.publish.push(cabin_vmm::PortForward {
            protocol: cabin_vmm::Protocol::Tcp,
            host_ip: std::net::Ipv4Addr::LOCALHOST,
            host_port: 8080,
            guest_port: 80,
        });
        assert_eq!(poolable(&published), None);
    }

    #[test]
    fn a_shape_a_requester_sends_is_kept_only_when_a_pooled_vm_can_have_it() {
        let common = common_shape(AccelRequest::Auto);
        assert!(pooled_kind(&common));
        let changed: [fn(&mut VmShape); 5] = [
            |s| s.shares = 1,
            |s| s.volumes = 2,
            |s| s.pod_sandbox = true,
            |s| s.network = NetworkMode::Bridge,
            |s| s.accel = AccelRequest::Auto,
        ];
        for change in changed {
            let mut s = common.clone();
            change(&mut s);
            assert!(!pooled_kind(&s), "{s:?}");
        }
    }

    #[test]
    fn ids_that_are_not_the_stores_are_refused() {
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id("short"));
    }
}
