//! `StreamWriter` over the parent end of the child's stdin pipe: asyncio's
//! `_UnixWritePipeTransport` + `FlowControlMixin` + `StreamWriter`, in one object.
//!
//! `write()` goes straight to the pipe when nothing is queued; what the pipe does not take is
//! queued (a `bytes` argument is kept by reference, not copied) and flushed from an
//! `add_writer` callback. The write end is also polled for readability, which is how the loop
//! learns that the child closed its end. Losing the pipe is reported to `drain()` and
//! `wait_closed()` two loop iterations later, as asyncio's transport + protocol pair does.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::bridge::{looputil, waiter, Coro, Op, Poll};
use crate::errors;
use crate::sys;

const HIGH_WATER: usize = 64 * 1024;
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

enum Chunk {
    Shared(Py<PyBytes>, usize),
    Owned(Vec<u8>, usize),
}

impl Chunk {
    fn remaining<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Chunk::Shared(b, off) => &b.as_bytes(py)[*off..],
            Chunk::Owned(v, off) => &v[*off..],
        }
    }
    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Shared(_, off) | Chunk::Owned(_, off) => *off += n,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lost {
    No,
    /// The pipe is closed; the protocol hears of it after one more loop turn.
    Pending,
    Yes,
}

#[pyclass(module = "rsubprocess._core", subclass, weakref)]
pub struct StreamWriter {
    loop_: Py<PyAny>,
    fd: Option<OwnedFd>,
    raw_fd: i32,
    chunks: VecDeque<Chunk>,
    size: usize,
    closing: bool,
    conn_lost_writes: u32,
    writer_registered: bool,
    reader_registered: bool,
    paused: bool,
    high: usize,
    low: usize,
    lost: Lost,
    lost_exc: Option<Py<PyAny>>,
    drain_waiters: Vec<Py<PyAny>>,
    close_waiters: Vec<Py<PyAny>>,
    /// Futures resolved with `None` on any loss, whatever the error (for `communicate()`,
    /// which ignores stdin errors).
    pub(crate) notify: Vec<Py<PyAny>>,
}

impl StreamWriter {
    fn with_loop(loop_: Py<PyAny>) -> Self {
        StreamWriter {
            loop_,
            fd: None,
            raw_fd: -1,
            chunks: VecDeque::new(),
            size: 0,
            closing: false,
            conn_lost_writes: 0,
            writer_registered: false,
            reader_registered: false,
            paused: false,
            high: HIGH_WATER,
            low: HIGH_WATER / 4,
            lost: Lost::No,
            lost_exc: None,
            drain_waiters: Vec::new(),
            close_waiters: Vec::new(),
            notify: Vec::new(),
        }
    }

    /// A writer owning the parent end of the child's stdin pipe, of the Python-facing class
    /// registered by `rsubprocess.streams`.
    pub fn new_pipe(py: Python<'_>, loop_: Py<PyAny>, fd: OwnedFd) -> PyResult<Py<Self>> {
        sys::set_nonblocking(&fd).map_err(|e| errors::os_error(&e))?;
        let raw_fd = fd.as_raw_fd();
        let obj: Py<Self> = match super::WRITER_TYPE.get(py) {
            Some(cls) => cls.bind(py).call1((loop_,))?.cast_into::<Self>()?.unbind(),
            None => Py::new(py, StreamWriter::with_loop(loop_))?,
        };
        let cb = obj.getattr(py, intern!(py, "_on_peer_closed"))?;
        let mut w = obj.borrow_mut(py);
        w.fd = Some(fd);
        w.raw_fd = raw_fd;
        w.closing = false;
        looputil::add_reader(py, &w.loop_, raw_fd, cb)?;
        w.reader_registered = true;
        drop(w);
        Ok(obj)
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost == Lost::Yes
    }

    /// asyncio's `_close(exc)`: stop everything, close the fd, report the loss later.
    fn close_with(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let mut w = slf.borrow_mut();
        w.closing = true;
        w.chunks.clear();
        w.size = 0;
        w.release_fd(py)?;
        if w.lost == Lost::No {
            w.lost = Lost::Pending;
            w.lost_exc = exc;
            let loop_ = w.loop_.clone_ref(py);
            drop(w);
            if !looputil::is_closed(py, &loop_) {
                let cb = slf.getattr(intern!(py, "_connection_lost_1"))?.unbind();
                looputil::call_soon(py, &loop_, cb)?;
            } else {
                slf.borrow_mut().connection_lost(py)?;
            }
        }
        Ok(())
    }

    fn release_fd(&mut self, py: Python<'_>) -> PyResult<()> {
        let open = !looputil::is_closed(py, &self.loop_);
        if std::mem::take(&mut self.writer_registered) && open {
            looputil::remove_writer(py, &self.loop_, self.raw_fd)?;
        }
        if std::mem::take(&mut self.reader_registered) && open {
            looputil::remove_reader(py, &self.loop_, self.raw_fd)?;
        }
        self.fd = None;
        Ok(())
    }

    /// The protocol's `connection_lost(exc)`: wake drainers and close waiters.
    fn connection_lost(&mut self, py: Python<'_>) -> PyResult<()> {
        self.lost = Lost::Yes;
        if self.paused {
            for w in std::mem::take(&mut self.drain_waiters) {
                match &self.lost_exc {
                    None => waiter::resolve(py, &w, py.None(), false)?,
                    Some(e) => waiter::reject(py, &w, e, false)?,
                }
            }
        }
        for w in std::mem::take(&mut self.close_waiters) {
            match &self.lost_exc {
                None => waiter::resolve(py, &w, py.None(), false)?,
                Some(e) => waiter::reject(py, &w, e, false)?,
            }
        }
        for w in std::mem::take(&mut self.notify) {
            waiter::resolve(py, &w, py.None(), false)?;
        }
        Ok(())
    }

    fn maybe_pause(&mut self) {
        if !self.paused && self.size > self.high {
            self.paused = true;
        }
    }

    fn maybe_resume(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.paused && self.size <= self.low {
            self.paused = false;
            for w in std::mem::take(&mut self.drain_waiters) {
                waiter::resolve(py, &w, py.None(), false)?;
            }
        }
        Ok(())
    }

    /// `transport.write(data)`.
    pub(crate) fn write_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (bytes, shared) = if let Ok(b) = data.cast::<PyBytes>() {
            (b.clone(), true)
        } else if data.cast::<PyByteArray>().is_ok() || data.cast::<PyMemoryView>().is_ok() {
            let b = py
                .import(intern!(py, "builtins"))?
                .getattr(intern!(py, "bytes"))?
                .call1((data,))?;
            (b.cast_into::<PyBytes>()?, false)
        } else {
            return Err(errors::not_bytes(data));
        };
        let buf = bytes.as_bytes();
        if buf.is_empty() {
            return Ok(());
        }
        let mut w = slf.borrow_mut();
        if w.closing || w.lost != Lost::No || w.fd.is_none() {
            if w.conn_lost_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES {
                drop(w);
                crate::compat::log_warning(
                    py,
                    "pipe closed by peer or os.write(pipe, data) raised exception.",
                )?;
                w = slf.borrow_mut();
            }
            w.conn_lost_writes += 1;
            return Ok(());
        }
        let mut start = 0;
        if w.chunks.is_empty() {
            match sys::write(w.fd.as_ref().expect("checked"), buf) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => start = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    w.conn_lost_writes += 1;
                    drop(w);
                    let exc = errors::os_error(&e).into_value(py).into_any();
                    return StreamWriter::close_with(slf, Some(exc));
                }
            }
            let cb = slf.getattr(intern!(py, "_on_writable"))?.unbind();
            looputil::add_writer(py, &w.loop_, w.raw_fd, cb)?;
            w.writer_registered = true;
        }
        let total = buf.len();
        let chunk = if shared {
            Chunk::Shared(bytes.clone().unbind(), start)
        } else {
            Chunk::Owned(buf[start..].to_vec(), 0)
        };
        w.size += total - start;
        w.chunks.push_back(chunk);
        w.maybe_pause();
        Ok(())
    }

    /// `transport.write_eof()` / `close()`: flush what is queued, then close.
    pub(crate) fn write_eof_impl(slf: &Bound<'_, Self>) -> PyResult<()> {
        let mut w = slf.borrow_mut();
        if w.closing || w.fd.is_none() {
            return Ok(());
        }
        w.closing = true;
        if w.chunks.is_empty() {
            drop(w);
            return StreamWriter::close_with(slf, None);
        }
        // Queued bytes are flushed first; `_on_writable` closes once the queue is empty.
        Ok(())
    }
}

#[pymethods]
impl StreamWriter {
    /// Only rsubprocess creates writers (around a pipe it owns); constructed this way the
    /// writer is bound to `loop` and has no pipe, as if already closed.
    #[new]
    #[pyo3(signature = (r#loop))]
    fn py_new(r#loop: Py<PyAny>) -> Self {
        let mut w = StreamWriter::with_loop(r#loop);
        w.closing = true;
        w
    }
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        StreamWriter::write_data(slf, data)
    }

    fn writelines(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (data,))?;
        StreamWriter::write_data(slf, &joined)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        StreamWriter::write_eof_impl(slf)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        StreamWriter::write_eof_impl(slf)
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    /// The transport's `abort()`: drop what is queued and close now.
    fn _abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        StreamWriter::close_with(slf, None)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    #[getter]
    fn _pipe_fd(&self) -> Option<i32> {
        self.fd.as_ref().map(|_| self.raw_fd)
    }

    /// Cancel safety: cancelling only stops waiting; queued bytes are still written.
    fn drain(slf: &Bound<'_, Self>) -> Coro {
        Coro::new(DrainOp {
            w: slf.clone().unbind(),
            state: DrainState::Start,
            fut: None,
        })
    }

    /// Cancel safety: cancelling only stops waiting.
    fn wait_closed(slf: &Bound<'_, Self>) -> Coro {
        Coro::new(WaitClosedOp {
            w: slf.clone().unbind(),
            fut: None,
        })
    }

    #[pyo3(signature = (name, default = None))]
    fn get_extra_info(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Py<PyAny> {
        let _ = name;
        default.unwrap_or_else(|| py.None())
    }

    fn get_write_buffer_size(&self) -> usize {
        self.size
    }

    #[pyo3(signature = (high = None, low = None))]
    fn set_write_buffer_limits(
        &mut self,
        py: Python<'_>,
        high: Option<usize>,
        low: Option<usize>,
    ) -> PyResult<()> {
        let high = high.unwrap_or(match low {
            None => HIGH_WATER,
            Some(l) => 4 * l,
        });
        let low = low.unwrap_or(high / 4);
        if high < low {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "high ({high:?}) must be >= low ({low:?}) must be >= 0"
            )));
        }
        self.high = high;
        self.low = low;
        self.maybe_pause();
        self.maybe_resume(py)
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    /// Pipe writable: flush the queue.
    fn _on_writable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut w = slf.borrow_mut();
        let mut error = None;
        let this = &mut *w;
        while let (Some(chunk), Some(fd)) = (this.chunks.front_mut(), this.fd.as_ref()) {
            let data = chunk.remaining(py);
            let len = data.len();
            match sys::write(fd, data) {
                Ok(n) => {
                    this.size -= n;
                    if n < len {
                        chunk.advance(n);
                        break;
                    }
                    this.chunks.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = error {
            w.conn_lost_writes += 1;
            drop(w);
            let exc = errors::os_error(&e).into_value(py).into_any();
            return StreamWriter::close_with(slf, Some(exc));
        }
        w.maybe_resume(py)?;
        if w.chunks.is_empty() {
            if std::mem::take(&mut w.writer_registered) {
                looputil::remove_writer(py, &w.loop_, w.raw_fd)?;
            }
            if w.closing {
                drop(w);
                return StreamWriter::close_with(slf, None);
            }
        }
        Ok(())
    }

    /// The write end became readable: the child closed the read end.
    fn _on_peer_closed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pending = !slf.borrow().chunks.is_empty();
        let exc = if pending {
            Some(
                pyo3::exceptions::PyBrokenPipeError::new_err(())
                    .into_value(py)
                    .into_any(),
            )
        } else {
            None
        };
        StreamWriter::close_with(slf, exc)
    }

    fn _connection_lost_1(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let loop_ = slf.borrow().loop_.clone_ref(py);
        let cb = slf.getattr(intern!(py, "_connection_lost_2"))?.unbind();
        looputil::call_soon(py, &loop_, cb)
    }

    fn _connection_lost_2(&mut self, py: Python<'_>) -> PyResult<()> {
        self.connection_lost(py)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let w = slf.borrow();
        let state = if w.fd.is_none() {
            "closed".to_string()
        } else if w.closing {
            "closing".to_string()
        } else if w.writer_registered {
            "polling".to_string()
        } else {
            "idle".to_string()
        };
        Ok(format!(
            "<{} transport=<pipe fd={} {state} bufsize={}>>",
            slf.get_type().name()?,
            w.raw_fd,
            w.size
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        if let Some(e) = &self.lost_exc {
            visit.call(e)?;
        }
        for c in &self.chunks {
            if let Chunk::Shared(b, _) = c {
                visit.call(b)?;
            }
        }
        for f in self
            .drain_waiters
            .iter()
            .chain(&self.close_waiters)
            .chain(&self.notify)
        {
            visit.call(f)?;
        }
        Ok(())
    }
}

enum DrainState {
    Start,
    Check,
}

struct DrainOp {
    w: Py<StreamWriter>,
    state: DrainState,
    fut: Option<Py<PyAny>>,
}

impl Op for DrainOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        if let Some(f) = self.fut.take() {
            // Woken: the waiter was resolved (an exception was raised by the Coro already).
            self.w.borrow_mut(py).drain_waiters.retain(|w| !w.is(&f));
            return Ok(Poll::Ready(py.None()));
        }
        let mut w = self.w.borrow_mut(py);
        if let DrainState::Start = self.state {
            self.state = DrainState::Check;
            if w.closing {
                // asyncio: `await sleep(0)` so connection_lost() can run first.
                return Ok(Poll::Yield);
            }
        }
        if w.lost == Lost::Yes {
            return Err(errors::connection_lost());
        }
        if !w.paused {
            return Ok(Poll::Ready(py.None()));
        }
        let fut = looputil::create_future(py, &w.loop_)?;
        w.drain_waiters.push(fut.clone_ref(py));
        self.fut = Some(fut.clone_ref(py));
        Ok(Poll::Wait(fut))
    }

    fn abort(&mut self, py: Python<'_>) {
        if let Some(f) = self.fut.take() {
            if let Ok(mut w) = self.w.try_borrow_mut(py) {
                w.drain_waiters.retain(|w| !w.is(&f));
            }
        }
    }

    fn name(&self) -> &'static str {
        "StreamWriter.drain"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.w)
    }
}

struct WaitClosedOp {
    w: Py<StreamWriter>,
    fut: Option<Py<PyAny>>,
}

impl Op for WaitClosedOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        if self.fut.take().is_some() {
            return Ok(Poll::Ready(py.None()));
        }
        let mut w = self.w.borrow_mut(py);
        if w.lost == Lost::Yes {
            return match &w.lost_exc {
                None => Ok(Poll::Ready(py.None())),
                Some(e) => Err(PyErr::from_value(e.bind(py).clone())),
            };
        }
        let fut = looputil::create_future(py, &w.loop_)?;
        w.close_waiters.push(fut.clone_ref(py));
        self.fut = Some(fut.clone_ref(py));
        Ok(Poll::Wait(fut))
    }

    fn abort(&mut self, py: Python<'_>) {
        if let Some(f) = self.fut.take() {
            if let Ok(mut w) = self.w.try_borrow_mut(py) {
                w.close_waiters.retain(|w| !w.is(&f));
            }
        }
    }

    fn name(&self) -> &'static str {
        "StreamWriter.wait_closed"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.w)
    }
}
