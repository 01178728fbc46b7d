//! Native spawning: clone + exec from Rust, without blocking the loop.
//!
//! `spawn()` prepares everything in the parent (argv, environment, the PATH candidates, fds),
//! then `clone(CLONE_VM | CLONE_PIDFD)` *without* `CLONE_VFORK`: the child runs on its own
//! stack in our memory while the loop thread returns at once. The child's exec closes the
//! CLOEXEC error pipe; a failure before or in exec writes `(stage, errno)` to it instead.
//! `SpawnJob.wait_exec()` awaits that pipe from the loop, so no thread is involved and the loop
//! never stalls on a slow exec (asyncio's Popen and uvloop's spawn stall it for milliseconds);
//! when the loop has nothing else to run, it waits in place of the loop's sleep instead
//! (`SpawnJob::_wait_idle`, `looputil::idle_window`).
//!
//! What it will not do: `preexec_fn`, `user`/`group`/`extra_groups`, `pipesize` and file
//! objects stay on the `subprocess.Popen` path, chosen in Python (`rsubprocess/subprocess.py`).
//! The exec errors are CPython's: the same errno, the same `OSError` subclass and filename.

pub mod child;
pub mod relay;

use std::ffi::CString;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::bridge::{looputil, waiter, Coro, Op, Poll, Reactor};
use crate::errors;
use crate::sys;
use child::{ChildSpec, Stage};

const CHILD_STACK: usize = 256 * 1024;

fn cstrings(items: Vec<Bound<'_, PyBytes>>) -> PyResult<Vec<CString>> {
    items
        .into_iter()
        .map(|b| CString::new(b.as_bytes()).map_err(|_| errors::value_error("embedded null byte")))
        .collect()
}

/// A child between clone and exec: owns the spec and stack the child is using.
#[pyclass(module = "rsubprocess._core")]
pub struct SpawnJob {
    #[pyo3(get)]
    pid: i32,
    pidfd: Option<OwnedFd>,
    errpipe: Option<OwnedFd>,
    spec: Option<Box<ChildSpec>>,
    stack: Option<sys::ChildStack>,
    orig_executable: Py<PyAny>,
    orig_cwd: Py<PyAny>,
    /// The filename CPython's `OSError` carries for a pre-exec failure (None: no filename).
    setup_filename: Option<Py<PyAny>>,
    registered: Option<Py<PyAny>>,
    /// The low-fd slots this child copies its fds from (see `relay`), until it has its own
    /// table (or is dead). While held, the error pipe cannot reach EOF: a slot holds a copy.
    lease: Option<relay::Lease>,
    /// What the error pipe said, once read to the end (`None` inside: exec succeeded).
    outcome: Option<Option<(Stage, i32)>>,
}

impl SpawnJob {
    /// The child has exec'd or exited: nothing of ours is in use any more.
    fn release(&mut self) {
        self.stack = None;
        self.spec = None;
    }

    /// Gives back the slots once the child no longer needs them: it has its own table (it set
    /// its flags; `sweep`) or it is dead (killed before it got there).
    fn settle_lease(&mut self) {
        let Some(lease) = &self.lease else { return };
        relay::sweep();
        let dead = || self.pidfd.as_ref().is_none_or(sys::poll_in);
        if lease.done() || dead() {
            self.lease = None;
        }
    }

    /// Reads the error pipe to the end; `None` means exec succeeded.
    fn read_result(&mut self, block: bool) -> Option<Option<(Stage, i32)>> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let mut buf = [0u8; 5];
        let mut got = 0;
        loop {
            let fd = self.errpipe.as_ref()?;
            if block {
                // Until the slots are back, EOF cannot come (and a dead child sends nothing):
                // look again every millisecond.
                let ms = if self.lease.is_some() { 1 } else { -1 };
                sys::poll_in_timeout(fd, ms);
            }
            match sys::read(fd, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => {
                    if got == 0 && buf[0] == relay::MARKER {
                        // The child's "unshared": our slot copies can go, then EOF can come.
                        buf.copy_within(1..n, 0);
                        got += n - 1;
                        self.settle_lease();
                    } else {
                        got += n;
                    }
                    if got == buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.lease.is_some() {
                        self.settle_lease();
                        if self.lease.is_none() {
                            continue;
                        }
                    }
                    if got == 0 && !block {
                        return None;
                    }
                }
                Err(_) => break,
            }
        }
        self.errpipe = None;
        self.release();
        self.outcome = Some((got == 5).then(|| {
            (
                Stage::from_byte(buf[0]),
                i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]),
            )
        }));
        self.outcome
    }

    fn error(&mut self, py: Python<'_>, stage: Stage, errno: i32) -> PyErr {
        // The child wrote its error and exit_group(255)s: reap it so no zombie is left.
        if let Some(fd) = self.pidfd.take() {
            let _ = sys::reap_blocking(Some(&fd), self.pid);
        }
        self.lease = None;
        let filename = match stage {
            Stage::Exec => Some(self.orig_executable.clone_ref(py)),
            Stage::Chdir => Some(self.orig_cwd.clone_ref(py)),
            Stage::Setup => self.setup_filename.as_ref().map(|f| f.clone_ref(py)),
        };
        let msg = sys::strerror(errno);
        match filename {
            Some(f) => pyo3::exceptions::PyOSError::new_err((errno, msg, f)),
            None => pyo3::exceptions::PyOSError::new_err((errno, msg)),
        }
    }
}

impl Drop for SpawnJob {
    fn drop(&mut self) {
        // The child may still be running on our stack and reading our spec: wait for its exec
        // (or exit) before freeing them. This is short (until exec), and only happens when the
        // awaiting task went away.
        if self.stack.is_some() {
            let _ = self.read_result(true);
        }
    }
}

#[pymethods]
impl SpawnJob {
    /// Await the child's exec. Raises the `OSError` Popen would raise if it failed.
    ///
    /// Cancel safety: cancelling stops waiting only; the caller kills and reaps the child.
    fn wait_exec(slf: &Bound<'_, Self>, r#loop: Py<PyAny>) -> PyResult<Coro> {
        // Taken whether or not the wait goes through the loop (an idle loop's exec is waited
        // for in place): the loop's epoll instance then exists from its first spawn on, not
        // from whichever spawn first found the loop busy -- an fd baseline taken after a
        // first spawn holds, also where the exit watch is a thread (no pidfd).
        let reactor = Reactor::of(slf.py(), &r#loop)?;
        Ok(Coro::new(ExecWaitOp {
            job: slf.clone().unbind(),
            loop_: r#loop,
            fut: None,
            pidfd_watched: None,
            reactor,
        }))
    }

    /// Waits, with the GIL released, up to `timeout_us` for the exec (or its failure), and less
    /// as soon as `loop_fd` -- the loop's own epoll fd -- is readable: for the caller to call
    /// when its loop has nothing else to run before `timeout_us` (no ready callback, no timer
    /// due), so this sleep stands in for the loop's own and delays nothing. The exec result
    /// then waits for `wait_exec`, which completes without a trip through the loop. That trip
    /// (a reader registered and removed, a wake-up, a task step) cost ~20 us more parent CPU
    /// per spawn than this wait (issue 6), and where the child shares the parent's CPU, as on
    /// a small VM, the parent's CPU is part of the spawn's latency. Returns whether the exec
    /// result is in.
    ///
    /// Not awaitable, so nothing to cancel; a signal ends the wait early.
    fn _wait_idle(&mut self, py: Python<'_>, loop_fd: i32, timeout_us: u64) -> bool {
        if self.outcome.is_some() {
            return true;
        }
        py.detach(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_micros(timeout_us);
            loop {
                let Some(err) = self.errpipe.as_ref().map(|f| f.as_raw_fd()) else {
                    return true;
                };
                // Held slots keep the error pipe from reaching EOF; a child killed before it
                // unshared sends no marker, so its exit must end the wait too.
                let pidfd = match (&self.lease, &self.pidfd) {
                    (Some(_), Some(p)) => p.as_raw_fd(),
                    _ => -1,
                };
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                match sys::poll_any_us(&[loop_fd, err, pidfd], left.as_micros() as u64) {
                    Some(1) | Some(2) => {
                        if self.read_result(false).is_some() {
                            return true;
                        }
                    }
                    _ => return false,
                }
            }
        })
    }

    /// Hands the pidfd over (to the `Process`).
    fn take_pidfd(&mut self) -> Option<i32> {
        self.pidfd.take().map(|fd| fd.into_raw_fd())
    }

    /// Kills the child and reaps it (a cancelled spawn: no orphan, no zombie).
    fn _kill_and_reap(&mut self) {
        if let Some(fd) = self.pidfd.take() {
            let _ = sys::pidfd_send_signal(&fd, libc::SIGKILL);
            // Reaped first: a dead child no longer needs its slots, whose copies would keep
            // the error pipe from reaching EOF.
            let _ = sys::reap_blocking(Some(&fd), self.pid);
            self.lease = None;
            let _ = self.read_result(true);
        }
    }

    fn _on_errpipe(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        // Called by the loop: the spawning task steps right here, so no borrow may be held.
        let fut = slf.borrow_mut().registered.take();
        if let Some(fut) = fut {
            waiter::resolve(py, &fut, py.None(), true)?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.orig_executable)?;
        visit.call(&self.orig_cwd)?;
        if let Some(f) = &self.registered {
            visit.call(f)?;
        }
        Ok(())
    }
}

struct ExecWaitOp {
    job: Py<SpawnJob>,
    loop_: Py<PyAny>,
    fut: Option<Py<PyAny>>,
    /// The pidfd, also watched while the child holds slots: killed before it unshared, it
    /// sends no marker, and the error pipe cannot reach EOF until its slots are back.
    pidfd_watched: Option<i32>,
    /// Where the error pipe (and `pidfd_watched`) are watched while the op waits.
    reactor: Py<Reactor>,
}

impl ExecWaitOp {
    fn unregister(&mut self, py: Python<'_>) {
        let pidfd = self.pidfd_watched.take();
        if self.fut.take().is_some() {
            if let Ok(mut j) = self.job.try_borrow_mut(py) {
                j.registered = None;
                let mut r = self.reactor.borrow_mut(py);
                if let Some(fd) = &j.errpipe {
                    r.unwatch(fd.as_raw_fd());
                }
                if let Some(fd) = pidfd {
                    r.unwatch(fd);
                }
            }
        }
    }
}

impl Op for ExecWaitOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        self.unregister(py);
        let mut j = self.job.borrow_mut(py);
        if j.outcome.is_none() {
            // An idle loop would only sleep until the exec lands: wait for it here.
            if let Some((loop_fd, us)) = looputil::idle_window(py, &self.loop_)? {
                j._wait_idle(py, loop_fd, us);
            }
        }
        match j.read_result(false) {
            Some(None) => Ok(Poll::Ready(py.None())),
            Some(Some((stage, errno))) => Err(j.error(py, stage, errno)),
            None => {
                let fd = j.errpipe.as_ref().expect("pending").as_raw_fd();
                let pidfd = match (&j.lease, &j.pidfd) {
                    (Some(_), Some(p)) => Some(p.as_raw_fd()),
                    _ => None,
                };
                let fut = looputil::create_future(py, &self.loop_)?;
                j.registered = Some(fut.clone_ref(py));
                drop(j);
                let cb = self.job.getattr(py, intern!(py, "_on_errpipe"))?;
                self.fut = Some(fut.clone_ref(py));
                let mut r = self.reactor.borrow_mut(py);
                r.add(fd, cb.clone_ref(py))?;
                if let Some(p) = pidfd {
                    r.add(p, cb)?;
                    self.pidfd_watched = Some(p);
                }
                Ok(Poll::Wait(fut))
            }
        }
    }

    fn abort(&mut self, py: Python<'_>) {
        self.unregister(py);
    }

    fn name(&self) -> &'static str {
        "SpawnJob.wait_exec"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.job)?;
        visit.call(&self.reactor)?;
        visit.call(&self.loop_)
    }
}

/// Starts a child natively. Arguments are already validated and encoded by the caller
/// (`rsubprocess.subprocess._spawn_native`), exactly as Popen would have.
#[pyfunction]
#[pyo3(signature = (argv, exec_list, envp, cwd, fds, close_fds, keep_fds, restore_signals, setsid, pgid, umask, orig_executable, orig_cwd, setup_filename, pdeathsig = 0, rlimits = Vec::new()))]
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    py: Python<'_>,
    argv: Vec<Bound<'_, PyBytes>>,
    exec_list: Vec<Bound<'_, PyBytes>>,
    envp: Option<Vec<Bound<'_, PyBytes>>>,
    cwd: Option<Bound<'_, PyBytes>>,
    fds: (i32, i32, i32),
    close_fds: bool,
    mut keep_fds: Vec<i32>,
    restore_signals: bool,
    setsid: bool,
    pgid: i32,
    umask: i32,
    orig_executable: Py<PyAny>,
    orig_cwd: Py<PyAny>,
    setup_filename: Option<(Py<PyAny>,)>,
    pdeathsig: i32,
    rlimits: Vec<(i32, u64, u64)>,
) -> PyResult<SpawnJob> {
    let argv = cstrings(argv)?;
    let exec_list = cstrings(exec_list)?;
    let envp = match envp {
        Some(e) => cstrings(e)?,
        // Snapshot our environment: the parent may change it while the child runs.
        None => sys::environ_snapshot(),
    };
    let cwd = cwd
        .map(|c| CString::new(c.as_bytes()).map_err(|_| errors::value_error("embedded null byte")))
        .transpose()?;
    let (err_r, err_w) = sys::pipe_cloexec().map_err(|e| errors::os_error(&e))?;
    let err_r = relay::hoist(err_r);
    keep_fds.push(err_w.as_raw_fd());
    keep_fds.sort_unstable();
    keep_fds.dedup();
    let mut spec = Box::new(ChildSpec::new(
        argv,
        envp,
        exec_list,
        cwd,
        fds,
        close_fds,
        keep_fds,
        restore_signals,
        setsid,
        pgid,
        umask,
        err_w.as_raw_fd(),
    ));
    spec.pdeathsig = pdeathsig;
    spec.rlimits = rlimits;
    spec.exec_gate = EXEC_GATE.load(std::sync::atomic::Ordering::Relaxed);
    let mut stack = sys::ChildStack::new(CHILD_STACK).map_err(|e| errors::os_error(&e))?;
    // Slots filled here are the child's until it has a table of its own; the SpawnJob keeps
    // the lease until then (see `settle_lease`).
    let lease = if close_fds {
        relay::lease([fds.0, fds.1, fds.2], err_w.as_raw_fd(), &spec.keep_fds)
    } else {
        None
    };
    let share_files = lease.is_some();
    let lease = lease.map(|(lease, r)| {
        spec.relay = Some(r);
        lease
    });
    let old = sys::block_all_signals();
    spec.old_mask = old;
    let res = py.detach(|| {
        sys::clone_vm(
            &mut stack,
            sys::child_trampoline,
            &*spec as *const ChildSpec as *const libc::c_void,
            share_files,
        )
    });
    sys::restore_signals(&old);
    drop(err_w);
    // On failure no child uses the slots: the lease's drop puts them back.
    let (pid, pidfd) = res.map_err(|e| errors::os_error(&e))?;
    let pidfd = relay::hoist(pidfd);
    sys::set_nonblocking(&err_r).map_err(|e| errors::os_error(&e))?;
    Ok(SpawnJob {
        pid,
        pidfd: Some(pidfd),
        errpipe: Some(err_r),
        spec: Some(spec),
        stack: Some(stack),
        orig_executable,
        orig_cwd,
        setup_filename: setup_filename.map(|(f,)| f),
        registered: None,
        lease,
        outcome: None,
    })
}

static EXEC_GATE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Tests only: children spawned from now on read one byte from `fd` before anything else
/// (-1: no gate), so a test can hold a child between clone and exec. Returns the previous fd.
#[pyfunction]
pub fn _set_exec_gate(fd: i32) -> i32 {
    EXEC_GATE.swap(fd, std::sync::atomic::Ordering::Relaxed)
}

/// Turns the low-fd slots of native spawn on or off (`relay`); returns the previous setting.
/// For tests and benchmarks, which compare both ways; on by default unless
/// `RSUBPROCESS_SPAWN_SLOTS=0` (see `relay::ENABLED`).
#[pyfunction]
pub fn _set_fd_relay(on: bool) -> bool {
    relay::set_enabled(on)
}

/// Tests only: how many pooled child stacks a child may still be using.
#[pyfunction]
pub fn _child_stacks_busy() -> usize {
    sys::child_stacks_busy()
}

/// The fds reserved as slots (empty when there are none), for tests.
#[pyfunction]
pub fn _fd_relay_slots() -> Vec<i32> {
    relay::reserved_fds()
}

/// Whether the native path exists on this build (architecture with raw child calls).
#[pyfunction]
pub fn native_spawn_available() -> bool {
    sys::NATIVE_SPAWN
}
