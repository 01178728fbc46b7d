//! The state machines behind `read()`, `readline()`, `readuntil()`, `readexactly()` and
//! `__anext__`, each a line-for-line port of CPython's `StreamReader` method.
//!
//! Cancel safety (all of them): bytes are removed from the buffer only in the step that
//! returns them, so a cancelled read consumes nothing and the next read sees every byte.
//! `read(-1)` keeps what it has gathered in the reader's buffer too (asyncio loses it).

use pyo3::exceptions::{PyStopAsyncIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::bridge::{looputil, Op, Poll};
use crate::errors;
use crate::streams::buffer::{search, Search};
use crate::streams::reader::StreamReader;

fn new_waiter(r: &Bound<'_, StreamReader>, func: &str) -> PyResult<Py<PyAny>> {
    let py = r.py();
    let fut = looputil::create_future(py, &r.borrow().loop_)?;
    StreamReader::wait_for_data(r, &fut, func)?;
    Ok(fut)
}

fn abort_waiter(py: Python<'_>, r: &Py<StreamReader>, fut: &mut Option<Py<PyAny>>) {
    if let Some(f) = fut.take() {
        if let Ok(mut r) = r.try_borrow_mut(py) {
            r.clear_waiter(&f);
        }
    }
}

pub struct ReadOp {
    r: Py<StreamReader>,
    n: isize,
    started: bool,
    bulk: bool,
    waited: bool,
    fut: Option<Py<PyAny>>,
}

impl ReadOp {
    pub fn new(r: Py<StreamReader>, n: isize) -> Self {
        ReadOp {
            r,
            n,
            started: false,
            bulk: false,
            waited: false,
            fut: None,
        }
    }

    fn unbulk(&mut self, py: Python<'_>) {
        if std::mem::take(&mut self.bulk) {
            if let Ok(mut r) = self.r.try_borrow_mut(py) {
                r.leave_bulk(py);
            }
        }
    }
}

impl Op for ReadOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        let rb = self.r.bind(py).clone();
        self.fut = None;
        if !self.started {
            self.started = true;
            if let Some(e) = rb.borrow().exception_err(py) {
                return Err(e);
            }
            if self.n == 0 {
                return Ok(Poll::Ready(PyBytes::new(py, b"").into_any().unbind()));
            }
            if self.n < 0 {
                self.bulk = true;
                StreamReader::enter_bulk(&rb)?;
            }
        }
        if self.n < 0 {
            // asyncio loops `read(limit)` until EOF; each round re-checks the exception.
            let err = rb.borrow().exception_err(py);
            if let Some(e) = err {
                self.unbulk(py);
                return Err(e);
            }
            if rb.borrow().eof {
                let data = rb.borrow_mut().take_all(py)?;
                self.unbulk(py);
                StreamReader::maybe_resume(&rb)?;
                return Ok(Poll::Ready(data.into_any().unbind()));
            }
            let fut = new_waiter(&rb, "read")?;
            self.fut = Some(fut.clone_ref(py));
            return Ok(Poll::Wait(fut));
        }
        if !self.waited {
            let (empty, eof) = {
                let r = rb.borrow();
                (r.buf.is_empty(), r.eof)
            };
            if empty && !eof {
                self.waited = true;
                let fut = new_waiter(&rb, "read")?;
                self.fut = Some(fut.clone_ref(py));
                return Ok(Poll::Wait(fut));
            }
        }
        let data = rb.borrow_mut().take(py, self.n as usize).unbind();
        StreamReader::maybe_resume(&rb)?;
        Ok(Poll::Ready(data.into_any()))
    }

    fn abort(&mut self, py: Python<'_>) {
        abort_waiter(py, &self.r, &mut self.fut);
        self.unbulk(py);
    }

    fn name(&self) -> &'static str {
        "StreamReader.read"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.r)
    }
}

/// The separator(s) of a `readuntil()` call, or the error asyncio would raise for them.
/// An empty list stands for the default `b"\n"` (no allocation on the readline hot path).
pub struct Separators(Vec<Vec<u8>>);

const NEWLINE: &[&[u8]] = &[b"\n"];

pub enum SepError {
    /// Raised before the stored-exception check (`len()` and emptiness checks).
    Early(PyErr),
    /// Raised where asyncio's `bytearray.find(sep)` fails, after that check.
    Late(PyErr),
}

impl Separators {
    pub fn newline() -> Result<Self, SepError> {
        Ok(Separators(Vec::new()))
    }

    pub fn parse(obj: &Bound<'_, PyAny>) -> Result<Self, SepError> {
        let py = obj.py();
        let tuple_ok = crate::compat::minor(py) >= 13;
        let items: Vec<Bound<'_, PyAny>> = match obj.cast::<PyTuple>() {
            Ok(t) if tuple_ok => {
                if t.is_empty() {
                    return Err(SepError::Early(PyValueError::new_err(
                        "Separator should contain at least one element",
                    )));
                }
                t.iter().collect()
            }
            _ => vec![obj.clone()],
        };
        let mut seps = Vec::with_capacity(items.len());
        let mut late = None;
        for item in &items {
            let len = item.len().map_err(SepError::Early)?;
            if let Some(v) = bytes_like(item) {
                seps.push(v);
            } else {
                seps.push(vec![0; len]);
                late.get_or_insert_with(|| {
                    let name = item
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    PyTypeError::new_err(format!(
                        "argument should be integer or bytes-like object, not '{name}'"
                    ))
                });
            }
        }
        if seps.iter().any(|s| s.is_empty()) {
            return Err(SepError::Early(PyValueError::new_err(
                "Separator should be at least one-byte string",
            )));
        }
        match late {
            Some(e) => Err(SepError::Late(e)),
            None => Ok(Separators(seps)),
        }
    }
}

fn bytes_like(obj: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Some(b.as_bytes().to_vec());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Some(b.to_vec());
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let b = obj.call_method0("tobytes").ok()?;
        return Some(b.cast::<PyBytes>().ok()?.as_bytes().to_vec());
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LineMode {
    Until,
    Line,
    Anext,
    /// `lines()`: like `__anext__`, with its own limit (or none) and no data dropped on
    /// overrun (LimitOverrunError, buffer untouched).
    Lines,
}

pub struct ReadUntilOp {
    r: Py<StreamReader>,
    seps: Option<Result<Separators, SepError>>,
    parsed: Vec<Vec<u8>>,
    offset: usize,
    started: bool,
    mode: LineMode,
    limit: Option<usize>,
    fut: Option<Py<PyAny>>,
}

impl ReadUntilOp {
    pub fn lines(r: Py<StreamReader>, max_line: Option<usize>) -> Self {
        let mut op = Self::make(r, Separators::newline(), LineMode::Lines);
        op.limit = Some(max_line.unwrap_or(usize::MAX - 1));
        op
    }

    pub fn readuntil(r: Py<StreamReader>, seps: Result<Separators, SepError>) -> Self {
        Self::make(r, seps, LineMode::Until)
    }

    pub fn readline(r: Py<StreamReader>, anext: bool) -> Self {
        let mode = if anext {
            LineMode::Anext
        } else {
            LineMode::Line
        };
        Self::make(r, Separators::newline(), mode)
    }

    fn make(r: Py<StreamReader>, seps: Result<Separators, SepError>, mode: LineMode) -> Self {
        ReadUntilOp {
            r,
            seps: Some(seps),
            parsed: Vec::new(),
            offset: 0,
            started: false,
            mode,
            limit: None,
            fut: None,
        }
    }

    fn overrun(&self, rb: &Bound<'_, StreamReader>, msg: &str, consumed: usize) -> PyResult<Poll> {
        let py = rb.py();
        if matches!(self.mode, LineMode::Until | LineMode::Lines) {
            return Err(errors::limit_overrun(py, msg, consumed));
        }
        {
            let mut r = rb.borrow_mut();
            if r.buf.as_slice().get(consumed) == Some(&b'\n') {
                r.buf.consume(consumed + 1);
            } else {
                r.buf.clear();
            }
        }
        StreamReader::maybe_resume(rb)?;
        Err(PyValueError::new_err(msg.to_string()))
    }
}

impl Op for ReadUntilOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        let rb = self.r.bind(py).clone();
        self.fut = None;
        if !self.started {
            self.started = true;
            let late = match self.seps.take().expect("first poll") {
                Ok(Separators(v)) => {
                    self.parsed = v;
                    None
                }
                Err(SepError::Early(e)) => return Err(e),
                Err(SepError::Late(e)) => Some(e),
            };
            if let Some(e) = rb.borrow().exception_err(py) {
                return Err(e);
            }
            if let Some(e) = late {
                return Err(e);
            }
        }
        let (res, eof) = {
            let r = rb.borrow();
            let limit = self.limit.unwrap_or(r.limit);
            let found = if self.parsed.is_empty() {
                search(r.buf.as_slice(), NEWLINE, self.offset, limit)
            } else {
                let seps: Vec<&[u8]> = self.parsed.iter().map(|s| s.as_slice()).collect();
                search(r.buf.as_slice(), &seps, self.offset, limit)
            };
            (found, r.eof)
        };
        match res {
            Search::Found { end } => {
                let line = rb.borrow_mut().take(py, end).unbind();
                StreamReader::maybe_resume(&rb)?;
                Ok(Poll::Ready(line.into_any()))
            }
            Search::FoundOverLimit { start } => self.overrun(
                &rb,
                "Separator is found, but chunk is longer than limit",
                start,
            ),
            Search::NotFoundOverLimit { consumed } => self.overrun(
                &rb,
                "Separator is not found, and chunk exceed the limit",
                consumed,
            ),
            Search::NeedMore { offset } => {
                self.offset = offset;
                if eof {
                    let partial = rb.borrow_mut().take_all(py)?;
                    return match self.mode {
                        LineMode::Until => Err(errors::incomplete_read(py, partial, None)),
                        LineMode::Anext | LineMode::Lines if partial.as_bytes().is_empty() => {
                            Err(PyStopAsyncIteration::new_err(()))
                        }
                        _ => Ok(Poll::Ready(partial.into_any().unbind())),
                    };
                }
                let fut = new_waiter(&rb, "readuntil")?;
                self.fut = Some(fut.clone_ref(py));
                Ok(Poll::Wait(fut))
            }
        }
    }

    fn abort(&mut self, py: Python<'_>) {
        abort_waiter(py, &self.r, &mut self.fut);
    }

    fn name(&self) -> &'static str {
        match self.mode {
            LineMode::Until => "StreamReader.readuntil",
            LineMode::Line => "StreamReader.readline",
            LineMode::Anext => "StreamReader.__anext__",
            LineMode::Lines => "StreamReader.lines",
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.r)
    }
}

pub struct ReadExactlyOp {
    r: Py<StreamReader>,
    n: isize,
    started: bool,
    fut: Option<Py<PyAny>>,
}

impl ReadExactlyOp {
    pub fn new(r: Py<StreamReader>, n: isize) -> Self {
        ReadExactlyOp {
            r,
            n,
            started: false,
            fut: None,
        }
    }
}

impl Op for ReadExactlyOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        let rb = self.r.bind(py).clone();
        self.fut = None;
        if !self.started {
            self.started = true;
            if self.n < 0 {
                return Err(PyValueError::new_err(
                    "readexactly size can not be less than zero",
                ));
            }
            if let Some(e) = rb.borrow().exception_err(py) {
                return Err(e);
            }
            if self.n == 0 {
                return Ok(Poll::Ready(PyBytes::new(py, b"").into_any().unbind()));
            }
        }
        let n = self.n as usize;
        let (len, eof) = {
            let r = rb.borrow();
            (r.buf.len(), r.eof)
        };
        if len < n {
            if eof {
                let partial = rb.borrow_mut().take_all(py)?;
                return Err(errors::incomplete_read(py, partial, Some(n)));
            }
            let fut = new_waiter(&rb, "readexactly")?;
            self.fut = Some(fut.clone_ref(py));
            return Ok(Poll::Wait(fut));
        }
        let data = rb.borrow_mut().take(py, n).unbind();
        StreamReader::maybe_resume(&rb)?;
        Ok(Poll::Ready(data.into_any()))
    }

    fn abort(&mut self, py: Python<'_>) {
        abort_waiter(py, &self.r, &mut self.fut);
    }

    fn name(&self) -> &'static str {
        "StreamReader.readexactly"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.r)
    }
}
