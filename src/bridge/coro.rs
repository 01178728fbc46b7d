//! `Coro`: a coroutine-shaped awaitable that runs a Rust [`Op`].
//!
//! It behaves like the `async def` it replaces: nothing happens until the first `send`
//! (calling `reader.read()` and dropping the result consumes nothing), `asyncio.create_task`
//! accepts it (registered as `collections.abc.Coroutine`), and when the answer is already
//! available the first `send` raises `StopIteration(value)` with no loop round trip.
//! Otherwise the op hands back a loop future; we yield it the way `Future.__await__` does and
//! poll the op again when the task resumes us.
//!
//! Cancellation: asyncio cancels the future we yielded, then throws `CancelledError` into us;
//! [`Op::abort`] unregisters the op's waiters and the exception propagates. Each op documents
//! what is consumed at that point.

use pyo3::exceptions::{PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3::{intern, PyTraverseError, PyVisit};

use super::Waiter;

pub enum Poll {
    Ready(Py<PyAny>),
    /// Wait for this loop future, then poll again.
    Wait(Py<PyAny>),
    /// Give the loop one turn (a bare `yield`, like `asyncio.sleep(0)`), then poll again.
    Yield,
}

pub trait Op: Send + Sync {
    /// Make progress. Called on the first `send` and after each wake-up.
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll>;
    /// The awaiting task was cancelled or the coroutine closed while waiting: unregister.
    fn abort(&mut self, py: Python<'_>);
    /// `__qualname__` of the coroutine, for task reprs.
    fn name(&self) -> &'static str;
    /// Python objects held, for the cycle collector.
    fn traverse(&self, _visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        Ok(())
    }
}

#[pyclass(module = "rsubprocess._core")]
pub struct Coro {
    op: Option<Box<dyn Op>>,
    waiting: Option<Py<PyAny>>,
    started: bool,
}

impl Coro {
    pub fn new(op: impl Op + 'static) -> Self {
        Coro {
            op: Some(Box::new(op)),
            waiting: None,
            started: false,
        }
    }

    /// A coroutine for `op`: the one in `slot` when nothing but the slot holds it any more
    /// (the last one was awaited and dropped), else a new one, kept in the slot for next time.
    ///
    /// For the per-line calls (`readline()`, `async for`): a fresh object per line costs an
    /// allocation, GC tracking and the collections that many allocations trigger. Nobody can
    /// tell the difference: an object whose only reference is ours cannot be observed.
    pub fn recycled(
        py: Python<'_>,
        slot: &mut Option<Py<Coro>>,
        op: impl Op + 'static,
    ) -> PyResult<Py<Coro>> {
        if let Some(c) = slot.as_ref() {
            let b = c.bind(py);
            if crate::sys::refcount(b.as_any()) == 1 {
                if let Ok(mut coro) = b.try_borrow_mut() {
                    coro.finish(py);
                    coro.op = Some(Box::new(op));
                    coro.started = false;
                    return Ok(c.clone_ref(py));
                }
            }
        }
        let c = Py::new(py, Coro::new(op))?;
        *slot = Some(c.clone_ref(py));
        Ok(c)
    }

    fn finish(&mut self, py: Python<'_>) {
        if let Some(mut op) = self.op.take() {
            if self.waiting.take().is_some() || self.started {
                op.abort(py);
            }
        }
        self.waiting = None;
    }
}

impl Drop for Coro {
    /// Dropped while suspended: close it, as the interpreter closes an `async def` it frees
    /// (its `finally` blocks run), so the op's waiter is unregistered.
    fn drop(&mut self) {
        if self.op.is_some() && (self.started || self.waiting.is_some()) {
            Python::attach(|py| self.finish(py));
        }
    }
}

#[pymethods]
impl Coro {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py)?.into_iter_result()
    }

    #[pyo3(signature = (_value))]
    fn send(&mut self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py)?.into_iter_result()
    }

    #[pyo3(signature = (typ, val=None, _tb=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.finish(py);
        let exc = if let Ok(cls) = typ.cast::<PyType>() {
            match val {
                Some(v) if v.is_instance(cls)? => v.clone(),
                Some(v) if !v.is_none() => cls.call1((v,))?,
                _ => cls.call0()?,
            }
        } else {
            typ.clone()
        };
        if !exc.is_instance_of::<pyo3::exceptions::PyBaseException>() {
            return Err(PyTypeError::new_err(
                "exceptions must be classes or instances deriving from BaseException",
            ));
        }
        Err(PyErr::from_value(exc))
    }

    fn close(&mut self, py: Python<'_>) {
        self.finish(py);
    }

    #[getter]
    fn __name__(&self) -> &'static str {
        self.op.as_ref().map_or("coroutine", |op| op.name())
    }

    #[getter]
    fn __qualname__(&self) -> &'static str {
        self.__name__()
    }

    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.waiting.as_ref().map(|f| f.clone_ref(py))
    }

    #[getter]
    fn cr_running(&self) -> bool {
        false
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(w) = &self.waiting {
            visit.call(w)?;
        }
        if let Some(op) = &self.op {
            op.traverse(&visit)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.op = None;
        self.waiting = None;
    }
}

/// The `am_send` slot (installed by `sys::install_am_send`): the interpreter's SEND opcode
/// and asyncio's Task step call it instead of `__next__` on 3.10+, so a ready answer is handed
/// back as a value, with no StopIteration created, raised and caught.
impl crate::sys::SendSlot for Coro {
    fn send(obj: &Bound<'_, PyAny>) -> PyResult<(bool, Py<PyAny>)> {
        let step = obj.cast::<Coro>()?.borrow_mut().step(obj.py())?;
        Ok(match step {
            Step::Return(v) => (true, v),
            Step::Yield(v) => (false, v),
        })
    }
}

/// One step of the coroutine: what `send` produced, without the StopIteration wrapping.
enum Step {
    /// Suspended on this (a loop future, or None for a bare yield).
    Yield(Py<PyAny>),
    /// Finished with this value.
    Return(Py<PyAny>),
}

impl Step {
    fn into_iter_result(self) -> PyResult<Py<PyAny>> {
        match self {
            Step::Yield(v) => Ok(v),
            Step::Return(v) => Err(PyStopIteration::new_err((v,))),
        }
    }
}

impl Coro {
    /// Runs the op one step; `__next__` and `send` wrap a return in StopIteration, the
    /// `am_send` slot hands it back as it is.
    fn step(&mut self, py: Python<'_>) -> PyResult<Step> {
        if self.op.is_none() {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        }
        self.started = true;
        // Resumed after a wait: the future's outcome is what `await fut` would have produced.
        if let Some(fut) = self.waiting.take() {
            let outcome = match fut.bind(py).cast::<Waiter>() {
                Ok(w) => w.borrow().result(py),
                Err(_) => fut.call_method0(py, intern!(py, "result")),
            };
            if let Err(e) = outcome {
                self.finish(py);
                return Err(e);
            }
        }
        match self
            .op
            .as_mut()
            .map(|op| op.poll(py))
            .expect("checked above")
        {
            Ok(Poll::Ready(v)) => {
                self.op = None;
                Ok(Step::Return(v))
            }
            Ok(Poll::Wait(fut)) => {
                match fut.bind(py).cast::<Waiter>() {
                    Ok(w) => w.borrow_mut().set_blocking(true),
                    Err(_) => fut.setattr(py, intern!(py, "_asyncio_future_blocking"), true)?,
                }
                self.waiting = Some(fut.clone_ref(py));
                Ok(Step::Yield(fut))
            }
            Ok(Poll::Yield) => Ok(Step::Yield(py.None())),
            Err(e) => {
                // The op failed on its own; it has nothing registered to undo.
                self.op = None;
                Err(e)
            }
        }
    }
}

/// A coroutine that is done at once, for ops with nothing to wait for (e.g. a `wait()` whose
/// returncode is known) but that must still be awaitable like `async def`.
pub struct ReadyOp(pub Option<Py<PyAny>>, pub &'static str);

impl Op for ReadyOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        Ok(Poll::Ready(self.0.take().unwrap_or_else(|| py.None())))
    }
    fn abort(&mut self, _py: Python<'_>) {}
    fn name(&self) -> &'static str {
        self.1
    }
}
