//! Arguments of the read methods that are not plain machine-sized ints, handled the way
//! asyncio's Python code handles them: `read(2**70)` reads what is there (slicing clamps),
//! `read(-2**70)` reads to EOF, `readexactly(2**70)` ends in `IncompleteReadError(partial,
//! 2**70)`, and a non-int raises from the same comparison asyncio makes (`n < 0`), with its
//! message, when the coroutine first runs. A plain int goes straight to the ops in
//! `reader_ops`; only the rare odd argument pays for the wrapper here.
//!
//! What it will not do: a float `n` that passes asyncio's comparisons fails here at once with
//! the `TypeError` asyncio's slicing raises, where asyncio may first wait for data (and, at EOF
//! with fewer than `n` bytes, raise `IncompleteReadError` instead).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt};
use pyo3::{intern, Borrowed, PyTraverseError, PyVisit};

use crate::bridge::{Op, Poll};
use crate::errors;
use crate::streams::reader::StreamReader;
use crate::streams::reader_ops::{ReadExactlyOp, ReadOp};

/// An argument whose explicit `None` is not its default (`readuntil(None)` is asyncio's
/// `TypeError`, not a newline).
pub enum Arg {
    Default,
    Given(Py<PyAny>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg::Given(obj.to_owned().unbind()))
    }
}

/// A Python int as `isize`, a huge one clamped to the side it is on (no buffer can hold
/// that many bytes, so the answer is the same); `None` for anything that is not an int.
pub fn clamped_int(obj: &Bound<'_, PyAny>) -> PyResult<Option<isize>> {
    if !obj.is_instance_of::<PyInt>() {
        return Ok(None);
    }
    match obj.extract::<isize>() {
        Ok(n) => Ok(Some(n)),
        Err(_) if obj.lt(0)? => Ok(Some(isize::MIN)),
        Err(_) => Ok(Some(isize::MAX)),
    }
}

fn slice_index_error() -> PyErr {
    errors::type_error("slice indices must be integers or None or have an __index__ method")
}

/// `read(n)` or `readexactly(n)` with an `n` that is not an int (or, for `readexactly`, does
/// not fit): asyncio's checks on it, in its order, then the int op.
pub struct ArgOp {
    r: Py<StreamReader>,
    n: Py<PyAny>,
    exactly: bool,
    inner: Option<Box<dyn Op>>,
}

impl ArgOp {
    pub fn read(r: Py<StreamReader>, n: Py<PyAny>) -> Self {
        ArgOp {
            r,
            n,
            exactly: false,
            inner: None,
        }
    }

    pub fn readexactly(r: Py<StreamReader>, n: Py<PyAny>) -> Self {
        ArgOp {
            r,
            n,
            exactly: true,
            inner: None,
        }
    }

    /// asyncio's checks; `Ok(None)` when the answer is `b""` at once.
    fn prepare(&self, py: Python<'_>) -> PyResult<Option<Box<dyn Op>>> {
        let n = self.n.bind(py);
        if self.exactly && n.lt(0)? {
            return Err(errors::value_error(
                "readexactly size can not be less than zero",
            ));
        }
        if let Some(e) = self.r.borrow(py).exception_err(py) {
            return Err(e);
        }
        if n.eq(0)? {
            return Ok(None);
        }
        let r = self.r.clone_ref(py);
        if !self.exactly && n.lt(0)? {
            return Ok(Some(Box::new(ReadOp::new(r, -1))));
        }
        // asyncio slices with it: anything with __index__ is an int there.
        let size = n
            .call_method0(intern!(py, "__index__"))
            .ok()
            .and_then(|i| clamped_int(&i).ok().flatten())
            .ok_or_else(slice_index_error)?;
        Ok(Some(if self.exactly {
            Box::new(ReadExactlyOp::new(r, size))
        } else {
            Box::new(ReadOp::new(r, size))
        }))
    }

    /// The int op's `IncompleteReadError` carries the clamped size: rebuild it with `n`.
    fn with_expected(&self, py: Python<'_>, err: PyErr) -> PyErr {
        let value = err.value(py);
        let is_incomplete = py
            .import(intern!(py, "asyncio.exceptions"))
            .and_then(|m| m.getattr(intern!(py, "IncompleteReadError")))
            .and_then(|cls| value.is_instance(&cls));
        if !matches!(is_incomplete, Ok(true)) {
            return err;
        }
        let rebuilt = value
            .getattr(intern!(py, "partial"))
            .and_then(|partial| value.get_type().call1((partial, self.n.bind(py))));
        match rebuilt {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}

impl Op for ArgOp {
    fn poll(&mut self, py: Python<'_>) -> PyResult<Poll> {
        if self.inner.is_none() {
            match self.prepare(py)? {
                Some(op) => self.inner = Some(op),
                None => return Ok(Poll::Ready(PyBytes::new(py, b"").into_any().unbind())),
            }
        }
        let res = self.inner.as_mut().expect("set above").poll(py);
        if self.exactly {
            return res.map_err(|e| self.with_expected(py, e));
        }
        res
    }

    fn abort(&mut self, py: Python<'_>) {
        if let Some(op) = &mut self.inner {
            op.abort(py);
        }
    }

    fn name(&self) -> &'static str {
        if self.exactly {
            "StreamReader.readexactly"
        } else {
            "StreamReader.read"
        }
    }

    fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.r)?;
        visit.call(&self.n)?;
        match &self.inner {
            Some(op) => op.traverse(visit),
            None => Ok(()),
        }
    }
}

/// Readers double their limit for flow control: anything above this is as good as no limit.
pub const MAX_LIMIT: usize = (isize::MAX as usize) / 4;

/// asyncio's `StreamReader(limit=...)` check (`limit <= 0` is a `ValueError`, compared the way
/// Python compares, so a non-number fails with Python's own `TypeError`), and the limit as a
/// size: a huge one, `inf` or `nan` is as good as none, as it is with asyncio.
#[pyfunction]
pub fn reader_limit(limit: &Bound<'_, PyAny>) -> PyResult<usize> {
    if limit.le(0)? {
        return Err(errors::value_error("Limit cannot be <= 0"));
    }
    if !limit.lt(MAX_LIMIT)? {
        return Ok(MAX_LIMIT);
    }
    let py = limit.py();
    let int = py
        .get_type::<PyInt>()
        .call1((limit,))?
        .extract::<usize>()
        .unwrap_or(1);
    Ok(int.max(1))
}
