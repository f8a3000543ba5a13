//! The first program inside a sandbox whose walls bubblewrap does not
//! build (gVisor): it installs the same seccomp filters bubblewrap would,
//! then executes the worker. The `flare` binary runs it as
//! `flare sandbox-exec FILTER... -- PROGRAM ARGS...` ([`ARG`]), so every
//! isolation level shows a function the same system calls.

use std::ffi::OsString;
use std::path::Path;

/// The hidden first argument of the `flare` binary that runs [`exec`].
pub const ARG: &str = "sandbox-exec";

/// Runs the launcher when the process was started as one (`argv[1]` is
/// [`ARG`]): never returns then, except with the exit status of a failure.
pub fn run_if_asked() -> Option<std::process::ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|first| first != ARG) {
        return None;
    }
    let args: Vec<OsString> = args.collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("flare {ARG}: usage: flare {ARG} FILTER... -- PROGRAM ARGS...");
        return Some(std::process::ExitCode::from(125));
    };
    let (filters, program) = (&args[..split], &args[split + 1..]);
    let error = exec(filters, program);
    eprintln!("flare {ARG}: {error}");
    Some(std::process::ExitCode::from(125))
}

/// Installs each raw BPF filter in `filters` (with no-new-privileges),
/// then replaces this process with `program`. Returns only on failure.
///
/// The one place this crate calls the kernel directly: installing a
/// filter has no safe wrapper that takes raw BPF.
#[allow(unsafe_code)]
pub fn exec(filters: &[OsString], program: &[OsString]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let Some((file, args)) = program.split_first() else {
        return std::io::Error::other("no program to run");
    };
    // Read every filter before the first one can refuse a read.
    let mut programs = Vec::with_capacity(filters.len());
    for path in filters {
        match std::fs::read(Path::new(path)) {
            Ok(bytes) if !bytes.is_empty() && bytes.len() % 8 == 0 => programs.push(bytes),
            Ok(_) => {
                return std::io::Error::other(format!(
                    "{} is not a BPF program",
                    Path::new(path).display()
                ));
            }
            Err(e) => return e,
        }
    }
    // SAFETY: prctl with integer arguments changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return std::io::Error::last_os_error();
    }
    for bytes in &programs {
        let Ok(len) = u16::try_from(bytes.len() / 8) else {
            return std::io::Error::other("a filter is longer than the kernel takes");
        };
        let program = libc::sock_fprog {
            len,
            filter: bytes.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `program` points at `bytes`, which outlives the call;
        // the kernel copies the filter. prctl, not seccomp(2), as
        // bubblewrap does: the allow list installed first admits prctl
        // (which can only add filters), not seccomp(2).
        let installed = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            )
        };
        if installed != 0 {
            return std::io::Error::last_os_error();
        }
    }
    std::process::Command::new(file).args(args).exec()
}
