//! Every raw system call rsubprocess makes, each `unsafe` block with its `// SAFETY:` line.
//!
//! Callers get safe functions returning `io::Result`; nothing else in the crate uses `unsafe`.
//! Calls that glibc 2.17 does not export (`pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`)
//! go through `syscall(2)` so the wheel's glibc floor stays low.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

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

/// Takes ownership of an fd number handed over from Python.
pub fn own_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only inspects the descriptor table; it cannot affect memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the caller transfers ownership of an fd it no longer uses (checked open above);
    // from here on only the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One non-blocking `read(2)`, retried on EINTR. `Ok(0)` is end of file.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads into the uninitialised spare capacity of `vec`, growing its length by what was read.
pub fn read_into_spare(fd: &OwnedFd, vec: &mut Vec<u8>) -> io::Result<usize> {
    let spare = vec.spare_capacity_mut();
    loop {
        // SAFETY: the spare capacity is valid for writes of `spare.len()` bytes; the kernel only
        // writes, never reads, this memory.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the kernel initialised exactly `n` bytes of the spare capacity.
            unsafe { vec.set_len(vec.len() + n) };
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One non-blocking `write(2)`, retried on EINTR.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid readable slice for the whole call.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
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

/// Resource usage of a reaped child, as `waitid(2)` reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub utime: f64,
    pub stime: f64,
    pub maxrss: i64,
}

const P_PIDFD: libc::c_long = 3;

/// Blocking reap, for a child that was just sent SIGKILL.
pub fn reap_blocking(pidfd: Option<&OwnedFd>, pid: i32) -> io::Result<i32> {
    loop {
        match reap_nohang(pidfd, pid)? {
            Some((rc, _)) => return Ok(rc),
            None => {
                // SAFETY: a pollfd array of one element on our stack, valid for the call.
                let mut p = libc::pollfd {
                    fd: pidfd.map_or(-1, |f| f.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                };
                if p.fd < 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                } else {
                    unsafe { libc::poll(&mut p, 1, 100) };
                }
            }
        }
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
        // SAFETY: raw waitid with pointers to our two stack structs, valid for the call; the
        // fifth argument (rusage) is Linux-specific and filled in by the kernel.
        let r = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                idtype,
                id,
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED | libc::WNOHANG,
                &mut ru as *mut libc::rusage,
            )
        };
        if r == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    // SAFETY: reading the union fields of a siginfo that waitid filled for SIGCHLD.
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Ok(None);
    }
    let usage = Usage {
        utime: ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 * 1e-6,
        stime: ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 * 1e-6,
        maxrss: ru.ru_maxrss,
    };
    Ok(Some((
        returncode_from_siginfo(info.si_code, si_status),
        usage,
    )))
}

/// Blocks until `pid` has exited, without reaping it (the loop thread reaps).
pub fn wait_exit_noreap(pid: i32) -> io::Result<()> {
    // SAFETY: siginfo_t is plain data; zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid with a pointer to our stack struct, valid for the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A `bytes` object of `len` bytes filled by `fill`, without the zero-fill that
/// `PyBytes::new_with` does first (the bulk paths copy hundreds of MiB through here).
pub fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object with `n` writable,
    // uninitialised bytes (or NULL with an exception set). We hold the only reference and write
    // every byte before anyone else can see it; `fill` must initialise the whole slice, which
    // the callers do by copying exactly `len` bytes.
    unsafe {
        let ptr = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t);
        if ptr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let buf = ffi::PyBytes_AsString(ptr).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        Ok(Bound::from_owned_ptr(py, ptr).cast_into_unchecked())
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
