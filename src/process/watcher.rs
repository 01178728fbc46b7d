//! The fallback exit watch, for kernels where a pidfd cannot be polled: one thread per child,
//! alive only until that child exits. It never reaps (`waitid(WNOWAIT)`), so the loop thread
//! stays the only reaper; it hands over with `loop.call_soon_threadsafe(proc._on_exit)`.
//!
//! What it will not do: touch Python once the interpreter is exiting. A thread that wakes up
//! then (its child killed by the atexit hook, say) and enters Python while the interpreter
//! finalizes is ended by CPython from inside `take_gil` (`pthread_exit`), whose forced unwind
//! through Rust frames crashes the process. So the atexit hook calls [`join_watchers`]: from
//! then on no thread enters Python, and the ones already inside get the GIL to finish first.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;

use super::Process;
use crate::sys;

static EXITING: AtomicBool = AtomicBool::new(false);
/// The running watchers, with the pid of the process that started them (a forked child
/// inherits this list, not the threads).
static WATCHERS: Mutex<Vec<(u32, JoinHandle<()>)>> = Mutex::new(Vec::new());

/// Starts the thread that waits for `pid` (through its own `pidfd`, when there is one).
pub fn spawn(
    pid: i32,
    pidfd: Option<OwnedFd>,
    loop_: Py<PyAny>,
    obj: Py<Process>,
) -> std::io::Result<()> {
    let handle = std::thread::Builder::new()
        .name(format!("rsubprocess-wait-{pid}"))
        .spawn(move || {
            // Exited, or ECHILD (reaped by someone else): either way the loop finds out.
            let _ = sys::wait_exit_noreap(pidfd.as_ref(), pid);
            drop(pidfd);
            if EXITING.load(Ordering::Acquire) {
                return;
            }
            Python::try_attach(|py| {
                // No borrow of `obj` here: the loop thread may hold one across a call that
                // let this thread take the GIL.
                let scheduled = obj.getattr(py, intern!(py, "_on_exit")).and_then(|cb| {
                    loop_.call_method1(py, intern!(py, "call_soon_threadsafe"), (cb,))
                });
                if scheduled.is_err() {
                    // Loop closed: reap here so no zombie is left.
                    if let Ok(mut p) = obj.try_borrow_mut(py) {
                        p.reap_now(py);
                    }
                }
            });
        })?;
    let mut watchers = WATCHERS.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    watchers.retain(|(owner, h)| *owner == me && !h.is_finished());
    watchers.push((me, handle));
    Ok(())
}

/// Called by the atexit hook once it has killed and reaped the children still running:
/// keeps every watcher out of Python from now on and waits (without the GIL, so those
/// already inside can finish) up to `timeout` seconds for them to end.
#[pyfunction]
pub fn _join_watchers(py: Python<'_>, timeout: f64) {
    EXITING.store(true, Ordering::Release);
    let handles = std::mem::take(&mut *WATCHERS.lock().unwrap_or_else(|e| e.into_inner()));
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        let me = std::process::id();
        for (_, h) in handles.into_iter().filter(|(owner, _)| *owner == me) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    });
}
