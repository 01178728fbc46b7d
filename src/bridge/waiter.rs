//! `Waiter`: the future an op yields while it waits for a pipe, the child's exit or its exec.
//!
//! It speaks the part of asyncio's Future protocol that `Task` and the rest of asyncio use on
//! a future a coroutine yields (`_asyncio_future_blocking`, `get_loop`, `add_done_callback`,
//! `remove_done_callback`, `result`, `exception`, `done`, `cancelled`, `cancel(msg)`), and
//! differs from `asyncio.Future` in one way: when one of our own fd callbacks completes it (the
//! loop calling `_on_readable` or `_on_exit`), the waiting task is stepped right there, in the
//! same loop iteration, instead of through `call_soon` in the next one. On asyncio's default
//! loop that iteration is most of the cost of a small round trip (two `_run_once` passes
//! become one). Completing it from anywhere else (`feed_data()` called by user code, a
//! cancellation) schedules the callbacks with `call_soon`, exactly as a Future does, because
//! stepping a task from inside another task is not allowed.
//!
//! What it will not do: be awaited directly (`await waiter`); rsubprocess never hands it out
//! except through `cr_await`, `Task._fut_waiter` and `StreamReader._waiter`, where asyncio only
//! inspects it.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::errors;

enum State {
    Pending,
    Result(Py<PyAny>),
    Error(Py<PyAny>),
    Cancelled(Option<Py<PyAny>>),
}

#[pyclass(module = "rsubprocess._core", weakref)]
pub struct Waiter {
    loop_: Py<PyAny>,
    state: State,
    /// `(callback, context)` in registration order.
    callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
    #[pyo3(get, set)]
    _asyncio_future_blocking: bool,
}

/// How a waiter ends.
enum Outcome {
    Result(Py<PyAny>),
    Error(Py<PyAny>),
}

impl Waiter {
    pub fn new_py(py: Python<'_>, loop_: &Py<PyAny>) -> PyResult<Py<PyAny>> {
        let w = Waiter {
            loop_: loop_.clone_ref(py),
            state: State::Pending,
            callbacks: Vec::new(),
            _asyncio_future_blocking: false,
        };
        Ok(Py::new(py, w)?.into_any())
    }

    pub fn set_blocking(&mut self, blocking: bool) {
        self._asyncio_future_blocking = blocking;
    }

    fn is_done(&self) -> bool {
        !matches!(self.state, State::Pending)
    }

    /// Completes `fut` if it is still pending. With `step_now`, its callbacks (the waiting
    /// task's wake-up) run before this returns; call it that way only from a callback the loop
    /// invoked, with no borrow held that the woken task could need.
    fn complete(
        py: Python<'_>,
        fut: &Bound<'_, Waiter>,
        outcome: Outcome,
        step_now: bool,
    ) -> PyResult<()> {
        let (callbacks, loop_) = {
            let mut w = fut.borrow_mut();
            if w.is_done() {
                return Ok(());
            }
            w.state = match outcome {
                Outcome::Result(v) => State::Result(v),
                Outcome::Error(e) => State::Error(e),
            };
            (std::mem::take(&mut w.callbacks), w.loop_.clone_ref(py))
        };
        if step_now {
            Waiter::run_callbacks(py, fut, callbacks, &loop_)
        } else {
            Waiter::schedule_callbacks(py, fut, callbacks, &loop_)
        }
    }

    fn schedule_callbacks(
        py: Python<'_>,
        fut: &Bound<'_, Waiter>,
        callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
        loop_: &Py<PyAny>,
    ) -> PyResult<()> {
        for (cb, ctx) in callbacks {
            let kw = PyDict::new(py);
            kw.set_item(intern!(py, "context"), ctx)?;
            loop_.call_method(py, intern!(py, "call_soon"), (cb, fut), Some(&kw))?;
        }
        Ok(())
    }

    /// Runs the callbacks as `Handle._run` would: each in its context; an `Exception` goes to
    /// the loop's exception handler, anything else (KeyboardInterrupt, SystemExit) propagates
    /// once the others have run.
    fn run_callbacks(
        py: Python<'_>,
        fut: &Bound<'_, Waiter>,
        callbacks: Vec<(Py<PyAny>, Option<Py<PyAny>>)>,
        loop_: &Py<PyAny>,
    ) -> PyResult<()> {
        let mut fatal = None;
        for (cb, ctx) in callbacks {
            let res = match &ctx {
                Some(c) => c.call_method1(py, intern!(py, "run"), (cb.clone_ref(py), fut)),
                None => cb.call1(py, (fut,)),
            };
            let Err(e) = res else { continue };
            if e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                let ctx = PyDict::new(py);
                let msg = format!("Exception in callback {}", cb.bind(py).repr()?);
                ctx.set_item("message", msg)?;
                ctx.set_item("exception", e.value(py))?;
                loop_.call_method1(py, intern!(py, "call_exception_handler"), (ctx,))?;
            } else if fatal.is_none() {
                fatal = Some(e);
            }
        }
        fatal.map_or(Ok(()), Err)
    }

    fn cancelled_error(py: Python<'_>, msg: &Option<Py<PyAny>>) -> PyResult<PyErr> {
        let cls = errors::cancelled_error_type(py)?;
        let exc = match msg {
            Some(m) => cls.call1((m.clone_ref(py),))?,
            None => cls.call0()?,
        };
        Ok(PyErr::from_value(exc))
    }
}

/// Completes `fut` (our `Waiter`, or any asyncio-style future) with `value`, unless it is done.
pub fn resolve(py: Python<'_>, fut: &Py<PyAny>, value: Py<PyAny>, step_now: bool) -> PyResult<()> {
    match fut.bind(py).cast::<Waiter>() {
        Ok(w) => Waiter::complete(py, w, Outcome::Result(value), step_now),
        Err(_) => super::looputil::resolve(py, fut, value),
    }
}

/// Fails `fut` with `exc` unless it is done (or was cancelled).
pub fn reject(py: Python<'_>, fut: &Py<PyAny>, exc: &Py<PyAny>, step_now: bool) -> PyResult<()> {
    match fut.bind(py).cast::<Waiter>() {
        Ok(w) => Waiter::complete(py, w, Outcome::Error(exc.clone_ref(py)), step_now),
        Err(_) => super::looputil::reject(py, fut, exc),
    }
}

#[pymethods]
impl Waiter {
    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.loop_.clone_ref(py)
    }

    fn done(&self) -> bool {
        self.is_done()
    }

    fn cancelled(&self) -> bool {
        matches!(self.state, State::Cancelled(_))
    }

    pub fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.state {
            State::Pending => Err(errors::invalid_state(py, "Result is not set.")),
            State::Result(v) => Ok(v.clone_ref(py)),
            State::Error(e) => Err(PyErr::from_value(e.bind(py).clone())),
            State::Cancelled(m) => Err(Waiter::cancelled_error(py, m)?),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.state {
            State::Pending => Err(errors::invalid_state(py, "Exception is not set.")),
            State::Result(_) => Ok(None),
            State::Error(e) => Ok(Some(e.clone_ref(py))),
            State::Cancelled(m) => Err(Waiter::cancelled_error(py, m)?),
        }
    }

    #[pyo3(signature = (callback, *, context = None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let done_loop = {
            let mut w = slf.borrow_mut();
            if w.is_done() {
                Some(w.loop_.clone_ref(py))
            } else {
                w.callbacks.push((
                    callback.clone_ref(py),
                    context.as_ref().map(|c| c.clone_ref(py)),
                ));
                None
            }
        };
        match done_loop {
            Some(l) => Waiter::schedule_callbacks(py, slf, vec![(callback, context)], &l),
            None => Ok(()),
        }
    }

    fn remove_done_callback(&mut self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> usize {
        let before = self.callbacks.len();
        self.callbacks
            .retain(|(cb, _)| !cb.bind(py).eq(callback).unwrap_or(false));
        before - self.callbacks.len()
    }

    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<Py<PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let (callbacks, loop_) = {
            let mut w = slf.borrow_mut();
            if w.is_done() {
                return Ok(false);
            }
            w.state = State::Cancelled(msg);
            (std::mem::take(&mut w.callbacks), w.loop_.clone_ref(py))
        };
        Waiter::schedule_callbacks(py, slf, callbacks, &loop_)?;
        Ok(true)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let state = match &self.state {
            State::Pending => "pending".to_string(),
            State::Cancelled(_) => "cancelled".to_string(),
            State::Result(v) => format!("finished result={}", v.bind(py).repr()?),
            State::Error(e) => format!("finished exception={}", e.bind(py).repr()?),
        };
        let n = self.callbacks.len();
        Ok(if n > 0 {
            format!("<rsubprocess Waiter {state} cb=[{n}]>")
        } else {
            format!("<rsubprocess Waiter {state}>")
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.loop_)?;
        match &self.state {
            State::Result(v) | State::Error(v) => visit.call(v)?,
            State::Cancelled(Some(m)) => visit.call(m)?,
            _ => {}
        }
        for (cb, ctx) in &self.callbacks {
            visit.call(cb)?;
            if let Some(c) = ctx {
                visit.call(c)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.callbacks.clear();
        self.state = State::Pending;
    }
}
