//! `StreamReader`: asyncio's reader contract over a Rust buffer.
//!
//! Two sources feed it: a pipe fd it owns and polls with `loop.add_reader` (what `proc.stdout`
//! and `proc.stderr` are), or `feed_data()`/`feed_eof()` called from Python (the protocol side,
//! as with asyncio's). Flow control is asyncio's: stop polling the pipe above `2 * limit`
//! buffered bytes, resume at `limit` or below, or as soon as a reader has to wait.

use std::os::fd::{AsRawFd, OwnedFd};

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyInt};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::bridge::waiter;
use crate::bridge::{looputil, Coro};
use crate::errors;
use crate::streams::args::{clamped_int, reader_limit, Arg, ArgOp};
use crate::streams::buffer::ByteBuf;
use crate::streams::reader_ops::{ReadExactlyOp, ReadOp, ReadUntilOp, Separators};
use crate::sys;

pub const DEFAULT_LIMIT: usize = 1 << 16;
/// Bytes asked for per `read(2)` while polling the pipe.
const READ_CHUNK: usize = 256 * 1024;
/// Upper bound on bytes taken from the pipe in one loop callback, so one busy pipe cannot
/// starve the rest of the loop.
const MAX_PER_CALLBACK: usize = 4 * 1024 * 1024;
/// Pipe buffer asked for during bulk reads (the default unprivileged maximum).
const BULK_PIPE_SIZE: i32 = 1 << 20;
const BULK_INITIAL: usize = 64 * 1024;
/// Where the L2 cache's size cannot be read.
const DEFAULT_L2: usize = 1 << 20;

/// How far ahead of a bulk read's data to fault pages in (`sys::BytesBuilder`): no more than
/// the pipe holds (one read never returns more), and a quarter of the L2 cache, so that the
/// pages zeroed ahead are still cached when the copy reaches them. Measured on a 1 MiB-L2 EPYC,
/// 256 MiB, 8 interleaved runs each (MiB/s, medians; none = no populating):
/// `head` 980 none, 1606 / 1626 / 1634 at 128 / 256 / 512 KiB; `cat` 901 none,
/// 942 / 1043 / 900, and 12 % below none at 1 MiB (= L2).
fn populate_window(pipe_capacity: usize) -> usize {
    static L2: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let l2 = *L2.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size")
            .ok()
            .and_then(|s| super::buffer::parse_cache_size(&s))
            .unwrap_or(DEFAULT_L2)
    });
    pipe_capacity.min(l2 / 4)
}

#[pyclass(module = "rsubprocess._core", subclass, weakref)]
pub struct StreamReader {
    pub(crate) loop_: Py<PyAny>,
    pub(crate) limit: usize,
    pub(crate) buf: ByteBuf,
    pub(crate) eof: bool,
    pub(crate) exception: Option<Py<PyAny>>,
    pub(crate) waiter: Option<Py<PyAny>>,
    pub(crate) paused: bool,
    /// Bulk consumers (`read(-1)`, `communicate()`) in progress: they take everything at EOF,
    /// so pausing the pipe would only add wake-ups.
    pub(crate) bulk: u32,
    /// While a bulk consumer runs on a pipe, bytes go straight into the `bytes` it returns.
    bulk_out: Option<sys::BytesBuilder>,
    pipe: Option<OwnedFd>,
    pipe_fd: i32,
    polling: bool,
    transport: Option<Py<PyAny>>,
    /// The coroutine `readline()`/`__anext__` hand out, reused once dropped (`Coro::recycled`).
    spare: Option<Py<Coro>>,
}

impl StreamReader {
    pub fn with_loop(loop_: Py<PyAny>, limit: usize) -> Self {
        StreamReader {
            loop_,
            limit,
            buf: ByteBuf::new(),
            eof: false,
            exception: None,
            waiter: None,
            paused: false,
            bulk: 0,
            bulk_out: None,
            pipe: None,
            pipe_fd: -1,
            polling: false,
            transport: None,
            spare: None,
        }
    }

    /// A reader that owns and polls the parent end of a pipe, of the Python-facing class
    /// registered by `rsubprocess.streams` (a subclass of this and asyncio's StreamReader).
    pub fn new_pipe(
        py: Python<'_>,
        loop_: Py<PyAny>,
        limit: usize,
        fd: OwnedFd,
    ) -> PyResult<Py<Self>> {
        sys::set_nonblocking(&fd).map_err(|e| errors::os_error(&e))?;
        let obj: Py<Self> = match super::READER_TYPE.get(py) {
            Some(cls) => cls
                .bind(py)
                .call1((limit, loop_))?
                .cast_into::<Self>()?
                .unbind(),
            None => Py::new(py, StreamReader::with_loop(loop_, limit))?,
        };
        {
            let mut r = obj.borrow_mut(py);
            r.pipe_fd = fd.as_raw_fd();
            r.pipe = Some(fd);
        }
        StreamReader::start_polling(&obj, py)?;
        Ok(obj)
    }

    fn start_polling(slf: &Py<Self>, py: Python<'_>) -> PyResult<()> {
        let cb = slf.getattr(py, intern!(py, "_on_readable"))?;
        let mut r = slf.borrow_mut(py);
        if r.polling || r.pipe.is_none() {
            return Ok(());
        }
        looputil::add_reader(py, &r.loop_, r.pipe_fd, cb)?;
        r.polling = true;
        Ok(())
    }

    fn stop_polling(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.polling {
            self.polling = false;
            if !looputil::is_closed(py, &self.loop_) {
                looputil::remove_reader(py, &self.loop_, self.pipe_fd)?;
            }
        }
        Ok(())
    }

    /// Stops polling and closes the pipe (the transport's `close()`).
    pub(crate) fn close_pipe(&mut self, py: Python<'_>) -> PyResult<()> {
        let r = self.stop_polling(py);
        self.pipe = None;
        r
    }

    /// `op`'s coroutine, reusing the last one if it is free (`Coro::recycled`). The slot is
    /// taken out first: finishing an abandoned coroutine may call back into this reader.
    fn per_line_coro(slf: &Bound<'_, Self>, op: ReadUntilOp) -> PyResult<Py<Coro>> {
        let mut slot = slf.borrow_mut().spare.take();
        let coro = Coro::recycled(slf.py(), &mut slot, op);
        slf.borrow_mut().spare = slot;
        coro
    }

    /// Bytes buffered and not yet consumed, wherever they are held.
    pub(crate) fn unread_len(&self) -> usize {
        self.buf.len() + self.bulk_out.as_ref().map_or(0, |b| b.len())
    }

    /// A bulk consumer (`read(-1)`, `communicate()`) starts: no more flow control, and on a
    /// pipe the data is read straight into the result (grown pipe buffer, fewer wake-ups).
    pub(crate) fn enter_bulk(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut r = slf.borrow_mut();
            r.bulk += 1;
            if r.bulk == 1 && r.bulk_out.is_none() && !r.eof {
                if let Some(fd) = &r.pipe {
                    let capacity = sys::grow_pipe(fd, BULK_PIPE_SIZE);
                    let mut out =
                        sys::BytesBuilder::with_capacity(py, r.buf.len().max(BULK_INITIAL))?;
                    out.set_populate_window(populate_window(capacity));
                    out.extend(py, r.buf.as_slice())?;
                    r.buf.clear();
                    r.bulk_out = Some(out);
                }
            }
        }
        StreamReader::resume(slf)
    }

    /// A bulk consumer ends (done or cancelled): whatever it did not take goes back to the
    /// ordinary buffer, so no byte is lost.
    pub(crate) fn leave_bulk(&mut self, py: Python<'_>) {
        self.bulk = self.bulk.saturating_sub(1);
        if self.bulk == 0 {
            if let Some(out) = self.bulk_out.take() {
                let mut rest = ByteBuf::new();
                rest.extend(out.as_slice(py));
                rest.extend(self.buf.as_slice());
                self.buf = rest;
            }
        }
    }

    /// Wakes the reader's waiter through the loop (`call_soon`), as a Future would: for
    /// callers that may be running inside a task (`feed_data()`, `feed_eof()`).
    pub(crate) fn wake(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(w) = self.waiter.take() {
            waiter::resolve(py, &w, py.None(), false)?;
        }
        Ok(())
    }

    pub(crate) fn pause(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.paused {
            return Ok(());
        }
        if self.pipe.is_some() {
            self.stop_polling(py)?;
            self.paused = true;
        } else if let Some(t) = &self.transport {
            match t.call_method0(py, intern!(py, "pause_reading")) {
                Ok(_) => self.paused = true,
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyNotImplementedError>(py) => {
                    self.transport = None;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(crate) fn resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let transport = {
            let mut r = slf.borrow_mut();
            if !r.paused {
                return Ok(());
            }
            r.paused = false;
            if r.pipe.is_none() {
                r.transport.as_ref().map(|t| t.clone_ref(py))
            } else {
                None
            }
        };
        match transport {
            Some(t) => {
                t.call_method0(py, intern!(py, "resume_reading"))?;
            }
            None => StreamReader::start_polling(&slf.clone().unbind(), py)?,
        }
        Ok(())
    }

    /// asyncio's `_maybe_resume_transport`, after bytes were consumed.
    pub(crate) fn maybe_resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        let should = {
            let r = slf.borrow();
            r.paused && r.buf.len() <= r.limit
        };
        if should {
            StreamReader::resume(slf)?;
        }
        Ok(())
    }

    /// asyncio's `_wait_for_data`: register `fut` as the one waiter, resuming a paused pipe.
    pub(crate) fn wait_for_data(
        slf: &Bound<'_, Self>,
        fut: &Py<PyAny>,
        func: &str,
    ) -> PyResult<()> {
        let spare;
        {
            let mut r = slf.borrow_mut();
            match &r.waiter {
                Some(w) if !w.is(fut) => return Err(errors::already_waiting(func)),
                _ => {}
            }
            r.waiter = Some(fut.clone_ref(slf.py()));
            // A coroutine that waits must be owned by its awaiter alone, so that dropping it
            // mid-wait closes it (and unregisters this waiter), as with an `async def`. The
            // spare (possibly the one suspending now) is only held while idle or finished.
            spare = r.spare.take();
        }
        // Not dropped under our borrow: its refcount cannot reach 0 here (its caller holds
        // it, or it is idle and has nothing to undo), but keep re-entrancy impossible anyway.
        drop(spare);
        // Waiting while paused would deadlock (readexactly(n) with n > limit).
        StreamReader::resume(slf)
    }

    pub(crate) fn clear_waiter(&mut self, fut: &Py<PyAny>) {
        if self.waiter.as_ref().is_some_and(|w| w.is(fut)) {
            self.waiter = None;
        }
    }

    /// Removes and returns the first `n` buffered bytes.
    pub(crate) fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf.as_slice()[..n]);
        self.buf.consume(n);
        out
    }

    /// Removes everything buffered as one `bytes`, releasing the buffer's memory.
    pub(crate) fn take_all<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(mut out) = self.bulk_out.take() {
            if !self.buf.is_empty() {
                out.extend(py, self.buf.as_slice())?;
                self.buf.clear();
            }
            if self.bulk > 0 {
                // Still in bulk mode (e.g. two bulk readers): keep reading into a fresh one.
                let mut fresh = sys::BytesBuilder::with_capacity(py, BULK_INITIAL)?;
                fresh.set_populate_window(out.populate_window());
                self.bulk_out = Some(fresh);
            }
            return out.finish(py);
        }
        let data = self.buf.take_all();
        Ok(PyBytes::new(py, &data))
    }

    pub(crate) fn exception_err(&self, py: Python<'_>) -> Option<PyErr> {
        self.exception
            .as_ref()
            .map(|e| PyErr::from_value(e.bind(py).clone()))
    }

    fn do_feed_eof(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.mark_eof(py)? {
            Some(w) => waiter::resolve(py, &w, py.None(), false),
            None => Ok(()),
        }
    }

    /// Marks EOF and closes the pipe; returns the waiter to wake.
    fn mark_eof(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.eof = true;
        self.close_pipe(py)?;
        Ok(self.waiter.take())
    }

    /// Stores the exception; returns the waiter to fail with it (already done ones are left
    /// alone by `waiter::reject`).
    fn store_exception(&mut self, py: Python<'_>, exc: &Py<PyAny>) -> Option<Py<PyAny>> {
        self.exception = Some(exc.clone_ref(py));
        self.waiter.take()
    }
}

#[pymethods]
impl StreamReader {
    #[new]
    #[pyo3(signature = (limit = Arg::Default, r#loop = None))]
    fn py_new(py: Python<'_>, limit: Arg, r#loop: Option<Py<PyAny>>) -> PyResult<Self> {
        let limit = match limit {
            Arg::Default => DEFAULT_LIMIT,
            Arg::Given(l) => reader_limit(l.bind(py))?,
        };
        let loop_ = match r#loop {
            Some(l) if !l.is_none(py) => l,
            _ => crate::compat::reader_default_loop(py)?,
        };
        Ok(StreamReader::with_loop(loop_, limit))
    }

    fn exception(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.exception.as_ref().map(|e| e.clone_ref(py))
    }

    fn set_exception(&mut self, py: Python<'_>, exc: Py<PyAny>) -> PyResult<()> {
        match self.store_exception(py, &exc) {
            Some(w) => waiter::reject(py, &w, &exc, false),
            None => Ok(()),
        }
    }

    fn set_transport(&mut self, transport: Py<PyAny>) -> PyResult<()> {
        if self.transport.is_some() {
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                "Transport already set",
            ));
        }
        self.transport = Some(transport);
        Ok(())
    }

    fn feed_eof(&mut self, py: Python<'_>) -> PyResult<()> {
        self.do_feed_eof(py)
    }

    fn at_eof(&self) -> bool {
        self.eof && self.unread_len() == 0
    }

    fn feed_data(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let mut r = slf.borrow_mut();
        if r.eof {
            return Err(pyo3::exceptions::PyAssertionError::new_err(
                "feed_data after feed_eof",
            ));
        }
        if let Ok(b) = data.cast::<PyBytes>() {
            r.buf.extend(b.as_bytes());
        } else {
            let b = py
                .import(intern!(py, "builtins"))?
                .getattr(intern!(py, "bytes"))?
                .call1((data,))?;
            r.buf.extend(b.cast::<PyBytes>()?.as_bytes());
        }
        if r.buf.is_empty() {
            return Ok(());
        }
        r.wake(py)?;
        if r.transport.is_some() && !r.paused && r.buf.len() > 2 * r.limit {
            r.pause(py)?;
        }
        Ok(())
    }

    /// The loop's readability callback for the pipe.
    fn _on_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let mut r = slf.borrow_mut();
        let mut total = 0usize;
        let mut got_eof = false;
        let mut error = None;
        loop {
            let this = &mut *r;
            let Some(fd) = this.pipe.as_ref() else { break };
            let res = match this.bulk_out.as_mut() {
                Some(out) => out.read_from(py, fd, READ_CHUNK)?,
                None => sys::read_into_spare(fd, this.buf.spare(READ_CHUNK)),
            };
            match res {
                Ok(0) => {
                    got_eof = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    if n < READ_CHUNK || total >= MAX_PER_CALLBACK {
                        break;
                    }
                    if r.bulk == 0 && r.buf.len() > 2 * r.limit {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        // The waiter is completed last, with no borrow held: its task is stepped right here
        // (see bridge::waiter) and may call back into this reader.
        let mut wake = None;
        if total > 0 {
            wake = r.waiter.take();
            if r.bulk == 0 && r.buf.len() > 2 * r.limit {
                r.pause(py)?;
            }
        }
        if let Some(e) = error {
            r.close_pipe(py)?;
            let exc = errors::os_error(&e).into_value(py).into_any();
            if e.raw_os_error() != Some(libc::EIO) {
                let ctx = pyo3::types::PyDict::new(py);
                ctx.set_item("message", "Fatal read error on pipe transport")?;
                ctx.set_item("exception", exc.clone_ref(py))?;
                let loop_ = r.loop_.clone_ref(py);
                drop(r);
                loop_.call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
                r = slf.borrow_mut();
            }
            let failed = r.store_exception(py, &exc);
            drop(r);
            // Bytes read before the error are still returned (the op re-checks afterwards),
            // as asyncio's data_received() then connection_lost(exc) would have it.
            match (wake, failed) {
                (Some(w), _) => waiter::resolve(py, &w, py.None(), true)?,
                (None, Some(w)) => waiter::reject(py, &w, &exc, true)?,
                (None, None) => {}
            }
            return Ok(());
        }
        if got_eof {
            let w = r.mark_eof(py)?;
            wake = wake.or(w);
        }
        drop(r);
        if let Some(w) = wake {
            waiter::resolve(py, &w, py.None(), true)?;
        }
        Ok(())
    }

    /// The pipe transport's `pause_reading()`.
    fn _pipe_pause(&mut self, py: Python<'_>) -> PyResult<()> {
        self.pause(py)
    }

    /// The pipe transport's `resume_reading()`.
    fn _pipe_resume(slf: &Bound<'_, Self>) -> PyResult<()> {
        StreamReader::resume(slf)
    }

    /// The pipe transport's `close()`: stop reading and close the fd. Unlike EOF this does
    /// not mark the reader at EOF, as with asyncio (the protocol hears `connection_lost`).
    fn _pipe_close(&mut self, py: Python<'_>) -> PyResult<()> {
        let had_pipe = self.pipe.is_some();
        self.close_pipe(py)?;
        if had_pipe && !self.eof {
            self.do_feed_eof(py)?;
        }
        Ok(())
    }

    #[getter]
    fn _pipe_fd(&self) -> Option<i32> {
        self.pipe.as_ref().map(|_| self.pipe_fd)
    }

    #[getter]
    fn _pipe_polling(&self) -> bool {
        self.polling
    }

    #[pyo3(signature = (n = Arg::Default))]
    fn read(slf: &Bound<'_, Self>, n: Arg) -> PyResult<Coro> {
        let r = slf.clone().unbind();
        Ok(match n {
            Arg::Default => Coro::new(ReadOp::new(r, -1)),
            Arg::Given(obj) => match clamped_int(obj.bind(slf.py()))? {
                Some(n) => Coro::new(ReadOp::new(r, n)),
                None => Coro::new(ArgOp::read(r, obj)),
            },
        })
    }

    fn readline(slf: &Bound<'_, Self>) -> PyResult<Py<Coro>> {
        Self::per_line_coro(slf, ReadUntilOp::readline(slf.clone().unbind(), false))
    }

    #[pyo3(signature = (separator = Arg::Default))]
    fn readuntil(slf: &Bound<'_, Self>, separator: Arg) -> Coro {
        let seps = match separator {
            Arg::Default => Separators::newline(),
            Arg::Given(s) => Separators::parse(s.bind(slf.py())),
        };
        Coro::new(ReadUntilOp::readuntil(slf.clone().unbind(), seps))
    }

    fn readexactly(slf: &Bound<'_, Self>, n: &Bound<'_, PyAny>) -> Coro {
        let r = slf.clone().unbind();
        match n
            .cast::<PyInt>()
            .ok()
            .and_then(|i| i.extract::<isize>().ok())
        {
            Some(n) => Coro::new(ReadExactlyOp::new(r, n)),
            // Huge or not an int: asyncio's comparisons, and the `n` it was given in errors.
            None => Coro::new(ArgOp::readexactly(r, n.clone().unbind())),
        }
    }

    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Lines without the 64 KiB limit (or with `max_line`), each with its `b"\n"` (the last
    /// may lack it). A line over `max_line` raises `LimitOverrunError` and stays buffered.
    #[pyo3(signature = (max_line = None))]
    fn lines(slf: &Bound<'_, Self>, max_line: Option<isize>) -> PyResult<LineIter> {
        if let Some(m) = max_line {
            if m <= 0 {
                return Err(errors::value_error(
                    "max_line must be a positive integer or None",
                ));
            }
        }
        Ok(LineIter {
            r: slf.clone().unbind(),
            max_line: max_line.map(|m| m as usize),
        })
    }

    fn __anext__(slf: &Bound<'_, Self>) -> PyResult<Py<Coro>> {
        Self::per_line_coro(slf, ReadUntilOp::readline(slf.clone().unbind(), true))
    }

    /// A copy of the unread bytes (CPython's tests inspect `stream._buffer`).
    #[getter]
    fn _buffer<'py>(&self, py: Python<'py>) -> Bound<'py, PyByteArray> {
        match &self.bulk_out {
            Some(out) => {
                let mut all = out.as_slice(py).to_vec();
                all.extend_from_slice(self.buf.as_slice());
                PyByteArray::new(py, &all)
            }
            None => PyByteArray::new(py, self.buf.as_slice()),
        }
    }

    #[getter]
    fn _limit(&self) -> usize {
        self.limit
    }

    #[getter]
    fn _eof(&self) -> bool {
        self.eof
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    #[getter]
    fn _waiter(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.waiter.as_ref().map(|w| w.clone_ref(py))
    }

    #[getter]
    fn _paused(&self) -> bool {
        self.paused
    }

    #[getter]
    fn _transport(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.transport.as_ref().map(|t| t.clone_ref(py))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let r = slf.borrow();
        let mut info = vec![slf.get_type().name()?.to_string()];
        if r.unread_len() > 0 {
            info.push(format!("{} bytes", r.unread_len()));
        }
        if r.eof {
            info.push("eof".into());
        }
        if r.limit != DEFAULT_LIMIT {
            info.push(format!("limit={}", r.limit));
        }
        if let Some(w) = &r.waiter {
            info.push(format!("waiter={}", w.bind(py).repr()?));
        }
        if let Some(e) = &r.exception {
            info.push(format!("exception={}", e.bind(py).repr()?));
        }
        if let Some(t) = &r.transport {
            info.push(format!("transport={}", t.bind(py).repr()?));
        } else if r.pipe.is_some() {
            let state = if r.polling { "polling" } else { "idle" };
            info.push(format!("transport=<pipe fd={} {state}>", r.pipe_fd));
        }
        if r.paused {
            info.push("paused".into());
        }
        Ok(format!("<{}>", info.join(" ")))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for o in [&self.exception, &self.waiter, &self.transport]
            .into_iter()
            .flatten()
        {
            visit.call(o)?;
        }
        if let Some(c) = &self.spare {
            visit.call(c)?;
        }
        visit.call(&self.loop_)
    }
}

/// The async iterator `StreamReader.lines()` returns.
#[pyclass(module = "rsubprocess._core")]
pub struct LineIter {
    r: Py<StreamReader>,
    max_line: Option<usize>,
}

#[pymethods]
impl LineIter {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Cancel safety: nothing is consumed until a line is returned.
    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<Coro>> {
        let op = ReadUntilOp::lines(self.r.clone_ref(py), self.max_line);
        StreamReader::per_line_coro(self.r.bind(py), op)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.r)
    }
}
