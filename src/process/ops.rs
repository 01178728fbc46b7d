//! `wait()` and `communicate()` as Rust state machines.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use pyo3::{PyTraverseError, PyVisit};

use crate::bridge::{looputil, Op, Poll};
use crate::process::Process;
use crate::streams::reader::StreamReader;
use crate::streams::writer::StreamWriter;

pub struct WaitOp {
    p: Py<Process>,
    fut: Option<Py<PyAny>>,
}

impl WaitOp {
    pub fn new(p: Py<Process>) -> Self {
        WaitOp { p, fut: None }
    }
}

impl Op for WaitOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        self.fut = None;
        if let Some(rc) = Process::wait_idle(self.p.bind(py))? {
            return Ok(Poll::Ready(rc.into_pyobject(py)?.into_any().unbind()));
        }
        let mut p = self.p.borrow_mut(py);
        if let Some(rc) = p.returncode {
            return Ok(Poll::Ready(rc.into_pyobject(py)?.into_any().unbind()));
        }
        let fut = looputil::create_future(py, &p.loop_)?;
        p.exit_waiters.push(fut.clone_ref(py));
        self.fut = Some(fut.clone_ref(py));
        Ok(Poll::Wait(fut))
    }

    fn abort(&mut self, py: Python<'_>) {
        if let Some(f) = self.fut.take() {
            if let Ok(mut p) = self.p.try_borrow_mut(py) {
                p.exit_waiters.retain(|w| !w.is(&f));
            }
        }
    }

    fn name(&self) -> &'static str {
        "Process.wait"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.p)
    }
}

/// Feeds stdin, drains stdout and stderr to EOF and waits for exit, all from one waiter
/// future registered with whichever of the three is still pending.
pub struct CommunicateOp {
    p: Py<Process>,
    input: Option<Py<PyAny>>,
    started: bool,
    feeding: Option<Py<StreamWriter>>,
    readers: Vec<Py<StreamReader>>,
    fut: Option<Py<PyAny>>,
}

impl CommunicateOp {
    pub fn new(p: Py<Process>, input: Option<Py<PyAny>>) -> Self {
        CommunicateOp {
            p,
            input,
            started: false,
            feeding: None,
            readers: Vec::new(),
            fut: None,
        }
    }

    fn start(&mut self, py: Python<'_>) -> PyResult<()> {
        let (stdin, readers) = {
            let p = self.p.borrow(py);
            let readers: Vec<_> = p
                .stdout
                .iter()
                .chain(&p.stderr)
                .map(|r| r.clone_ref(py))
                .collect();
            (p.stdin.as_ref().map(|s| s.clone_ref(py)), readers)
        };
        let input = self.input.take().filter(|i| !i.is_none(py));
        let new_style = crate::compat::communicate_closes_stdin(py);
        match (&stdin, &input) {
            (Some(w), _) if input.is_some() || new_style => {
                let w = w.bind(py);
                if let Some(data) = &input {
                    StreamWriter::write_data(w, data.bind(py))?;
                }
                // write() + drain() + close(): close() flushes the queue before closing, and a
                // broken pipe only ends the feeding (communicate() ignores it).
                StreamWriter::write_eof_impl(w)?;
                self.feeding = Some(w.clone().unbind());
            }
            (None, Some(_)) if !new_style => {
                return Err(PyAttributeError::new_err(
                    "'NoneType' object has no attribute 'write'",
                ));
            }
            _ => {}
        }
        for r in &readers {
            StreamReader::enter_bulk(r.bind(py))?;
        }
        self.readers = readers;
        Ok(())
    }

    fn unregister(&mut self, py: Python<'_>) {
        let Some(f) = self.fut.take() else { return };
        for r in &self.readers {
            if let Ok(mut r) = r.try_borrow_mut(py) {
                r.clear_waiter(&f);
            }
        }
        if let Some(w) = &self.feeding {
            if let Ok(mut w) = w.try_borrow_mut(py) {
                w.notify.retain(|x| !x.is(&f));
            }
        }
        if let Ok(mut p) = self.p.try_borrow_mut(py) {
            p.exit_waiters.retain(|x| !x.is(&f));
        }
    }

    fn release_readers(&mut self, py: Python<'_>) {
        for r in std::mem::take(&mut self.readers) {
            if let Ok(mut rb) = r.try_borrow_mut(py) {
                rb.leave_bulk(py);
            }
        }
    }
}

impl Op for CommunicateOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        self.unregister(py);
        if !self.started {
            self.started = true;
            self.start(py)?;
        }
        let failed = self
            .readers
            .iter()
            .find_map(|r| r.borrow(py).exception_err(py));
        if let Some(e) = failed {
            self.release_readers(py);
            return Err(e);
        }
        let reading: Vec<&Py<StreamReader>> =
            self.readers.iter().filter(|r| !r.borrow(py).eof).collect();
        let feeding = self.feeding.as_ref().filter(|w| !w.borrow(py).is_lost());
        let exited = self.p.borrow(py).returncode.is_some();
        if reading.is_empty() && feeding.is_none() && exited {
            let (out, err) = {
                let p = self.p.borrow(py);
                (
                    p.stdout.as_ref().map(|r| r.clone_ref(py)),
                    p.stderr.as_ref().map(|r| r.clone_ref(py)),
                )
            };
            let take = |r: Option<Py<StreamReader>>| -> PyResult<Py<PyAny>> {
                match r {
                    Some(r) => Ok(r.borrow_mut(py).take_all(py)?.into_any().unbind()),
                    None => Ok(py.None()),
                }
            };
            let result = PyTuple::new(py, [take(out)?, take(err)?])?;
            self.release_readers(py);
            return Ok(Poll::Ready(result.into_any().unbind()));
        }
        let loop_ = self.p.borrow(py).loop_.clone_ref(py);
        let fut = looputil::create_future(py, &loop_)?;
        for r in reading {
            StreamReader::wait_for_data(r.bind(py), &fut, "read")?;
        }
        if let Some(w) = feeding {
            w.borrow_mut(py).notify.push(fut.clone_ref(py));
        }
        if !exited {
            self.p.borrow_mut(py).exit_waiters.push(fut.clone_ref(py));
        }
        self.fut = Some(fut.clone_ref(py));
        Ok(Poll::Wait(fut))
    }

    fn abort(&mut self, py: Python<'_>) {
        self.unregister(py);
        self.release_readers(py);
    }

    fn name(&self) -> &'static str {
        "Process.communicate"
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.p)?;
        for r in &self.readers {
            visit.call(r)?;
        }
        if let Some(w) = &self.feeding {
            visit.call(w)?;
        }
        Ok(())
    }
}
