//! Per-version behaviour the Rust side needs, read once from `sys.version_info`. The Python
//! side keeps its own switches in `rsubprocess/_compat.py`; this is the Rust mirror for the
//! few that are decided in Rust.

use std::sync::atomic::{AtomicU32, Ordering};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static MINOR: AtomicU32 = AtomicU32::new(0);

/// The running interpreter's minor version (3.X).
pub fn minor(py: Python<'_>) -> u32 {
    let m = MINOR.load(Ordering::Relaxed);
    if m != 0 {
        return m;
    }
    let m = py.version_info().minor as u32;
    MINOR.store(m, Ordering::Relaxed);
    m
}

/// 3.12+: `communicate(None)` closes stdin, and input without a stdin pipe is ignored.
pub fn communicate_closes_stdin(py: Python<'_>) -> bool {
    minor(py) >= 12
}

/// The loop a `StreamReader(loop=None)` binds to, found the way the running version does.
pub fn reader_default_loop(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // Through `asyncio.streams.events`, as StreamReader does, so a patched module is honoured.
    let events = py
        .import(intern!(py, "asyncio.streams"))?
        .getattr(intern!(py, "events"))?;
    let m = minor(py);
    let f = if (10..12).contains(&m) {
        intern!(py, "_get_event_loop")
    } else {
        intern!(py, "get_event_loop")
    };
    let l = events.getattr(f)?.call0()?;
    Ok(l.unbind())
}

/// A signal number converted as `os.kill` converts it (a `Py_ssize_t`, then C's `(int)`
/// cast), so a bad one raises what asyncio's `send_signal` raises, with its message.
pub fn signal_number(sig: &Bound<'_, PyAny>) -> PyResult<i32> {
    if minor(sig.py()) < 10 && sig.is_instance_of::<pyo3::types::PyFloat>() {
        return Err(crate::errors::type_error(
            "integer argument expected, got float",
        ));
    }
    let py = sig.py();
    let n: isize = sig.extract().map_err(|e: PyErr| {
        if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(py) {
            // PyO3 converts through a C long; os.kill's message names the ssize_t.
            pyo3::exceptions::PyOverflowError::new_err(
                "Python int too large to convert to C ssize_t",
            )
        } else {
            e
        }
    })?;
    // Truncating like CPython's cast: os.kill(pid, 2**32 + 9) sends signal 9.
    Ok(n as i32)
}

/// A warning on asyncio's logger, where asyncio logs the same condition.
pub fn log_warning(py: Python<'_>, msg: &str) -> PyResult<()> {
    let logger = py
        .import(intern!(py, "asyncio.log"))?
        .getattr(intern!(py, "logger"))?;
    logger.call_method1(intern!(py, "warning"), (msg,))?;
    Ok(())
}

/// What asyncio's default child watcher logs when someone else reaped our child.
pub fn lost_child_message(py: Python<'_>, pid: i32) -> String {
    if minor(py) >= 12 {
        format!("child process pid {pid} exit status already read:  will report returncode 255")
    } else {
        format!("Unknown child process pid {pid}, will report returncode 255")
    }
}

static WARN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static IS_FINALIZING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Looks up `warnings.warn` and `sys.is_finalizing` while imports still work, so that a
/// `Process` collected during interpreter finalization never imports (sys.meta_path is None
/// by then, and every import prints an ImportError).
pub fn prepare_warnings(py: Python<'_>) -> PyResult<()> {
    WARN.get_or_try_init(py, || {
        py.import(intern!(py, "warnings"))?
            .getattr(intern!(py, "warn"))
            .map(Bound::unbind)
    })?;
    IS_FINALIZING.get_or_try_init(py, || {
        py.import(intern!(py, "sys"))?
            .getattr(intern!(py, "is_finalizing"))
            .map(Bound::unbind)
    })?;
    Ok(())
}

/// `ResourceWarning` for a child that was still running when its `Process` went away (loop
/// closed). Silent during finalization, where the warnings machinery is half torn down; the
/// atexit hook (`rsubprocess.subprocess._reap_at_exit`) has warned for those children already.
pub fn resource_warning(py: Python<'_>, pid: i32) {
    let (Some(warn), Some(finalizing)) = (WARN.get(py), IS_FINALIZING.get(py)) else {
        return;
    };
    let finalizing = || {
        finalizing
            .call0(py)
            .and_then(|v| v.is_truthy(py))
            .unwrap_or(true)
    };
    if finalizing() {
        return;
    }
    let msg = format!(
        "subprocess {pid} was still running when its event loop went away; killed and reaped it"
    );
    let cat = py.get_type::<pyo3::exceptions::PyResourceWarning>();
    if let Err(e) = warn.call1(py, (msg, cat, 1)) {
        e.write_unraisable(py, None);
    }
}
