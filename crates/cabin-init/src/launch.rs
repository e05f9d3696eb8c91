//! Starting a process in new namespaces with one clone(2), vfork-style.
//!
//! `fork` would copy init's page tables and then pay copy-on-write faults in both
//! processes, and a new PID namespace would need a thread of its own to unshare it;
//! under TCG each of those costs milliseconds per container start. Instead the child is
//! cloned with CLONE_VM | CLONE_VFORK straight into its PID, mount, UTS and IPC
//! namespaces and its cgroup, runs its set-up on a stack of its own inside init's memory while init
//! waits, and execs. Failures come back through that shared memory, not a pipe.
//!
//! Because the child shares init's memory, everything it runs must be async-signal-safe
//! and must not touch glibc's thread bookkeeping: no allocation, no locks, and raw
//! syscalls for credential changes (glibc's setuid would try to signal init's threads).

use std::cell::UnsafeCell;
use std::ffi::{c_void, CString};
use std::io;
use std::os::fd::RawFd;

/// A failed child set-up step: the step's number (the caller names it) and errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    pub step: u8,
    pub errno: i32,
}

/// The step number reported when execve itself fails.
pub const EXEC_STEP: u8 = u8::MAX;
/// The step number reported when joining a running container's namespaces fails.
pub const JOIN_STEP: u8 = u8::MAX - 1;

/// The child's work between clone and exec.
pub trait ChildSetup: Sync {
    /// Runs in the cloned child with stdio already in place and all signals blocked.
    fn run(&self) -> Result<(), ChildFailure>;
}

/// What to exec, prepared so the child only reads it.
pub struct Program {
    path: CString,
    /// An open file to exec instead of `path` (execveat): a binary that is not in the
    /// container's file system.
    fd: Option<RawFd>,
    /// Exec with every signal still blocked (the mask survives exec), for a program
    /// that takes its signals with sigwait: none sent before it is ready is lost.
    signals_blocked: bool,
    // The CStrings own the bytes the pointer arrays point at.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same value and are only
// read.
unsafe impl Sync for Program {}

impl Program {
    pub fn new(path: CString, argv: Vec<CString>, envp: Vec<CString>) -> Program {
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Program {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            path,
            fd: None,
            signals_blocked: false,
            _argv: argv,
            _envp: envp,
        }
    }

    /// The program open at `fd` (any descriptor, O_PATH included).
    pub fn from_fd(fd: RawFd, argv: Vec<CString>, envp: Vec<CString>) -> Program {
        Program {
            fd: Some(fd),
            ..Program::new(CString::default(), argv, envp)
        }
    }

    pub fn with_signals_blocked(self) -> Program {
        Program {
            signals_blocked: true,
            ..self
        }
    }
}

struct Shared<'a> {
    setup: &'a dyn ChildSetup,
    program: &'a Program,
    stdio: [RawFd; 3],
    failure: UnsafeCell<Option<ChildFailure>>,
    /// For spawn_joined: the running container's first process, the stack top for the
    /// process that execs, and where its pid is left.
    join_pidfd: RawFd,
    exec_stack_top: usize,
    exec_pid: UnsafeCell<i32>,
}

const CHILD_STACK_BYTES: usize = 256 << 10;

extern "C" fn child_main(arg: *mut c_void) -> ! {
    // SAFETY: `arg` is the Shared that `spawn` keeps alive until this child has exec'd or
    // exited (CLONE_VFORK suspends the parent until then).
    let shared = unsafe { &*(arg as *const Shared) };
    let result = child_steps(shared);
    if let Err(f) = result {
        // SAFETY: the parent is suspended, so nothing else touches the cell now.
        unsafe { *shared.failure.get() = Some(f) };
    }
    // SAFETY: leaving without running any of init's exit code.
    unsafe { libc::_exit(127) }
}

fn child_steps(shared: &Shared) -> Result<(), ChildFailure> {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: plain syscalls on values prepared before clone.
    unsafe {
        // init's handlers are its own business; the container starts with defaults.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (target, &fd) in shared.stdio.iter().enumerate() {
            if libc::dup2(fd, target as RawFd) < 0 {
                return Err(ChildFailure {
                    step: 0,
                    errno: errno(),
                });
            }
        }
    }
    shared.setup.run()?;
    // SAFETY: as above; execve only returns on failure.
    unsafe {
        let p = shared.program;
        // Every signal has been blocked since before the clone.
        if !p.signals_blocked {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        match p.fd {
            Some(fd) => {
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c"".as_ptr(),
                    p.argv_ptrs.as_ptr(),
                    p.envp_ptrs.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            None => {
                libc::execve(p.path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
            }
        }
    }
    Err(ChildFailure {
        step: EXEC_STEP,
        errno: errno(),
    })
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3(2) for a child on its own stack: the child comes back from the syscall on
/// that empty stack, so it must not return into Rust code; it calls `child_main(arg)`
/// straight from the trampoline, and child_main never returns.
///
/// # Safety
/// `args.stack`/`stack_size` must describe memory that stays valid until the child has
/// exec'd or exited, and `arg` must be what child_main expects.
unsafe fn clone3_into(
    args: &CloneArgs,
    entry: extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    std::arch::asm!(
        "syscall",
        "test rax, rax",
        "jnz 2f",
        // The child: rsp is the 16-byte aligned top of its stack.
        "mov rdi, r12",
        "call r13",
        "ud2",
        "2:",
        inlateout("rax") libc::SYS_clone3 => ret,
        in("rdi") args as *const CloneArgs,
        in("rsi") std::mem::size_of::<CloneArgs>(),
        in("r12") arg,
        in("r13") entry,
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

/// Which namespaces a container's first process gets besides its PID and mount ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespaces {
    /// UTS and IPC of its own, and the VM's network (its card).
    VmNetwork,
    /// UTS, IPC and a network namespace of its own (only a loopback interface).
    OwnNetwork,
    /// A pod's container: it joins its sandbox's network, UTS and IPC namespaces
    /// itself (setns in its set-up), so clone makes none of them.
    Pod,
}

/// Clones a child into new PID and mount namespaces (and the `namespaces` asked for)
/// and into the cgroup open at `cgroup`, runs `setup` in it and execs `program` with `stdio` as its descriptors
/// 0, 1 and 2. Returns the child's pid once it has exec'd; the caller's reaper collects
/// it later (also when it failed).
///
/// Cloning into the cgroup (CLONE_INTO_CGROUP) rather than writing cgroup.procs later
/// avoids a cgroup migration, which takes a lock whose write side waits for an RCU
/// grace period.
pub fn spawn(
    setup: &dyn ChildSetup,
    program: &Program,
    stdio: [RawFd; 3],
    cgroup: RawFd,
    namespaces: Namespaces,
) -> io::Result<Result<i32, ChildFailure>> {
    let private = libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    let extra = match namespaces {
        Namespaces::VmNetwork => private,
        Namespaces::OwnNetwork => private | libc::CLONE_NEWNET,
        Namespaces::Pod => 0,
    };
    spawn_with(setup, program, stdio, cgroup, Err(extra))
}

/// Starts `program` in the namespaces (mount, UTS, IPC, PID, cgroup) of the running
/// process behind `pidfd` and in the cgroup open at `cgroup`: `cabin exec`.
///
/// A process cannot move itself into another PID namespace, only its children. So the
/// clone3'd child joins the namespaces with setns and clones the process that execs
/// with CLONE_PARENT, making init its parent (init reaps it and reports its exit), and
/// then exits. Both clones share init's memory and are vfork-style, as in `spawn`.
pub fn spawn_joined(
    setup: &dyn ChildSetup,
    program: &Program,
    stdio: [RawFd; 3],
    cgroup: RawFd,
    pidfd: RawFd,
) -> io::Result<Result<i32, ChildFailure>> {
    spawn_with(setup, program, stdio, cgroup, Ok(pidfd))
}

/// The first child of spawn_joined: joins, then clones the process that execs.
extern "C" fn join_main(arg: *mut c_void) -> ! {
    // SAFETY: as child_main.
    let shared = unsafe { &*(arg as *const Shared) };
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWCGROUP;
    // SAFETY: setns on a pidfd we were given; clone of a vfork-style child on the stack
    // spawn_with prepared; the parent (init) stays suspended throughout.
    unsafe {
        if libc::setns(shared.join_pidfd, flags) != 0 {
            *shared.failure.get() = Some(ChildFailure {
                step: JOIN_STEP,
                errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
            libc::_exit(127);
        }
        let pid = libc::clone(
            exec_main,
            shared.exec_stack_top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PARENT,
            arg,
        );
        if pid < 0 {
            *shared.failure.get() = Some(ChildFailure {
                step: JOIN_STEP,
                errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        } else {
            *shared.exec_pid.get() = pid;
        }
        libc::_exit(0)
    }
}

extern "C" fn exec_main(arg: *mut c_void) -> libc::c_int {
    child_main(arg)
}

fn spawn_with(
    setup: &dyn ChildSetup,
    program: &Program,
    stdio: [RawFd; 3],
    cgroup: RawFd,
    // Ok: the pidfd of a process whose namespaces to join; Err: extra namespaces to
    // create besides the ones every container gets.
    join_or_extra: Result<RawFd, libc::c_int>,
) -> io::Result<Result<i32, ChildFailure>> {
    let join = join_or_extra.ok();
    let mut exec_stack = vec![0u8; if join.is_some() { CHILD_STACK_BYTES } else { 0 }];
    let exec_stack_top = (exec_stack.as_mut_ptr() as usize + exec_stack.len()) & !15;
    let shared = Shared {
        setup,
        program,
        stdio,
        failure: UnsafeCell::new(None),
        join_pidfd: join.unwrap_or(-1),
        exec_stack_top,
        exec_pid: UnsafeCell::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let base = stack.as_mut_ptr() as u64;
    // clone3 puts the child's stack pointer at stack + stack_size: keep that aligned.
    let aligned = (base + 15) & !15;
    let size = (CHILD_STACK_BYTES as u64 - (aligned - base)) & !15;
    let new_namespaces = if join.is_some() {
        0
    } else {
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | join_or_extra.err().unwrap_or(0)
    };
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | new_namespaces) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: aligned,
        stack_size: size,
        cgroup: cgroup as u64,
        ..Default::default()
    };
    // SAFETY: signals stay blocked around the clone so that no handler of init's runs on
    // the child's stack; the child only touches `shared` and its own stack, both alive
    // until clone3 returns (the parent is suspended until the child execs or exits).
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let entry = if join.is_some() {
            join_main
        } else {
            child_main
        };
        let ret = clone3_into(&args, entry, &shared as *const Shared as *mut c_void);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret as i32));
        }
        ret as i32
    };
    drop((stack, exec_stack));
    Ok(match shared.failure.into_inner() {
        Some(f) => Err(f),
        None if join.is_some() => Ok(shared.exec_pid.into_inner()),
        None => Ok(pid),
    })
}
