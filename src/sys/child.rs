//! Spawning: the parent-side calls, and the raw system calls the child makes.
//!
//! The child is created with clone(CLONE_VM | CLONE_PIDFD) *without* CLONE_VFORK: it shares
//! our memory and runs on its own stack while the loop thread carries on. It therefore must not
//! touch anything thread-local (errno included): every call it makes is a raw `syscall`
//! instruction below, never a libc wrapper.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

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
    /// `close_range(lo, ~0, CLOSE_RANGE_UNSHARE)`: a private table holding only fds < lo.
    pub fn unshare_below(lo: u32) -> Result<(), i32> {
        const CLOSE_RANGE_UNSHARE: usize = 1 << 1;
        res(raw6(
            libc::SYS_close_range,
            [lo as usize, u32::MAX as usize, CLOSE_RANGE_UNSHARE, 0, 0, 0],
        ))
        .map(drop)
    }
    /// `unshare(CLONE_FILES)`: a private copy of the whole table (kernels before 5.9).
    pub fn unshare_files() -> Result<(), i32> {
        res(raw6(
            libc::SYS_unshare,
            [libc::CLONE_FILES as usize, 0, 0, 0, 0, 0],
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
    /// Reads one byte (EINTR retried); for the tests' exec gate.
    pub fn read_byte(fd: i32) {
        let mut b = 0u8;
        while raw6(
            libc::SYS_read,
            [fd as usize, &mut b as *mut u8 as usize, 1, 0, 0, 0],
        ) == -(libc::EINTR as isize)
        {}
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
///
/// Most come from a pool kept for the life of the process. Each pooled stack has a word that
/// the kernel zeroes when its child execs or exits (CLONE_CHILD_CLEARTID: `mm_release`, while
/// our memory is still shared, and after the child's last use of it), so a stack is free
/// again as soon as its child is done with it, whether or not the loop has read the exec
/// from the error pipe yet. With 1600 spawns in one loop turn (benchmark b at 8x) none of
/// them is read before the turn ends, so a pool of stacks given back on that read held none:
/// every spawn mapped a fresh stack and unmapped it later (mmap, mprotect, munmap and page
/// faults, the munmap flushing TLBs on every CPU running a child still sharing our memory).
/// Past `POOL_SLOTS` busy at once a stack is mapped for one child and unmapped on drop.
pub struct ChildStack {
    base: usize,
    len: usize,
    /// Index in the pool; None: a mapping of its own.
    slot: Option<usize>,
    /// A child was cloned onto it: from then on only the kernel frees a pooled stack.
    armed: bool,
}

const POOL_SLOTS: usize = 64;
/// Each pooled stack's mapping (0: not mapped yet) and length.
static POOL_BASE: [AtomicUsize; POOL_SLOTS] = [const { AtomicUsize::new(0) }; POOL_SLOTS];
static POOL_LEN: [AtomicUsize; POOL_SLOTS] = [const { AtomicUsize::new(0) }; POOL_SLOTS];
/// 0: free; 1: taken, its child (if cloned) not done with it yet. Cleared by the kernel.
static POOL_BUSY: [AtomicI32; POOL_SLOTS] = [const { AtomicI32::new(0) }; POOL_SLOTS];

fn map_stack(len: usize) -> io::Result<usize> {
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
    Ok(p as usize)
}

impl ChildStack {
    pub fn new(len: usize) -> io::Result<Self> {
        for i in 0..POOL_SLOTS {
            if POOL_BUSY[i]
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let mut base = POOL_BASE[i].load(Ordering::Relaxed);
            if base == 0 {
                match map_stack(len) {
                    Ok(b) => {
                        base = b;
                        POOL_LEN[i].store(len, Ordering::Relaxed);
                        POOL_BASE[i].store(b, Ordering::Relaxed);
                    }
                    Err(e) => {
                        POOL_BUSY[i].store(0, Ordering::Release);
                        return Err(e);
                    }
                }
            } else if POOL_LEN[i].load(Ordering::Relaxed) != len {
                POOL_BUSY[i].store(0, Ordering::Release);
                continue;
            }
            return Ok(ChildStack {
                base,
                len,
                slot: Some(i),
                armed: false,
            });
        }
        Ok(ChildStack {
            base: map_stack(len)?,
            len,
            slot: None,
            armed: false,
        })
    }

    fn top(&self) -> *mut libc::c_void {
        (self.base + self.len) as *mut libc::c_void
    }
}

/// Pooled stacks a child may still be using (tests: all free again once every child has
/// exec'd or exited).
pub fn child_stacks_busy() -> usize {
    POOL_BUSY
        .iter()
        .filter(|w| w.load(Ordering::Acquire) != 0)
        .count()
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        match self.slot {
            // The kernel frees it when the child is done with it.
            Some(_) if self.armed => {}
            // No child ever ran on it.
            Some(i) => POOL_BUSY[i].store(0, Ordering::Release),
            // SAFETY: unmaps exactly the mapping made in `new`; callers drop a stack of its
            // own only once its child has exec'd or exited (see spawn::SpawnJob).
            None => unsafe {
                libc::munmap(self.base as *mut libc::c_void, self.len);
            },
        }
    }
}

// SAFETY: the stack is plain memory owned by one SpawnJob (a pooled one until its child is
// done with it); it is only unmapped, never shared.
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

/// clone(CLONE_VM | CLONE_PIDFD | SIGCHLD), plus CLONE_FILES when `share_files` and
/// CLONE_CHILD_CLEARTID on a pooled stack's word, running `child(arg)` on `stack`; returns the
/// pid and the pidfd. The caller keeps `arg` and `stack` alive and untouched until the child
/// has exec'd or exited.
pub fn clone_vm(
    stack: &mut ChildStack,
    child: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *const libc::c_void,
    share_files: bool,
) -> io::Result<(i32, OwnedFd)> {
    let mut flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD;
    if share_files {
        flags |= libc::CLONE_FILES;
    }
    let ctid = match stack.slot {
        Some(i) => {
            flags |= libc::CLONE_CHILD_CLEARTID;
            POOL_BUSY[i].as_ptr()
        }
        None => std::ptr::null_mut(),
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: glibc's clone() switches to `stack` in the child and calls `child(arg)` there
    // without touching thread-local state; `child` never returns (it execs or exit_groups).
    // With CLONE_PIDFD the kernel stores the new pidfd through the parent_tid pointer; with
    // CLONE_CHILD_CLEARTID it zeroes `ctid`, a static, when the child leaves our memory.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            flags,
            arg as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_void>(),
            ctid,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    stack.armed = true;
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

/// argv or envp for execve: owned strings and the NULL-terminated array of pointers into
/// them, built once and only read afterwards (by the child, between clone and exec).
pub struct CStrArray {
    /// Owns what `ptrs` points into; never read directly.
    _strings: Vec<std::ffi::CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStrArray {
    pub fn new(strings: Vec<std::ffi::CString>) -> Self {
        let ptrs = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        CStrArray {
            _strings: strings,
            ptrs,
        }
    }

    pub fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

// SAFETY: the pointers point into the heap buffers of `_strings`, owned by the same value and
// never moved, changed or dropped before it; nothing writes through them, so the value may be
// sent to and read from any thread.
unsafe impl Send for CStrArray {}
// SAFETY: as above: shared access only ever reads.
unsafe impl Sync for CStrArray {}
