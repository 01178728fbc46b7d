//! File descriptors: taking ownership, non-blocking mode, EINTR-retried `read`/`write`, pipes
//! and duplicates.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Repeats a raw call that returns -1 and sets errno on failure while a signal interrupts it.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One non-blocking `read(2)`, retried on EINTR. `Ok(0)` is end of file.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the whole call.
    retry_eintr(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// Reads into the uninitialised spare capacity of `vec`, growing its length by what was read.
pub fn read_into_spare(fd: &OwnedFd, vec: &mut Vec<u8>) -> io::Result<usize> {
    let spare = vec.spare_capacity_mut();
    // SAFETY: the spare capacity is valid for writes of `spare.len()` bytes; the kernel only
    // writes, never reads, this memory.
    let n = retry_eintr(|| unsafe {
        libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len())
    })?;
    // SAFETY: the kernel initialised exactly `n` bytes of the spare capacity.
    unsafe { vec.set_len(vec.len() + n) };
    Ok(n)
}

/// One non-blocking `write(2)`, retried on EINTR.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice for the whole call.
    retry_eintr(|| unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// A second descriptor for the same open file, close-on-exec.
pub fn dup_cloexec(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; no memory is passed.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Grows a pipe's kernel buffer (best effort; unprivileged users are capped by
/// /proc/sys/fs/pipe-max-size and pipe-user-pages-soft) and returns its capacity now (0 if
/// the descriptor is not a pipe).
pub fn grow_pipe(fd: &OwnedFd, size: i32) -> usize {
    // SAFETY: F_SETPIPE_SZ with an integer argument on a descriptor we own; it returns the
    // capacity it set.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    if r > 0 {
        return r as usize;
    }
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads the pipe's capacity.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    r.max(0) as usize
}

pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created for us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits up to `ms` milliseconds (-1: no limit) for `fd` to be readable (or hung up);
/// whether it is. EINTR counts as not yet.
pub fn poll_in_timeout(fd: &OwnedFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on our stack, valid for the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// Waits up to `us` microseconds (`ppoll`: poll's timeout is in ms) for one of `fds` to be
/// readable or hung up; the index of the first that is, or None (time up, or a signal).
pub fn poll_any_us(fds: &[RawFd], us: u64) -> Option<usize> {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    let n = fds.len().min(p.len());
    for (slot, &fd) in p.iter_mut().zip(&fds[..n]) {
        slot.fd = fd;
    }
    let ts = libc::timespec {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `n` pollfds and a timespec on our stack, valid for the call; no signal mask.
    let r = unsafe { libc::ppoll(p.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
    if r <= 0 {
        return None;
    }
    p[..n].iter().position(|q| q.revents != 0)
}

/// Whether `fd` is readable now (a pidfd: the child has exited).
pub fn poll_in(fd: &OwnedFd) -> bool {
    poll_in_timeout(fd, 0)
}

/// `madvise(MADV_POPULATE_WRITE)` over the whole pages inside `[start, end)` (addresses in one
/// live allocation of ours): faults them in as a write would, without changing their contents.
/// False where the kernel lacks it (before 5.14), which is then not tried again.
pub fn populate_write(start: usize, end: usize) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    const PAGE: usize = 4096;
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return false;
    }
    let a = (start + PAGE - 1) & !(PAGE - 1);
    let b = end & !(PAGE - 1);
    if b <= a {
        return true;
    }
    // SAFETY: [a, b) is page-aligned and lies inside a writable allocation the caller owns;
    // MADV_POPULATE_WRITE only pre-faults those pages, it never changes their contents.
    let r = unsafe { libc::madvise(a as *mut libc::c_void, b - a, MADV_POPULATE_WRITE) };
    if r != 0 {
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            UNSUPPORTED.store(true, Ordering::Relaxed);
        }
        return false;
    }
    true
}

/// A descriptor whose (device, inode) no other open file shares: a memfd. Placeholders for
/// the spawn slots are its duplicates, so a slot still holding it is recognisably ours.
pub fn unique_placeholder() -> io::Result<OwnedFd> {
    // SAFETY: memfd_create by syscall (glibc 2.17 has no wrapper) with a NUL-terminated name
    // and integer flags; a returned fd is new and owned by us.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_memfd_create,
            c"rsubprocess-slot".as_ptr(),
            libc::MFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a duplicate at the lowest free number >= `min`.
pub fn dup_at_least(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC with integer arguments; no memory is passed.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(new)
}

/// `dup_at_least`, owned: the caller closes the original.
pub fn dup_owned_at_least(fd: &OwnedFd, min: RawFd) -> io::Result<OwnedFd> {
    let new = dup_at_least(fd.as_raw_fd(), min)?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `dup3(from, to, O_CLOEXEC)`: `to` now refers to `from`'s open file, atomically.
pub fn dup_onto(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup3 with integer arguments; the caller owns `to` (checked with `identity`).
    if unsafe { libc::dup3(from, to, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// (st_dev, st_ino) of what `fd` refers to, or None if it is not open.
pub fn identity(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain data for which all-zero is valid; fstat writes only into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` lives for the call.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Runs `f` in the child of every `fork()` from now on (pthread_atfork), in the only thread
/// the child has, before `os.fork()` returns there. `f` must be async-signal-safe.
pub fn at_fork_child(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: registers a handler with no prepare/parent parts; `f` is a plain function that
    // lives for the whole program.
    let r = unsafe { libc::pthread_atfork(None, None, Some(f)) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Closes a descriptor number we own but do not hold as an `OwnedFd`.
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns `fd` (checked with `identity`) and never uses it again.
    unsafe { libc::close(fd) };
}

/// A new epoll instance of our own, close-on-exec.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes only flags; a returned fd is new and owned by us.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to `ep`, level-triggered for readability, tagged with `token`.
pub fn epoll_add_in(ep: &OwnedFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a valid epoll_event on our stack for the duration of the call.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes `fd` from `ep`.
pub fn epoll_del(ep: &OwnedFd, fd: RawFd) -> io::Result<()> {
    // Non-null for kernels before 2.6.9, which required it.
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: as in `epoll_add_in`; the kernel ignores `ev` for EPOLL_CTL_DEL.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Appends the tokens of the fds in `ep` that are ready now (no waiting) to `out`.
pub fn epoll_ready(ep: &OwnedFd, out: &mut Vec<u64>) -> io::Result<()> {
    const BATCH: usize = 64;
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    loop {
        // SAFETY: `evs` has room for BATCH events and outlives the call; timeout 0: no wait.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), BATCH as i32, 0) };
        if n >= 0 {
            // By value: epoll_event is packed on x86_64.
            out.extend(evs[..n as usize].iter().map(|e| e.u64));
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
