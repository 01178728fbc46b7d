//! One epoll instance per event loop for the fds only rsubprocess reads -- each spawn's error
//! pipe and each child's pidfd -- registered with the loop once, with `add_reader`.
//!
//! asyncio's `add_reader` + `remove_reader` cost ~10 + 4 us of Python per fd (a `Handle`, a
//! `SelectorKey`, the `_transports` check), and a spawn + wait registers up to three fds (the
//! error pipe and, while the child holds spawn slots, its pidfd; then the pidfd for the exit:
//! 2.8 per spawn at 1600 at once, issue 6's b). `epoll_ctl` on an instance of our own costs ~2.
//! The loop's selector sees our instance readable whenever one of our fds is, and calls
//! `Reactor._dispatch`, which runs the callbacks of every ready fd in one go: one loop
//! callback for a batch of exits instead of one each.
//!
//! Semantics are `add_reader`'s: level-triggered, one callback per fd (a second `watch`
//! replaces it), the callback runs on the loop's thread from the loop's own callback, so an
//! exception it raises reaches the loop's exception handler (as `Reactor._dispatch()`'s); the
//! other ready fds are still ready on the next turn. Watching on a closed loop raises what
//! `add_reader` raises.
//!
//! Lifetime: the loop's selector holds the reactor (through the `_dispatch` callback) and
//! every subscriber holds it; it holds the loop. Closing the loop drops the selector's
//! reference, so once no subscriber is left the instance is closed: nothing outlives the loop
//! but what still watches. A loop dropped unclosed is freed by the cyclic GC, which the
//! reactor supports (`__traverse__`/`__clear__`).
//!
//! `os.fork()`: the child shares the instance with the parent (one open file). The child
//! never changes it (each call checks the owner pid) and makes its own for any loop it uses.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyWeakrefMethods, PyWeakrefReference};
use pyo3::{intern, PyTraverseError, PyVisit};

use super::looputil;
use crate::errors;
use crate::sys;

#[pyclass(module = "rsubprocess._core", weakref)]
pub struct Reactor {
    loop_: Option<Py<PyAny>>,
    ep: OwnedFd,
    /// fd -> (token, callback). The token is the fd in its low half and a generation in its
    /// high half, so an event for an fd that was removed, and whose number was given to a new
    /// fd within one batch, is not delivered to the new one.
    subs: HashMap<i32, (u64, Py<PyAny>)>,
    generation: u32,
    owner_pid: u32,
}

/// The reactor of each loop (by address; a live reactor holds its loop, so the address of a
/// loop with a live reactor is not reused).
static REACTORS: Mutex<Vec<(usize, Py<PyWeakrefReference>)>> = Mutex::new(Vec::new());

impl Reactor {
    fn ours(&self) -> bool {
        self.owner_pid == std::process::id()
    }

    /// The reactor of `loop_`, made (and registered with the loop) on first use. Raises what
    /// `loop.add_reader` raises on a closed loop.
    pub fn of(py: Python<'_>, loop_: &Py<PyAny>) -> PyResult<Py<Reactor>> {
        let key = loop_.as_ptr() as usize;
        let found = {
            let map = REACTORS.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, w)| w.bind(py).upgrade())
        };
        if let Some(r) = found {
            if let Ok(r) = r.cast_into::<Reactor>() {
                let usable = {
                    let b = r.borrow();
                    b.ours() && b.loop_.as_ref().is_some_and(|l| l.is(loop_))
                };
                if usable {
                    if looputil::is_closed(py, loop_) {
                        return Err(pyo3::exceptions::PyRuntimeError::new_err(
                            "Event loop is closed",
                        ));
                    }
                    return Ok(r.unbind());
                }
            }
        }
        let ep = sys::epoll_create().map_err(|e| errors::os_error(&e))?;
        let raw = ep.as_raw_fd();
        let r = Py::new(
            py,
            Reactor {
                loop_: Some(loop_.clone_ref(py)),
                ep,
                subs: HashMap::new(),
                generation: 0,
                owner_pid: std::process::id(),
            },
        )?;
        let cb = r.getattr(py, intern!(py, "_dispatch"))?;
        looputil::add_reader(py, loop_, raw, cb)?;
        let weak = PyWeakrefReference::new(r.bind(py).as_any())?.unbind();
        let mut map = REACTORS.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(k, w)| *k != key && w.bind(py).upgrade().is_some());
        map.push((key, weak));
        Ok(r)
    }

    /// Calls `cb()` from the loop whenever `fd` is readable, until `unwatch`; the reactor to
    /// call `unwatch` on.
    pub fn watch(
        py: Python<'_>,
        loop_: &Py<PyAny>,
        fd: i32,
        cb: Py<PyAny>,
    ) -> PyResult<Py<Reactor>> {
        let r = Reactor::of(py, loop_)?;
        r.borrow_mut(py).add(fd, cb)?;
        Ok(r)
    }

    /// As `watch`, on a reactor the caller already holds (no second lookup).
    pub fn add(&mut self, fd: i32, cb: Py<PyAny>) -> PyResult<()> {
        if let Some(entry) = self.subs.get_mut(&fd) {
            entry.1 = cb;
            return Ok(());
        }
        self.generation = self.generation.wrapping_add(1);
        let token = (u64::from(self.generation) << 32) | u64::from(fd as u32);
        sys::epoll_add_in(&self.ep, fd, token).map_err(|e| errors::os_error(&e))?;
        self.subs.insert(fd, (token, cb));
        Ok(())
    }

    /// Stops watching `fd` (before it is closed). A no-op for an fd not watched.
    pub fn unwatch(&mut self, fd: i32) {
        if self.subs.remove(&fd).is_some() && self.ours() {
            let _ = sys::epoll_del(&self.ep, fd);
        }
    }
}

#[pymethods]
impl Reactor {
    /// The loop's reader callback for our instance: runs the callback of every ready fd.
    fn _dispatch(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut ready = Vec::new();
        {
            let r = slf.borrow();
            if !r.ours() {
                return Ok(());
            }
            sys::epoll_ready(&r.ep, &mut ready).map_err(|e| errors::os_error(&e))?;
        }
        for token in ready {
            let fd = token as u32 as i32;
            // Looked up afresh for each: an earlier callback may have removed this one.
            let cb = match slf.borrow().subs.get(&fd) {
                Some((t, cb)) if *t == token => cb.clone_ref(py),
                _ => continue,
            };
            cb.call0(py)?;
        }
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(l) = &self.loop_ {
            visit.call(l)?;
        }
        for (_, cb) in self.subs.values() {
            visit.call(cb)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.loop_ = None;
        self.subs.clear();
    }
}
