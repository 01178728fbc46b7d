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

mod pyapi;
pub use pyapi::{install_am_send, SendSlot};

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
            None => {
                let mut p = libc::pollfd {
                    fd: pidfd.map_or(-1, |f| f.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                };
                if p.fd < 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                } else {
                    // SAFETY: one pollfd on our stack, valid for the call.
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
    // SAFETY: siginfo_t is plain data; zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let mut by_pidfd = pidfd.is_some();
    loop {
        let (idtype, id) = match pidfd {
            Some(fd) if by_pidfd => (P_PIDFD, fd.as_raw_fd() as libc::c_long),
            _ => (libc::P_PID as libc::c_long, pid as libc::c_long),
        };
        // SAFETY: raw waitid with a pointer to our stack struct, valid for the call, and a
        // null rusage pointer, which the kernel accepts.
        let r = unsafe {
            libc::syscall(
                libc::SYS_waitid,
                idtype,
                id,
                &mut info as *mut libc::siginfo_t,
                libc::WEXITED | libc::WNOWAIT,
                std::ptr::null_mut::<libc::rusage>(),
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            // P_PIDFD is Linux 5.4+; a pidfd from clone(CLONE_PIDFD) exists since 5.2.
            Some(libc::EINVAL) if by_pidfd => by_pidfd = false,
            _ => return Err(err),
        }
    }
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

type BytesResizeFn = unsafe extern "C" fn(*mut *mut ffi::PyObject, ffi::Py_ssize_t) -> libc::c_int;

/// `_PyBytes_Resize`, looked up at run time: it is exported by every CPython 3.x but is not
/// part of the stable ABI, so an abi3 build must not link against it.
fn bytes_resize_fn() -> Option<BytesResizeFn> {
    static FN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *FN.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded
        // objects' symbol tables.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyBytes_Resize".as_ptr()) as usize }
    });
    // SAFETY: a non-null address for this symbol is CPython's `_PyBytes_Resize`, whose C
    // signature is `int (PyObject **, Py_ssize_t)`.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, BytesResizeFn>(addr) })
}

/// A `bytes` object under construction that the pipe is read straight into: it grows by
/// `_PyBytes_Resize` (glibc's realloc moves large blocks with `mremap`, without copying) and
/// is trimmed to size at the end, so a bulk read never holds two copies of its output.
/// Where `_PyBytes_Resize` is missing it falls back to copying into a larger object.
pub struct BytesBuilder {
    obj: Py<PyAny>,
    len: usize,
    cap: usize,
}

impl BytesBuilder {
    pub fn with_capacity(py: Python<'_>, cap: usize) -> PyResult<Self> {
        let obj = bytes_filled(py, cap, |_| {})?;
        Ok(BytesBuilder {
            obj: obj.into_any().unbind(),
            len: 0,
            cap,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn data_ptr(&self, py: Python<'_>) -> *mut u8 {
        // SAFETY: `obj` is a bytes object we own exclusively; PyBytes_AsString returns its
        // internal buffer of `cap` bytes.
        unsafe { ffi::PyBytes_AsString(self.obj.bind(py).as_ptr()).cast::<u8>() }
    }

    pub fn as_slice<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        // SAFETY: the first `len` bytes were written by `extend`/`read_from`.
        unsafe { std::slice::from_raw_parts(self.data_ptr(py), self.len) }
    }

    /// Makes room for at least `additional` more bytes.
    pub fn reserve(&mut self, py: Python<'_>, additional: usize) -> PyResult<()> {
        if self.cap - self.len >= additional {
            return Ok(());
        }
        let new_cap = (self.cap * 2).max(self.len + additional);
        self.resize(py, new_cap)?;
        Ok(())
    }

    fn resize(&mut self, py: Python<'_>, new_cap: usize) -> PyResult<()> {
        if let Some(resize) = bytes_resize_fn() {
            let mut ptr = self.obj.clone_ref(py).into_ptr();
            // Drop our second reference first: _PyBytes_Resize requires refcount 1.
            self.obj = py.None();
            // SAFETY: `ptr` is the only reference to a bytes object nobody else has seen;
            // on failure _PyBytes_Resize releases it, sets it to NULL and raises MemoryError.
            let rc = unsafe { resize(&mut ptr, new_cap as ffi::Py_ssize_t) };
            if rc != 0 || ptr.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: on success `ptr` is an owned reference to the (possibly moved) object.
            self.obj = unsafe { Bound::from_owned_ptr(py, ptr) }.unbind();
        } else {
            let old = self.as_slice(py).to_vec();
            let fresh = bytes_filled(py, new_cap, |dst| dst[..old.len()].copy_from_slice(&old))?;
            self.obj = fresh.into_any().unbind();
        }
        self.cap = new_cap;
        Ok(())
    }

    pub fn extend(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.reserve(py, data.len())?;
        // SAFETY: `reserve` guaranteed `cap - len >= data.len()`; the regions cannot overlap
        // because `data` is not inside our private object.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.data_ptr(py).add(self.len),
                data.len(),
            )
        };
        self.len += data.len();
        Ok(())
    }

    /// One `read(2)` into the spare room (at least `want` bytes of it).
    pub fn read_from(
        &mut self,
        py: Python<'_>,
        fd: &OwnedFd,
        want: usize,
    ) -> PyResult<io::Result<usize>> {
        self.reserve(py, want)?;
        let spare = self.cap - self.len;
        loop {
            // SAFETY: the spare room [len, cap) of our private buffer is valid for writes.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    self.data_ptr(py).add(self.len).cast(),
                    spare,
                )
            };
            if n >= 0 {
                self.len += n as usize;
                return Ok(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Ok(Err(err));
            }
        }
    }

    /// The finished `bytes`, trimmed to what was written.
    pub fn finish(mut self, py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
        if self.len != self.cap {
            self.resize(py, self.len)?;
        }
        Ok(self.obj.into_bound(py).cast_into::<PyBytes>()?)
    }
}

/// Grows a pipe's kernel buffer (best effort; unprivileged users are capped by
/// /proc/sys/fs/pipe-max-size and pipe-user-pages-soft).
pub fn grow_pipe(fd: &OwnedFd, size: i32) {
    // SAFETY: F_SETPIPE_SZ with an integer argument on a descriptor we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
}

// ---------------------------------------------------------------------------------------------
// Spawning: the parent-side calls, and the raw system calls the child makes.
//
// The child is created with clone(CLONE_VM | CLONE_PIDFD) *without* CLONE_VFORK: it shares
// our memory and runs on its own stack while the loop thread carries on. It therefore must not
// touch anything thread-local (errno included): every call it makes is a raw `syscall`
// instruction below, never a libc wrapper.
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn raw6(nr: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10, r8,
    // r9; the kernel clobbers rcx and r11 only. Callers pass arguments valid for `nr`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn raw6(nr: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux aarch64 syscall ABI: number in x8, arguments in x0-x5, result in x0.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack)
        );
    }
    ret
}

/// Whether this architecture has the raw child-side calls (else: spawn through Popen).
pub const NATIVE_SPAWN: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn raw6(_nr: libc::c_long, _a: [usize; 6]) -> isize {
    -(libc::ENOSYS as isize)
}

/// Child-side system calls: no errno, no TLS; errors come back as `Err(errno)`.
pub mod raw {
    use super::raw6;

    fn res(r: isize) -> Result<usize, i32> {
        if (-4095..0).contains(&r) {
            Err(-r as i32)
        } else {
            Ok(r as usize)
        }
    }

    pub fn dup(fd: i32) -> Result<i32, i32> {
        res(raw6(
            libc::SYS_fcntl,
            [fd as usize, libc::F_DUPFD_CLOEXEC as usize, 0, 0, 0, 0],
        ))
        .map(|v| v as i32)
    }
    pub fn dup2(from: i32, to: i32) -> Result<(), i32> {
        res(raw6(
            libc::SYS_dup3,
            [from as usize, to as usize, 0, 0, 0, 0],
        ))
        .map(drop)
    }
    pub fn set_inheritable(fd: i32, inheritable: bool) -> Result<(), i32> {
        let flags = res(raw6(
            libc::SYS_fcntl,
            [fd as usize, libc::F_GETFD as usize, 0, 0, 0, 0],
        ))?;
        let new = if inheritable {
            flags & !(libc::FD_CLOEXEC as usize)
        } else {
            flags | libc::FD_CLOEXEC as usize
        };
        if new != flags {
            res(raw6(
                libc::SYS_fcntl,
                [fd as usize, libc::F_SETFD as usize, new, 0, 0, 0],
            ))?;
        }
        Ok(())
    }
    pub fn chdir(path: *const libc::c_char) -> Result<(), i32> {
        res(raw6(libc::SYS_chdir, [path as usize, 0, 0, 0, 0, 0])).map(drop)
    }
    pub fn umask(mask: u32) {
        raw6(libc::SYS_umask, [mask as usize, 0, 0, 0, 0, 0]);
    }
    pub fn setsid() -> Result<(), i32> {
        res(raw6(libc::SYS_setsid, [0; 6])).map(drop)
    }
    pub fn setpgid(pgid: i32) -> Result<(), i32> {
        res(raw6(libc::SYS_setpgid, [0, pgid as usize, 0, 0, 0, 0])).map(drop)
    }
    pub fn close_range(lo: u32, hi: u32) -> Result<(), i32> {
        res(raw6(
            libc::SYS_close_range,
            [lo as usize, hi as usize, 0, 0, 0, 0],
        ))
        .map(drop)
    }
    pub fn set_pdeathsig(sig: i32) -> Result<(), i32> {
        res(raw6(
            libc::SYS_prctl,
            [libc::PR_SET_PDEATHSIG as usize, sig as usize, 0, 0, 0, 0],
        ))
        .map(drop)
    }
    pub fn getppid() -> i32 {
        raw6(libc::SYS_getppid, [0; 6]) as i32
    }
    pub fn setrlimit(resource: i32, soft: u64, hard: u64) -> Result<(), i32> {
        let new = [soft, hard];
        res(raw6(
            libc::SYS_prlimit64,
            [0, resource as usize, new.as_ptr() as usize, 0, 0, 0],
        ))
        .map(drop)
    }
    pub fn close(fd: i32) {
        raw6(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
    }
    /// Resets `sig` to SIG_DFL unless it is ignored (CPython's reset_signal_handlers), or
    /// unconditionally when `force`.
    pub fn default_signal(sig: i32, force: bool) {
        // The kernel's struct sigaction: handler, flags, restorer, mask (8 bytes on Linux).
        let mut old = [0usize; 4];
        let new = [libc::SIG_DFL, 0usize, 0, 0];
        let sz = 8usize;
        if !force {
            if raw6(
                libc::SYS_rt_sigaction,
                [sig as usize, 0, old.as_mut_ptr() as usize, sz, 0, 0],
            ) != 0
            {
                return;
            }
            if old[0] == libc::SIG_IGN || old[0] == libc::SIG_DFL {
                return;
            }
        }
        raw6(
            libc::SYS_rt_sigaction,
            [sig as usize, new.as_ptr() as usize, 0, sz, 0, 0],
        );
    }
    pub fn set_sigmask(mask: *const libc::sigset_t) -> Result<(), i32> {
        res(raw6(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, mask as usize, 0, 8, 0, 0],
        ))
        .map(drop)
    }
    pub fn execve(
        path: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        match res(raw6(
            libc::SYS_execve,
            [path as usize, argv as usize, envp as usize, 0, 0, 0],
        )) {
            Ok(_) => 0,
            Err(e) => e,
        }
    }
    pub fn write_all(fd: i32, buf: &[u8]) {
        let mut off = 0;
        while off < buf.len() {
            match res(raw6(
                libc::SYS_write,
                [
                    fd as usize,
                    buf[off..].as_ptr() as usize,
                    buf.len() - off,
                    0,
                    0,
                    0,
                ],
            )) {
                Ok(n) => off += n,
                Err(libc::EINTR) => {}
                Err(_) => return,
            }
        }
    }
    pub fn exit(code: i32) -> ! {
        loop {
            raw6(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]);
        }
    }
}

/// The child's stack: an anonymous mapping with a guard page at the low end.
pub struct ChildStack {
    base: usize,
    len: usize,
}

/// Stacks of children that have exec'd or exited, kept for the next spawn: a reused stack
/// costs no mmap/mprotect/munmap, and its pages are already present, so the child takes no
/// page faults before exec. Only touched with the GIL held (spawn and SpawnJob's release).
static STACK_POOL: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());
const STACK_POOL_MAX: usize = 8;

impl ChildStack {
    pub fn new(len: usize) -> io::Result<Self> {
        if let Ok(mut pool) = STACK_POOL.lock() {
            if let Some(i) = pool.iter().position(|&(_, l)| l == len) {
                let (base, len) = pool.swap_remove(i);
                return Ok(ChildStack { base, len });
            }
        }
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping we just made becomes the guard page.
        unsafe { libc::mprotect(p, 4096, libc::PROT_NONE) };
        Ok(ChildStack {
            base: p as usize,
            len,
        })
    }

    fn top(&self) -> *mut libc::c_void {
        (self.base + self.len) as *mut libc::c_void
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // Callers drop a stack only once its child has exec'd or exited (see spawn::SpawnJob),
        // so nothing runs on it any more and it can serve the next child.
        if let Ok(mut pool) = STACK_POOL.lock() {
            if pool.len() < STACK_POOL_MAX {
                pool.push((self.base, self.len));
                return;
            }
        }
        // SAFETY: unmaps exactly the mapping made in `new`, which no child uses any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

// SAFETY: the stack is plain memory owned by one SpawnJob; it is only unmapped, never shared.
unsafe impl Send for ChildStack {}
// SAFETY: as above; no interior access.
unsafe impl Sync for ChildStack {}

pub fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write our locals and the
    // calling thread's mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

pub fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: restores the calling thread's mask from a value pthread_sigmask gave us.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
}

/// clone(CLONE_VM | CLONE_PIDFD | SIGCHLD) running `child(arg)` on `stack`; returns the pid and
/// the pidfd. The caller keeps `arg` and `stack` alive and untouched until the child has
/// exec'd or exited.
pub fn clone_vm(
    stack: &ChildStack,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *const libc::c_void,
) -> io::Result<(i32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: glibc's clone() switches to `stack` in the child and calls `child(arg)` there
    // without touching thread-local state; `child` never returns (it execs or exit_groups).
    // With CLONE_PIDFD the kernel stores the new pidfd through the parent_tid pointer.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            arg as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel created this descriptor for us (CLONE_PIDFD sets O_CLOEXEC).
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The highest fd number the child may have to close when close_range is unavailable.
pub fn max_fd() -> i32 {
    // SAFETY: sysconf only reads process limits.
    let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if n <= 0 {
        1024
    } else {
        n.min(1 << 20) as i32
    }
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// A copy of `environ`, entry for entry, as CPython's Popen passes it when `env` is None
/// (std::env::vars_os would drop entries without `=` and split and re-join the rest).
pub fn environ_snapshot() -> Vec<std::ffi::CString> {
    let mut out = Vec::new();
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings; it is read with
    // the GIL held, where CPython's os.putenv/unsetenv (the only writers Python code has) run,
    // and each string is copied before the next entry is read.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            out.push(std::ffi::CStr::from_ptr(*p).to_owned());
            p = p.add(1);
        }
    }
    out
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

/// Blocking read that retries EINTR (the error pipe, once the child is known to be done).
pub fn read_blocking(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack, valid for the call.
        unsafe { libc::poll(&mut p, 1, -1) };
        match read(fd, buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// The trampoline glibc's clone() calls in the child.
pub extern "C" fn child_trampoline(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `&ChildSpec` the parent passed to clone_vm and keeps alive.
    let spec = unsafe { &*(arg as *const crate::spawn::child::ChildSpec) };
    crate::spawn::child::run(spec)
}

pub fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        s
    }
}
