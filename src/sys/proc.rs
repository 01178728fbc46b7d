//! Processes: pidfds, signals, reaping with `waitid(2)` and the resource usage it reports,
//! and errno text.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How a reaped child ended, as `Popen.returncode` encodes it.
pub fn returncode_from_siginfo(code: i32, status: i32) -> i32 {
    match code {
        libc::CLD_EXITED => status,
        // CLD_KILLED / CLD_DUMPED: asyncio reports -signal.
        _ => -status,
    }
}

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when the child exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a returned fd is new and owned by us.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // pidfd_open sets O_CLOEXEC itself.
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo pointer, which the kernel accepts.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::kill(pid, sig) } as libc::c_long)?;
    Ok(())
}

/// Resource usage of a reaped child, as `waitid(2)` reported it: the 16 fields of
/// `resource.struct_rusage`, in its order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub utime: f64,
    pub stime: f64,
    pub rest: [i64; 14],
}

fn usage_from(ru: &libc::rusage) -> Usage {
    Usage {
        utime: ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 * 1e-6,
        stime: ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 * 1e-6,
        rest: [
            ru.ru_maxrss,
            ru.ru_ixrss,
            ru.ru_idrss,
            ru.ru_isrss,
            ru.ru_minflt,
            ru.ru_majflt,
            ru.ru_nswap,
            ru.ru_inblock,
            ru.ru_oublock,
            ru.ru_msgsnd,
            ru.ru_msgrcv,
            ru.ru_nsignals,
            ru.ru_nvcsw,
            ru.ru_nivcsw,
        ],
    }
}

const P_PIDFD: libc::c_long = 3;

/// Blocking reap, for a child that was just sent SIGKILL.
pub fn reap_blocking(pidfd: Option<&OwnedFd>, pid: i32) -> io::Result<i32> {
    loop {
        match reap_nohang(pidfd, pid)? {
            Some((rc, _)) => return Ok(rc),
            None => match pidfd {
                Some(fd) => {
                    super::fd::poll_in_timeout(fd, 100);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            },
        }
    }
}

/// waitid(2) by raw syscall (glibc's wrapper has no rusage argument and no P_PIDFD before
/// 2.36), once: EINTR is the caller's to retry.
fn raw_waitid(
    idtype: libc::c_long,
    id: libc::c_long,
    info: &mut libc::siginfo_t,
    options: libc::c_int,
    ru: &mut libc::rusage,
) -> io::Result<()> {
    // SAFETY: raw waitid with pointers to two structs the caller owns, valid for the call;
    // the fifth argument (rusage) is Linux-specific and filled in by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_waitid,
            idtype,
            id,
            info as *mut libc::siginfo_t,
            options,
            ru as *mut libc::rusage,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Non-blocking reap. `Ok(None)`: still running. Uses the pidfd when given (never touches a
/// recycled pid), else the pid.
pub fn reap_nohang(pidfd: Option<&OwnedFd>, pid: i32) -> io::Result<Option<(i32, Usage)>> {
    let (idtype, id) = match pidfd {
        Some(fd) => (P_PIDFD, fd.as_raw_fd() as libc::c_long),
        None => (libc::P_PID as libc::c_long, pid as libc::c_long),
    };
    // SAFETY: siginfo_t and rusage are plain C structs for which all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        match raw_waitid(
            idtype,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
            &mut ru,
        ) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // SAFETY: reading the union fields of a siginfo that waitid filled for SIGCHLD.
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Ok(None);
    }
    let usage = usage_from(&ru);
    Ok(Some((
        returncode_from_siginfo(info.si_code, si_status),
        usage,
    )))
}

/// Blocks until the child has exited, without reaping it (the loop thread reaps). With a
/// pidfd the wait can never be for another process: if someone else reaps the child, it
/// ends with ECHILD. By pid alone (no pidfd: kernels before 5.3 on the Popen path) it ends
/// with ECHILD too when a foreign reaper took the child, unless that pid was already given
/// to another child of ours in the microseconds before this thread looked again; the loop
/// thread verifies the pid's identity before it reaps or signals (see `process`).
pub fn wait_exit_noreap(pidfd: Option<&OwnedFd>, pid: i32) -> io::Result<()> {
    // SAFETY: siginfo_t and rusage are plain C structs for which all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut by_pidfd = pidfd.is_some();
    loop {
        let (idtype, id) = match pidfd {
            Some(fd) if by_pidfd => (P_PIDFD, fd.as_raw_fd() as libc::c_long),
            _ => (libc::P_PID as libc::c_long, pid as libc::c_long),
        };
        // The rusage is not wanted here, but the kernel fills it in either way.
        let err = match raw_waitid(
            idtype,
            id,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
            &mut ru,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            // P_PIDFD is Linux 5.4+; a pidfd from clone(CLONE_PIDFD) exists since 5.2.
            Some(libc::EINVAL) if by_pidfd => by_pidfd = false,
            // O_NONBLOCK is on the open file description, so every dup of a pidfd that a loop
            // once polled (libuv's uv_poll_init sets it) has it, and since Linux 5.10 waitid on
            // a nonblocking pidfd returns EAGAIN while the child runs: wait for it to become
            // readable (exit) instead, then ask again.
            Some(libc::EAGAIN) if by_pidfd => {
                if let Some(fd) = pidfd {
                    super::fd::poll_in_timeout(fd, -1);
                }
            }
            _ => return Err(err),
        }
    }
}

pub fn strerror(errno: i32) -> String {
    io::Error::from_raw_os_error(errno)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pidfd that uvloop once polled is O_NONBLOCK (also through every dup): the thread
    /// watcher's wait must still block until exit, not end at once with EAGAIN (that left
    /// `wait()` hanging with RSUBPROCESS_NO_PIDFD=1 on uvloop).
    #[test]
    fn wait_exit_noreap_blocks_on_a_nonblocking_pidfd() {
        let child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        let fd = pidfd_open(pid).expect("pidfd_open");
        crate::sys::fd::set_nonblocking(&fd).expect("O_NONBLOCK");
        let started = std::time::Instant::now();
        wait_exit_noreap(Some(&fd), pid).expect("waits until exit");
        // Exited, not reaped: a WNOHANG reap now finds it.
        assert!(started.elapsed() >= std::time::Duration::from_millis(150));
        let reaped = reap_nohang(Some(&fd), pid).expect("reap");
        assert_eq!(reaped.map(|(rc, _)| rc), Some(0));
        drop(child); // std's Child does not reap on drop
    }
}
