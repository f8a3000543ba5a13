//! The seccomp filters bubblewrap installs just before it executes a
//! worker.
//!
//! The first is an allow list: the system calls ordinary programs (Python,
//! Node.js, the C library under them) use for files, memory, threads,
//! processes, signals, time, sockets and polling. Everything else fails
//! with ENOSYS, as on a kernel that lacks it, so runtimes take their
//! fallback paths; that shuts out whole families a function never needs
//! and a sandbox escape would: mounts (old and new API), namespaces
//! (`unshare`, `setns`), `ptrace` and `process_vm_*`, `bpf`,
//! `perf_event_open`, keyrings, `io_uring`, `userfaultfd`, module and
//! kexec loading, clock and swap administration. `clone` is allowed only
//! without namespace flags, `socket` only for Unix, IP and netlink routing.
//!
//! The second ([`abi_program`]) says what `seccompiler` cannot: x32 system
//! call numbers are refused, and `clone3`, whose flags live in memory a
//! filter cannot read, fails with ENOSYS so the C library falls back to
//! `clone`, which the first filter checks.

use std::collections::BTreeMap;

use flare_model::{Error, Result};

/// Files and directories.
const FILES: &[i64] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_umask,
    libc::SYS_utimensat,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_fadvise64,
    libc::SYS_flock,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_memfd_create,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
];

/// Memory.
const MEMORY: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_membarrier,
    libc::SYS_get_mempolicy,
];

/// Processes and threads (`clone` separately, with its flags checked).
const PROCESSES: &[i64] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_capget,
    libc::SYS_prctl,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_getrusage,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    // Which CPU the caller runs on: the host answers it from the vDSO
    // without a system call, gVisor as a system call (the JVM's
    // sched_getcpu retried it forever when refused).
    libc::SYS_getcpu,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_times,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
];

/// Signals.
const SIGNALS: &[i64] = &[
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sigaltstack,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_restart_syscall,
    libc::SYS_signalfd4,
];

/// Time and timers.
const TIME: &[i64] = &[
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
];

/// Sockets (the sandbox's network namespace holds only its loopback and
/// the sockets bound into it) and waiting on descriptors.
const IO: &[i64] = &[
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
];

/// x86_64's older entry points, which aarch64 never had (the C library
/// and runtimes still call some of them).
#[cfg(target_arch = "x86_64")]
const LEGACY: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_link,
    libc::SYS_symlink,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_getdents,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_inotify_init,
    libc::SYS_signalfd,
    libc::SYS_alarm,
    libc::SYS_pause,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_getpgrp,
    libc::SYS_time,
    libc::SYS_arch_prctl,
];

#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[i64] = &[];

/// Every system call a worker may make without conditions.
fn allowed() -> impl Iterator<Item = i64> {
    [FILES, MEMORY, PROCESSES, SIGNALS, TIME, IO, LEGACY]
        .into_iter()
        .flatten()
        .copied()
}

/// Namespace flags a worker may not pass to clone(2): a nested user
/// namespace has every capability inside it (nf_tables, mounts).
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// clone(2) is allowed when its flags (the first argument) hold no
/// namespace flag.
fn clone_rule() -> Result<seccompiler::SeccompRule> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let bad = |e: seccompiler::BackendError| Error::internal(format!("seccomp filter: {e}"));
    let no_namespaces = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS),
        0,
    )
    .map_err(bad)?;
    SeccompRule::new(vec![no_namespaces]).map_err(bad)
}

/// The socket families a worker may open: Unix, IP (its own loopback, and
/// the egress proxy's socket) and netlink's routing protocol only (the C
/// library asks it which addresses exist when it resolves a name). Not
/// packet, crypto (AF_ALG), vsock, other netlink protocols or the rest.
const SOCKET_FAMILIES: [i32; 3] = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

fn socket_rules() -> Result<Vec<seccompiler::SeccompRule>> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let bad = |e: seccompiler::BackendError| Error::internal(format!("seccomp filter: {e}"));
    let arg = |index: u8, value: i32| {
        SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            u64::try_from(value).unwrap_or(u64::MAX),
        )
        .map_err(bad)
    };
    let mut rules = SOCKET_FAMILIES
        .iter()
        .map(|family| SeccompRule::new(vec![arg(0, *family)?]).map_err(bad))
        .collect::<Result<Vec<_>>>()?;
    rules.push(
        SeccompRule::new(vec![
            arg(0, libc::AF_NETLINK)?,
            arg(2, libc::NETLINK_ROUTE)?,
        ])
        .map_err(bad)?,
    );
    Ok(rules)
}

/// Compiles the allow list to the raw BPF bubblewrap reads.
pub fn seccomp_program() -> Result<Vec<u8>> {
    program(&[])
}

/// What a zygote may do beyond a worker: make the namespaces and mounts of
/// each child (environments/python/zygote.py), and drop capabilities. Its
/// children install [`seccomp_program`] before they connect.
pub fn zygote_program() -> Result<Vec<u8>> {
    program(&[libc::SYS_unshare, libc::SYS_mount, libc::SYS_capset])
}

/// The allow list plus `extra`, as raw BPF.
fn program(extra: &[i64]) -> Result<Vec<u8>> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        other => return Err(Error::internal(format!("no seccomp filter for {other}"))),
    };
    let mut rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = allowed()
        .chain(extra.iter().copied())
        .map(|nr| (nr, Vec::new()))
        .collect();
    rules.insert(libc::SYS_clone, vec![clone_rule()?]);
    rules.insert(libc::SYS_socket, socket_rules()?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| Error::internal(format!("seccomp filter: {e}")))?;
    let program: BpfProgram = BpfProgram::try_from(filter)
        .map_err(|e| Error::internal(format!("seccomp filter: {e}")))?;
    Ok(program
        .iter()
        .flat_map(|insn| encode(insn.code, insn.jt, insn.jf, insn.k))
        .collect())
}

fn encode(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..2].copy_from_slice(&code.to_ne_bytes());
    out[2] = jt;
    out[3] = jf;
    out[4..].copy_from_slice(&k.to_ne_bytes());
    out
}

/// The second filter: on x86_64 every x32 system call number (bit 30 set)
/// is refused, whatever the allow list matches; clone3(2) fails with
/// ENOSYS.
pub fn abi_program() -> Vec<u8> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    const X32_BIT: u32 = 0x4000_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    let native = if cfg!(target_arch = "aarch64") {
        AUDIT_ARCH_AARCH64
    } else {
        AUDIT_ARCH_X86_64
    };
    let clone3 = libc::SYS_clone3 as u32;
    let program = [
        // seccomp_data: nr at offset 0, arch at 4. Other arches are the
        // first filter's to kill.
        (LD_W_ABS, 0, 0, 4),
        (JEQ_K, 0, 4, native),
        (LD_W_ABS, 0, 0, 0),
        (JGE_K, 3, 0, X32_BIT),
        (JEQ_K, 3, 0, clone3),
        (RET_K, 0, 0, ALLOW),
        (RET_K, 0, 0, ALLOW),
        (RET_K, 0, 0, ERRNO | libc::EPERM as u32),
        (RET_K, 0, 0, ERRNO | libc::ENOSYS as u32),
    ];
    program
        .iter()
        .flat_map(|&(code, jt, jf, k)| encode(code, jt, jf, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_leave_out_the_ways_out() {
        let bytes = seccomp_program().unwrap();
        assert!(!bytes.is_empty());
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(abi_program().len(), 9 * 8);
        let allowed: Vec<i64> = allowed().collect();
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_fsopen,
            libc::SYS_userfaultfd,
            libc::SYS_keyctl,
            libc::SYS_perf_event_open,
            libc::SYS_clone3,
            libc::SYS_clone,
            libc::SYS_socket,
        ] {
            assert!(!allowed.contains(&nr), "{nr} is allowed unconditionally");
        }
        // A zygote's filter is a different, larger program.
        let zygote = zygote_program().unwrap();
        assert!(zygote.len() > bytes.len());
    }
}
