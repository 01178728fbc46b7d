//! Small helpers over the loop's Python API, with interned names.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// `rsubprocess.subprocess._idle_window`, registered at import (`_register_idle_window`).
static IDLE_WINDOW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Registers the function that says how long a loop would sleep right now (see `idle_window`).
#[pyfunction]
pub fn _register_idle_window(py: Python<'_>, f: Py<PyAny>) {
    let _ = IDLE_WINDOW.set(py, f);
}

/// `(the loop's epoll fd, microseconds)` when `loop_` has nothing to run for that long and any
/// fd it watches becoming ready makes that fd readable: a wait there, on that fd too, stands in
/// for the loop's own sleep and delays nothing. None when busy, or for loops that do not show
/// it (uvloop). The rules are Python's (`rsubprocess.subprocess._idle_window`), where asyncio's
/// loop attributes are read.
pub fn idle_window(py: Python<'_>, loop_: &Py<PyAny>) -> PyResult<Option<(i32, u64)>> {
    let Some(f) = IDLE_WINDOW.get(py) else {
        return Ok(None);
    };
    let (fd, us): (i32, u64) = f.call1(py, (loop_,))?.extract(py)?;
    Ok((us > 0 && fd >= 0).then_some((fd, us)))
}

/// The future an op yields while it waits: our `Waiter` (see `bridge::waiter`).
pub fn create_future(py: Python<'_>, loop_: &Py<PyAny>) -> PyResult<Py<PyAny>> {
    super::waiter::Waiter::new_py(py, loop_)
}

/// `fut.set_result(value)` unless the future is already done (e.g. cancelled by its task).
pub fn resolve(py: Python<'_>, fut: &Py<PyAny>, value: Py<PyAny>) -> PyResult<()> {
    let done: bool = fut.call_method0(py, intern!(py, "done"))?.extract(py)?;
    if !done {
        fut.call_method1(py, intern!(py, "set_result"), (value,))?;
    }
    Ok(())
}

/// `fut.set_exception(exc)` unless the future is already done.
pub fn reject(py: Python<'_>, fut: &Py<PyAny>, exc: &Py<PyAny>) -> PyResult<()> {
    let done: bool = fut.call_method0(py, intern!(py, "done"))?.extract(py)?;
    if !done {
        fut.call_method1(py, intern!(py, "set_exception"), (exc.clone_ref(py),))?;
    }
    Ok(())
}

pub fn add_reader(py: Python<'_>, loop_: &Py<PyAny>, fd: i32, cb: Py<PyAny>) -> PyResult<()> {
    loop_.call_method1(py, intern!(py, "add_reader"), (fd, cb))?;
    Ok(())
}

pub fn remove_reader(py: Python<'_>, loop_: &Py<PyAny>, fd: i32) -> PyResult<()> {
    loop_.call_method1(py, intern!(py, "remove_reader"), (fd,))?;
    Ok(())
}

pub fn add_writer(py: Python<'_>, loop_: &Py<PyAny>, fd: i32, cb: Py<PyAny>) -> PyResult<()> {
    loop_.call_method1(py, intern!(py, "add_writer"), (fd, cb))?;
    Ok(())
}

pub fn remove_writer(py: Python<'_>, loop_: &Py<PyAny>, fd: i32) -> PyResult<()> {
    loop_.call_method1(py, intern!(py, "remove_writer"), (fd,))?;
    Ok(())
}

pub fn call_soon(py: Python<'_>, loop_: &Py<PyAny>, cb: Py<PyAny>) -> PyResult<()> {
    loop_.call_method1(py, intern!(py, "call_soon"), (cb,))?;
    Ok(())
}

pub fn is_closed(py: Python<'_>, loop_: &Py<PyAny>) -> bool {
    loop_
        .call_method0(py, intern!(py, "is_closed"))
        .and_then(|v| v.extract::<bool>(py))
        .unwrap_or(true)
}
