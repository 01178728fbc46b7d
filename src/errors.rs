//! The one place where Rust errors become Python exceptions.
//!
//! OS errors become `OSError(errno, strerror)`, which Python itself maps to the right subclass
//! (`BrokenPipeError`, `ProcessLookupError`, ...), so errno survives the boundary. asyncio's
//! own exception classes are imported, never redefined, so `except asyncio.IncompleteReadError`
//! keeps working.

use std::io;

use pyo3::exceptions::{PyAssertionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};

use crate::sys;

pub fn os_error(err: &io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => PyOSError::new_err((errno, sys::strerror(errno))),
        None => PyOSError::new_err(err.to_string()),
    }
}

pub fn os_error_from(errno: i32) -> PyErr {
    PyOSError::new_err((errno, sys::strerror(errno)))
}

static INCOMPLETE_READ: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static LIMIT_OVERRUN: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `asyncio.IncompleteReadError(partial, expected)`.
pub fn incomplete_read(
    py: Python<'_>,
    partial: Bound<'_, PyBytes>,
    expected: Option<usize>,
) -> PyErr {
    match INCOMPLETE_READ.import(py, "asyncio.exceptions", "IncompleteReadError") {
        Ok(cls) => match cls.call1((partial, expected)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// `asyncio.LimitOverrunError(message, consumed)`.
pub fn limit_overrun(py: Python<'_>, message: &str, consumed: usize) -> PyErr {
    match LIMIT_OVERRUN.import(py, "asyncio.exceptions", "LimitOverrunError") {
        Ok(cls) => match cls.call1((message, consumed)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

pub fn already_waiting(func: &str) -> PyErr {
    PyRuntimeError::new_err(format!(
        "{func}() called while another coroutine is already waiting for incoming data"
    ))
}

pub fn value_error(msg: &'static str) -> PyErr {
    PyValueError::new_err(msg)
}

pub fn type_error(msg: &'static str) -> PyErr {
    pyo3::exceptions::PyTypeError::new_err(msg)
}

/// asyncio's transports `assert isinstance(data, (bytes, bytearray, memoryview)), repr(data)`.
pub fn not_bytes(data: &Bound<'_, PyAny>) -> PyErr {
    match data.repr() {
        Ok(r) => PyAssertionError::new_err(r.to_string()),
        Err(e) => e,
    }
}

pub fn connection_lost() -> PyErr {
    pyo3::exceptions::PyConnectionResetError::new_err("Connection lost")
}

pub fn process_lookup() -> PyErr {
    pyo3::exceptions::PyProcessLookupError::new_err(())
}

static CANCELLED: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INVALID_STATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `asyncio.CancelledError`, the class (for `Waiter.result()` of a cancelled waiter).
pub fn cancelled_error_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    CANCELLED.import(py, "asyncio.exceptions", "CancelledError")
}

/// `asyncio.InvalidStateError(msg)`.
pub fn invalid_state(py: Python<'_>, msg: &str) -> PyErr {
    match INVALID_STATE.import(py, "asyncio.exceptions", "InvalidStateError") {
        Ok(cls) => match cls.call1((msg,)) {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        },
        Err(e) => e,
    }
}
