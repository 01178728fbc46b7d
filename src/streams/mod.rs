//! Streams: the Rust-backed `StreamReader` (stdout/stderr) and `StreamWriter` (stdin).
//!
//! Both are served on the loop thread: the reader fills a [`buffer::ByteBuf`] from an
//! `add_reader` callback and answers `read*()` from it; the writer writes straight to the pipe
//! when nothing is queued and flushes the rest from an `add_writer` callback.

pub mod args;
pub mod buffer;
pub mod reader;
pub mod reader_ops;
pub mod writer;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The Python-facing classes (`rsubprocess.StreamReader`/`StreamWriter`, which also subclass
/// asyncio's, so `isinstance(proc.stdout, asyncio.StreamReader)` holds) that pipes get.
static READER_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static WRITER_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Called once by `rsubprocess.streams` at import.
#[pyfunction]
pub fn _register_stream_types(
    py: Python<'_>,
    reader: Bound<'_, PyType>,
    writer: Bound<'_, PyType>,
) -> PyResult<()> {
    if !reader.is_subclass_of::<reader::StreamReader>()?
        || !writer.is_subclass_of::<writer::StreamWriter>()?
    {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "expected subclasses of the core stream types",
        ));
    }
    let _ = READER_TYPE.set(py, reader.unbind());
    let _ = WRITER_TYPE.set(py, writer.unbind());
    Ok(())
}
