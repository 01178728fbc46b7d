//! What the child does between clone and exec: CPython's `_posixsubprocess.child_exec`, step
//! for step, for the keywords the native path takes.
//!
//! Runs in the child on its own stack while sharing the parent's memory: it only reads the
//! [`ChildSpec`] the parent prepared, allocates nothing, and calls only `sys::raw`.

use std::ffi::CString;

use super::relay::Relay;
use crate::sys::{raw, CStrArray};

/// Where in the child a failure happened, which decides the `OSError`'s filename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    /// exec failed: filename is the program.
    Exec = 0,
    /// chdir(cwd) failed: filename is cwd.
    Chdir = 1,
    /// Anything else before exec: no filename (CPython's "noexec").
    Setup = 2,
}

impl Stage {
    pub fn from_byte(b: u8) -> Stage {
        match b {
            0 => Stage::Exec,
            1 => Stage::Chdir,
            _ => Stage::Setup,
        }
    }
}

/// Everything the child needs, prepared by the parent (pointers into owned `CString`s).
pub struct ChildSpec {
    pub argv: CStrArray,
    pub envp: CStrArray,
    pub exec_list: Vec<CString>,
    pub cwd: Option<CString>,
    pub stdin: i32,
    pub stdout: i32,
    pub stderr: i32,
    pub close_fds: bool,
    /// Sorted, inheritable in the child; includes `errpipe_write` (kept, but CLOEXEC).
    pub keep_fds: Vec<i32>,
    pub max_fd: i32,
    pub restore_signals: bool,
    pub setsid: bool,
    pub pgid: i32,
    pub umask: i32,
    pub errpipe_write: i32,
    pub old_mask: libc::sigset_t,
    /// Signal to receive when the parent dies (0: none), and the parent's pid to check
    /// against, so a parent that died before `prctl` is not missed.
    pub pdeathsig: i32,
    pub parent_pid: i32,
    /// (resource, soft, hard), applied with prlimit before exec.
    pub rlimits: Vec<(i32, u64, u64)>,
    /// Set: the child was cloned with CLONE_FILES and unshares all but the low fds first.
    pub relay: Option<Relay>,
    /// Tests only (`_core._set_exec_gate`): an fd the child reads one byte from before doing
    /// anything else, so a test can hold it between clone and exec; -1 for none.
    pub exec_gate: i32,
}

impl ChildSpec {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        argv: Vec<CString>,
        envp: Vec<CString>,
        exec_list: Vec<CString>,
        cwd: Option<CString>,
        fds: (i32, i32, i32),
        close_fds: bool,
        keep_fds: Vec<i32>,
        restore_signals: bool,
        setsid: bool,
        pgid: i32,
        umask: i32,
        errpipe_write: i32,
    ) -> Self {
        // The real mask is stored just before clone.
        let old_mask = crate::sys::empty_sigset();
        ChildSpec {
            argv: CStrArray::new(argv),
            envp: CStrArray::new(envp),
            exec_list,
            cwd,
            stdin: fds.0,
            stdout: fds.1,
            stderr: fds.2,
            close_fds,
            keep_fds,
            max_fd: crate::sys::max_fd(),
            restore_signals,
            setsid,
            pgid,
            umask,
            errpipe_write,
            old_mask,
            pdeathsig: 0,
            parent_pid: std::process::id() as i32,
            rlimits: Vec::new(),
            relay: None,
            exec_gate: -1,
        }
    }
}

/// The fds as this child sees them: the spec's, or the relay's after the unshare.
struct Fds<'a> {
    stdin: i32,
    stdout: i32,
    stderr: i32,
    errpipe_write: i32,
    keep_fds: &'a [i32],
}

fn fail(errpipe_write: i32, stage: Stage, errno: i32) -> ! {
    let mut msg = [0u8; 5];
    msg[0] = stage as u8;
    msg[1..].copy_from_slice(&errno.to_le_bytes());
    raw::write_all(errpipe_write, &msg);
    raw::exit(255)
}

macro_rules! check {
    ($f:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(errno) => fail($f.errpipe_write, Stage::Setup, errno),
        }
    };
}

/// A relayed child's first step: a table of its own holding only the fds below `lo` (the
/// slots among them), then the pass_fds put back at their numbers. Until the unshare the
/// table is the parent's: nothing here may open, close or dup anything before it.
fn unshare(r: &Relay) {
    if let Err(errno) = raw::unshare_below(r.lo) {
        // Before Linux 5.9 (EINVAL/ENOSYS): a copy of the whole table, which the close_fds
        // pass below empties as it always did.
        if raw::unshare_files().is_err() {
            // Still sharing the parent's table: report through it and touch nothing else.
            fail(r.errpipe_write, Stage::Setup, errno);
        }
    }
    // The parent may put its placeholders back now; the marker wakes its loop to do so.
    r.mark_done();
    raw::write_all(r.errpipe_write, &[super::relay::MARKER]);
    for &(slot, target) in &r.moves {
        if let Err(errno) = raw::dup2(slot, target) {
            fail(r.errpipe_write, Stage::Setup, errno);
        }
    }
}

pub fn run(s: &ChildSpec) -> libc::c_int {
    if s.exec_gate >= 0 {
        raw::read_byte(s.exec_gate);
    }
    let f = match &s.relay {
        Some(r) => {
            unshare(r);
            Fds {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                errpipe_write: r.errpipe_write,
                keep_fds: &r.keep_fds,
            }
        }
        None => Fds {
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            errpipe_write: s.errpipe_write,
            keep_fds: &s.keep_fds,
        },
    };
    for &fd in f.keep_fds {
        if fd != f.errpipe_write {
            check!(f, raw::set_inheritable(fd, true));
        }
    }
    // When a source fd is 0, 1 or 2 it could be overwritten by an earlier dup2 (bpo-12607).
    let mut c2pwrite = f.stdout;
    let mut errwrite = f.stderr;
    if c2pwrite == 0 {
        c2pwrite = check!(f, raw::dup(c2pwrite));
    }
    while errwrite == 0 || errwrite == 1 {
        errwrite = check!(f, raw::dup(errwrite));
    }
    // dup2() clears CLOEXEC; when it would be a no-op we must clear it ourselves (bpo-10806).
    for (src, dst) in [(f.stdin, 0), (c2pwrite, 1), (errwrite, 2)] {
        if src == dst {
            check!(f, raw::set_inheritable(src, true));
        } else if src != -1 {
            check!(f, raw::dup2(src, dst));
        }
    }
    if let Some(cwd) = &s.cwd {
        if let Err(errno) = raw::chdir(cwd.as_ptr()) {
            fail(f.errpipe_write, Stage::Chdir, errno);
        }
    }
    if s.umask >= 0 {
        raw::umask(s.umask as u32);
    }
    // Handlers installed by the parent (Python's C handler among them) must not run here.
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            raw::default_signal(sig, false);
        }
    }
    if s.restore_signals {
        raw::default_signal(libc::SIGPIPE, true);
        raw::default_signal(libc::SIGXFSZ, true);
    }
    check!(f, raw::set_sigmask(&s.old_mask));
    if s.setsid {
        check!(f, raw::setsid());
    }
    if s.pgid >= 0 {
        check!(f, raw::setpgid(s.pgid));
    }
    for &(res, soft, hard) in &s.rlimits {
        check!(f, raw::setrlimit(res, soft, hard));
    }
    if s.pdeathsig != 0 {
        check!(f, raw::set_pdeathsig(s.pdeathsig));
        if raw::getppid() != s.parent_pid {
            // The parent died before prctl took effect: act as if the signal arrived.
            raw::exit(128 + s.pdeathsig);
        }
    }
    if s.close_fds {
        close_open_fds(f.keep_fds, s.max_fd);
    }
    // CPython reports the first error that is not ENOENT/ENOTDIR, else the last one.
    let mut first_other = 0;
    let mut last = libc::ENOENT;
    for exe in &s.exec_list {
        last = raw::execve(exe.as_ptr(), s.argv.as_ptr(), s.envp.as_ptr());
        if last != libc::ENOENT && last != libc::ENOTDIR && first_other == 0 {
            first_other = last;
        }
    }
    let errno = if first_other != 0 { first_other } else { last };
    fail(f.errpipe_write, Stage::Exec, errno)
}

/// Closes every fd >= 3 except `keep_fds` (CPython's _close_open_fds).
fn close_open_fds(keep_fds: &[i32], max_fd: i32) {
    let mut lo: i64 = 3;
    let mut ranges_ok = true;
    for &k in keep_fds.iter().chain(std::iter::once(&i32::MAX)) {
        let k = k as i64;
        if k < lo {
            continue;
        }
        if k > lo {
            let hi = if k == i32::MAX as i64 {
                u32::MAX
            } else {
                (k - 1) as u32
            };
            if ranges_ok && raw::close_range(lo as u32, hi).is_err() {
                ranges_ok = false;
            }
            if !ranges_ok {
                let end = (hi as i64).min(max_fd as i64);
                let mut fd = lo;
                while fd <= end {
                    raw::close(fd as i32);
                    fd += 1;
                }
            }
        }
        lo = k + 1;
    }
}
