//! `Process`: pid, returncode, exit watching, signals, `wait()` and `communicate()`.
//!
//! Exit is watched with a pidfd in the loop's `bridge::Reactor` (one epoll instance per loop,
//! registered with it by `add_reader`) and reaped with
//! `waitid(P_PIDFD, WNOHANG)` on the loop thread: no SIGCHLD handler, no `waitpid(-1)`, no
//! thread per child; `wait()` on an idle loop polls the pidfd in place of the loop's sleep
//! (`Process::wait_idle`). Where `pidfd_open` is unavailable, a short-lived thread blocks in
//! `waitid(WNOWAIT)` (which does not reap) and hands over to the loop, which reaps (`watcher`).
//! Signals go through the pidfd, so a reaped (and possibly recycled) pid is never signalled.
//! Without any pidfd (Popen path on kernels before 5.3) the pid's start time, recorded at
//! spawn, is checked before every reap and signal: a pid that someone else reaped and the
//! kernel gave to a new process is reported as a lost child (returncode 255), never touched.

pub mod ops;
pub mod tree;
pub mod watcher;

use std::os::fd::{AsRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::bridge::{looputil, waiter, Coro, Reactor};
use crate::errors;
use crate::streams::reader::StreamReader;
use crate::streams::writer::StreamWriter;
use crate::sys::{self, Usage};

#[pyclass(module = "rsubprocess._core", subclass, weakref)]
pub struct Process {
    #[pyo3(get)]
    pid: i32,
    pub(crate) loop_: Py<PyAny>,
    popen: Option<Py<PyAny>>,
    pidfd: Option<OwnedFd>,
    /// Where the pidfd is watched, while it is.
    reactor: Option<Py<Reactor>>,
    pub(crate) returncode: Option<i32>,
    usage: Option<Usage>,
    pub(crate) exit_waiters: Vec<Py<PyAny>>,
    pub(crate) stdin: Option<Py<StreamWriter>>,
    pub(crate) stdout: Option<Py<StreamReader>>,
    pub(crate) stderr: Option<Py<StreamReader>>,
    owner_pid: u32,
    /// Start time (clock ticks after boot, /proc/<pid>/stat) of a child watched by pid alone.
    start_time: Option<u64>,
}

/// Field 22 of /proc/<pid>/stat: unique for a pid's lifetime, so a recycled pid differs.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let field = std::str::from_utf8(after)
        .ok()?
        .split_whitespace()
        .nth(19)?;
    field.parse().ok()
}

fn own(fd: Option<i32>) -> PyResult<Option<OwnedFd>> {
    fd.map(|fd| sys::own_fd(fd).map_err(|e| errors::os_error(&e)))
        .transpose()
}

impl Process {
    fn start_watch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (pid, has_pidfd) = {
            let p = slf.borrow();
            (p.pid, p.pidfd.is_some())
        };
        let disabled = std::env::var_os("RSUBPROCESS_NO_PIDFD").is_some_and(|v| !v.is_empty());
        if has_pidfd && !disabled {
            // Native spawn's pidfd from clone: poll it as it is (no second pidfd_open).
            let cb = slf.getattr(intern!(py, "_on_exit"))?.unbind();
            let mut p = slf.borrow_mut();
            let raw = p.pidfd.as_ref().expect("has_pidfd").as_raw_fd();
            p.reactor = Some(Reactor::watch(py, &p.loop_, raw, cb)?);
            return Ok(());
        }
        let res = if disabled {
            Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
        } else {
            sys::pidfd_open(pid)
        };
        match res {
            Ok(fd) => {
                let raw = fd.as_raw_fd();
                let cb = slf.getattr(intern!(py, "_on_exit"))?.unbind();
                let mut p = slf.borrow_mut();
                p.reactor = Some(Reactor::watch(py, &p.loop_, raw, cb)?);
                p.pidfd = Some(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Process::report_lost(slf)?,
            Err(_) if has_pidfd => Process::watch_with_thread(slf)?,
            Err(_) => {
                let t = start_time(pid);
                if t.is_none() && std::path::Path::new("/proc/self/stat").exists() {
                    // Gone from /proc already: reaped by someone else.
                    return Process::report_lost(slf);
                }
                slf.borrow_mut().start_time = t;
                Process::watch_with_thread(slf)?;
            }
        }
        Ok(())
    }

    /// Already reaped by someone else: report it on the next loop turn (`reap_now` finds out).
    fn report_lost(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let cb = slf.getattr(intern!(py, "_on_exit"))?.unbind();
        looputil::call_soon(py, &slf.borrow().loop_, cb)
    }

    /// Whether `pid` may still be our child's: always with a pidfd (not used by pid), else
    /// its start time must be the recorded one.
    fn pid_is_ours(&self) -> bool {
        match self.start_time {
            Some(t) if self.pidfd.is_none() => start_time(self.pid) == Some(t),
            _ => true,
        }
    }

    /// Fallback exit watch for kernels without pidfd polling (see `watcher`).
    fn watch_with_thread(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (pid, loop_, pidfd) = {
            let p = slf.borrow();
            let pidfd = p.pidfd.as_ref().map(sys::dup_cloexec).transpose();
            (p.pid, p.loop_.clone_ref(slf.py()), pidfd)
        };
        // The thread's own copy of the pidfd (native spawn has one from clone), closed when
        // it ends: waiting through it can never wait for a recycled pid.
        let pidfd = pidfd.map_err(|e| errors::os_error(&e))?;
        watcher::spawn(pid, pidfd, loop_, slf.clone().unbind()).map_err(|e| errors::os_error(&e))
    }

    /// Reaps if the child has exited; returns whether the returncode is now known.
    fn reap_now(&mut self, py: Python<'_>) -> bool {
        if self.returncode.is_some() {
            return true;
        }
        let res = if self.pid_is_ours() {
            sys::reap_nohang(self.pidfd.as_ref(), self.pid)
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ECHILD))
        };
        let rc = match res {
            Ok(None) => return false,
            Ok(Some((rc, usage))) => {
                self.usage = Some(usage);
                rc
            }
            Err(_) => {
                let msg = crate::compat::lost_child_message(py, self.pid);
                let _ = crate::compat::log_warning(py, &msg);
                255
            }
        };
        self.returncode = Some(rc);
        self.set_popen_returncode(py);
        true
    }

    /// SIGKILL and a blocking reap, short since SIGKILL cannot be caught. Returns whether the
    /// child was still running. Sets the returncode but wakes no waiter: the loop may be
    /// closed or not running (interpreter exit); if it runs again, the exit watch does that.
    fn kill_and_reap(&mut self) -> bool {
        if self.returncode.is_some() || self.owner_pid != std::process::id() {
            return false;
        }
        if self.signal(libc::SIGKILL).is_err() {
            return false;
        }
        let rc = if self.pid_is_ours() {
            sys::reap_blocking(self.pidfd.as_ref(), self.pid).unwrap_or(255)
        } else {
            255
        };
        self.returncode = Some(rc);
        true
    }

    /// The signal through the pidfd, else by pid once its identity is checked. A child that
    /// exited meanwhile is not an error (DESIGN 1b).
    fn signal(&self, sig: i32) -> std::io::Result<()> {
        let res = match &self.pidfd {
            Some(fd) => sys::pidfd_send_signal(fd, sig),
            None if self.pid_is_ours() => sys::kill(self.pid, sig),
            None => return Ok(()),
        };
        match res {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r,
        }
    }

    fn set_popen_returncode(&self, py: Python<'_>) {
        if let (Some(rc), Some(popen)) = (self.returncode, &self.popen) {
            // Popen must not try to reap (or warn about) a child we already reaped.
            let _ = popen.setattr(py, intern!(py, "returncode"), rc);
        }
    }

    /// Reaps if the child has exited, stops the watch and wakes the exit waiters (stepping
    /// them right here with `step_now`: only from a callback the loop invoked). The returncode,
    /// or None while the child runs.
    fn finish_exit(slf: &Bound<'_, Self>, step_now: bool) -> PyResult<Option<i32>> {
        let py = slf.py();
        let mut p = slf.borrow_mut();
        if !p.reap_now(py) {
            return Ok(None);
        }
        p.stop_watch(py);
        let rc = p.returncode.expect("reaped");
        let waiters = std::mem::take(&mut p.exit_waiters);
        drop(p);
        for w in waiters {
            waiter::resolve(py, &w, rc.into_pyobject(py)?.into_any().unbind(), step_now)?;
        }
        Ok(Some(rc))
    }

    /// From a task's step, when its loop is idle (`looputil::idle_window`): waits up to that
    /// window for the exit, with the GIL released and no borrow held, and ends as the loop's
    /// own sleep would (an fd it watches ready, a signal). The returncode if the child exited
    /// meanwhile (reaped, watch stopped, other waiters woken through `call_soon`).
    pub(crate) fn wait_idle(slf: &Bound<'_, Self>) -> PyResult<Option<i32>> {
        let py = slf.py();
        let (pidfd, loop_) = {
            let p = slf.borrow();
            if p.returncode.is_some() || p.reactor.is_none() {
                return Ok(p.returncode);
            }
            let Some(fd) = p.pidfd.as_ref() else {
                return Ok(None);
            };
            (fd.as_raw_fd(), p.loop_.clone_ref(py))
        };
        let Some((loop_fd, us)) = looputil::idle_window(py, &loop_)? else {
            return Ok(None);
        };
        // The pidfd is also in the loop's epoll set (through the reactor's instance), so both
        // turn readable at exit: it comes
        // first. Should another thread close it meanwhile (nothing here does), the poll sees a
        // stranger's fd at worst, and reap_now finds the child still running.
        if py.detach(|| sys::poll_any_us(&[pidfd, loop_fd], us)) != Some(0) {
            return Ok(None);
        }
        Process::finish_exit(slf, false)
    }

    fn stop_watch(&mut self, py: Python<'_>) {
        if let (Some(r), Some(fd)) = (self.reactor.take(), &self.pidfd) {
            r.borrow_mut(py).unwatch(fd.as_raw_fd());
        }
        self.pidfd = None;
    }
}

#[pymethods]
impl Process {
    #[new]
    #[allow(clippy::too_many_arguments)] // mirrors the Python-side call, one value per pipe
    #[pyo3(signature = (r#loop, popen, pid, stdin_fd, stdout_fd, stderr_fd, limit, pidfd = None))]
    fn py_new(
        py: Python<'_>,
        r#loop: Py<PyAny>,
        popen: Option<Py<PyAny>>,
        pid: i32,
        stdin_fd: Option<i32>,
        stdout_fd: Option<i32>,
        stderr_fd: Option<i32>,
        limit: usize,
        pidfd: Option<i32>,
    ) -> PyResult<Self> {
        // Every fd is ours from here on, also when this fails: dropping closes it. The caller
        // (rsubprocess.subprocess._adopt) relies on that to close nothing twice.
        let [pidfd, fin, fout, ferr] = [pidfd, stdin_fd, stdout_fd, stderr_fd].map(own);
        let (pidfd, fin, fout, ferr) = (pidfd?, fin?, fout?, ferr?);
        crate::compat::prepare_warnings(py)?;
        let stdin = fin
            .map(|fd| StreamWriter::new_pipe(py, r#loop.clone_ref(py), fd))
            .transpose()?;
        let stdout = fout
            .map(|fd| StreamReader::new_pipe(py, r#loop.clone_ref(py), limit, fd))
            .transpose()?;
        let stderr = ferr
            .map(|fd| StreamReader::new_pipe(py, r#loop.clone_ref(py), limit, fd))
            .transpose()?;
        Ok(Process {
            pid,
            loop_: r#loop,
            popen,
            pidfd,
            reactor: None,
            returncode: None,
            usage: None,
            exit_waiters: Vec::new(),
            stdin,
            stdout,
            stderr,
            owner_pid: std::process::id(),
            start_time: None,
        })
    }

    /// Starts watching for exit; called once, right after construction.
    fn _start(slf: &Bound<'_, Self>) -> PyResult<()> {
        Process::start_watch(slf)
    }

    /// Kills and reaps the child at once, if it is still running (a spawn that failed after
    /// the child started, or interpreter exit); returns whether it was.
    fn _kill_now(&mut self, py: Python<'_>) -> bool {
        let killed = self.kill_and_reap();
        self.set_popen_returncode(py);
        killed
    }

    fn _on_exit(slf: &Bound<'_, Self>) -> PyResult<()> {
        // Called by the loop (pidfd readable, or call_soon): the waiting tasks step right here.
        Process::finish_exit(slf, true).map(drop)
    }

    #[getter]
    fn returncode(&self) -> Option<i32> {
        self.returncode
    }

    #[getter]
    fn stdin(&self, py: Python<'_>) -> Option<Py<StreamWriter>> {
        self.stdin.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn stdout(&self, py: Python<'_>) -> Option<Py<StreamReader>> {
        self.stdout.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn stderr(&self, py: Python<'_>) -> Option<Py<StreamReader>> {
        self.stderr.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    #[getter]
    fn _popen(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.popen.as_ref().map(|s| s.clone_ref(py))
    }

    /// Wait for the child to exit and return its returncode. Returns at exit even if a
    /// grandchild keeps a pipe open.
    ///
    /// Cancel safety: cancelling stops waiting only; the child is not touched.
    fn wait(slf: &Bound<'_, Self>) -> Coro {
        Coro::new(ops::WaitOp::new(slf.clone().unbind()))
    }

    /// Cancel safety: `input` is queued and stdin closed on the first step, so cancelling
    /// does not un-send it; output read so far stays in `proc.stdout`/`proc.stderr`, where a
    /// later `read()` or `communicate()` finds it (asyncio discards it).
    #[pyo3(signature = (input = None))]
    fn communicate(slf: &Bound<'_, Self>, input: Option<Py<PyAny>>) -> Coro {
        Coro::new(ops::CommunicateOp::new(slf.clone().unbind(), input))
    }

    fn send_signal(&self, sig: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.returncode.is_some() {
            return Err(errors::process_lookup());
        }
        let sig = crate::compat::signal_number(sig)?;
        self.signal(sig).map_err(|e| errors::os_error(&e))
    }

    /// Sends `sig` to the child and every descendant still in its tree (see `process::tree`);
    /// returns how many processes were signalled (0 once the child was reaped).
    #[pyo3(signature = (sig = None))]
    fn kill_tree(&self, py: Python<'_>, sig: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let sig: i32 = match sig {
            Some(s) => crate::compat::signal_number(s)?,
            None => libc::SIGKILL,
        };
        if self.returncode.is_some() {
            return Ok(0);
        }
        if !(1..=64).contains(&sig) {
            return Err(errors::os_error_from(libc::EINVAL));
        }
        let send_root = |s: i32| match &self.pidfd {
            Some(fd) => sys::pidfd_send_signal(fd, s),
            None if self.pid_is_ours() => sys::kill(self.pid, s),
            None => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        };
        if send_root(libc::SIGSTOP).is_err() {
            return Ok(0);
        }
        let pid = self.pid;
        let n = py.detach(|| tree::signal_descendants(pid, sig, &|p, s| sys::kill(p, s).is_ok()));
        let root_ok = send_root(sig).is_ok();
        let _ = send_root(libc::SIGCONT);
        Ok(n + usize::from(root_ok))
    }

    /// `resource.struct_rusage` of the child, gathered when it was reaped; None before.
    #[getter]
    fn rusage(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(u) = self.usage else { return Ok(None) };
        let mut fields: Vec<Py<PyAny>> = vec![
            u.utime.into_pyobject(py)?.into_any().unbind(),
            u.stime.into_pyobject(py)?.into_any().unbind(),
        ];
        for v in u.rest {
            fields.push(v.into_pyobject(py)?.into_any().unbind());
        }
        let cls = py
            .import(intern!(py, "resource"))?
            .getattr(intern!(py, "struct_rusage"))?;
        Ok(Some(
            cls.call1((pyo3::types::PyTuple::new(py, fields)?,))?
                .unbind(),
        ))
    }

    fn terminate(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGTERM.into_pyobject(py)?.into_any())
    }

    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGKILL.into_pyobject(py)?.into_any())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        Ok(format!("<{} {}>", slf.get_type().name()?, slf.borrow().pid))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Some(r) = &self.reactor {
            visit.call(r)?;
        }
        for o in self.exit_waiters.iter().chain(&self.popen) {
            visit.call(o)?;
        }
        if let Some(s) = &self.stdin {
            visit.call(s)?;
        }
        for s in self.stdout.iter().chain(&self.stderr) {
            visit.call(s)?;
        }
        Ok(())
    }
}

impl Drop for Process {
    /// Dropped with the child still running: only possible once the loop no longer holds the
    /// exit watch, i.e. the loop was closed. Kill and reap it so no zombie or orphan is left.
    fn drop(&mut self) {
        if !self.kill_and_reap() {
            return;
        }
        Python::try_attach(|py| {
            // Keeps Popen.__del__ from warning a second time and from queueing a reap.
            self.set_popen_returncode(py);
            crate::compat::resource_warning(py, self.pid);
        });
    }
}
