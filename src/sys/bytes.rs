//! Python `bytes` objects filled in place: without a zero-fill first, and grown by
//! `_PyBytes_Resize` while a pipe is read straight into them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A `bytes` object of `len` bytes filled by `fill`, without the zero-fill that
/// `PyBytes::new_with` does first (the bulk paths copy hundreds of MiB through here).
pub fn bytes_filled<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new bytes object with `n` writable,
    // uninitialised bytes (or NULL with an exception set). We hold the only reference and write
    // every byte before anyone else can see it; `fill` must initialise the whole slice, which
    // the callers do by copying exactly `len` bytes.
    unsafe {
        let ptr = ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as ffi::Py_ssize_t);
        if ptr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let buf = ffi::PyBytes_AsString(ptr).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        Ok(Bound::from_owned_ptr(py, ptr).cast_into_unchecked())
    }
}

type BytesResizeFn = unsafe extern "C" fn(*mut *mut ffi::PyObject, ffi::Py_ssize_t) -> libc::c_int;

/// `_PyBytes_Resize`, looked up at run time: it is exported by every CPython 3.x but is not
/// part of the stable ABI, so an abi3 build must not link against it.
fn bytes_resize_fn() -> Option<BytesResizeFn> {
    static FN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *FN.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads the loaded
        // objects' symbol tables.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_PyBytes_Resize".as_ptr()) as usize }
    });
    // SAFETY: a non-null address for this symbol is CPython's `_PyBytes_Resize`, whose C
    // signature is `int (PyObject **, Py_ssize_t)`.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, BytesResizeFn>(addr) })
}

/// A `bytes` object under construction that the pipe is read straight into: it grows by
/// `_PyBytes_Resize` (glibc's realloc moves large blocks with `mremap`, without copying) and
/// is trimmed to size at the end, so a bulk read never holds two copies of its output.
/// Where `_PyBytes_Resize` is missing it falls back to copying into a larger object.
pub struct BytesBuilder {
    obj: Py<PyAny>,
    len: usize,
    cap: usize,
    /// How far ahead of `len` to fault pages in before each read (0: not at all); see
    /// `populate_ahead`.
    window: usize,
    /// Offset up to which the pages are known to be faulted in.
    populated: usize,
}

impl BytesBuilder {
    pub fn with_capacity(py: Python<'_>, cap: usize) -> PyResult<Self> {
        let obj = bytes_filled(py, cap, |_| {})?;
        Ok(BytesBuilder {
            obj: obj.into_any().unbind(),
            len: 0,
            cap,
            window: 0,
            populated: 0,
        })
    }

    /// After each read, fault in the next `window` bytes of room (see `populate_ahead`).
    pub fn set_populate_window(&mut self, window: usize) {
        self.window = window;
    }

    pub fn populate_window(&self) -> usize {
        self.window
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn data_ptr(&self, py: Python<'_>) -> *mut u8 {
        // SAFETY: `obj` is a bytes object we own exclusively; PyBytes_AsString returns its
        // internal buffer of `cap` bytes.
        unsafe { ffi::PyBytes_AsString(self.obj.bind(py).as_ptr()).cast::<u8>() }
    }

    pub fn as_slice<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        // SAFETY: the first `len` bytes were written by `extend`/`read_from`.
        unsafe { std::slice::from_raw_parts(self.data_ptr(py), self.len) }
    }

    /// Makes room for at least `additional` more bytes.
    pub fn reserve(&mut self, py: Python<'_>, additional: usize) -> PyResult<()> {
        if self.cap - self.len >= additional {
            return Ok(());
        }
        let new_cap = (self.cap * 2).max(self.len + additional);
        self.resize(py, new_cap)?;
        Ok(())
    }

    fn resize(&mut self, py: Python<'_>, new_cap: usize) -> PyResult<()> {
        if let Some(resize) = bytes_resize_fn() {
            let mut ptr = self.obj.clone_ref(py).into_ptr();
            // Drop our second reference first: _PyBytes_Resize requires refcount 1.
            self.obj = py.None();
            // SAFETY: `ptr` is the only reference to a bytes object nobody else has seen;
            // on failure _PyBytes_Resize releases it, sets it to NULL and raises MemoryError.
            let rc = unsafe { resize(&mut ptr, new_cap as ffi::Py_ssize_t) };
            if rc != 0 || ptr.is_null() {
                return Err(PyErr::fetch(py));
            }
            // SAFETY: on success `ptr` is an owned reference to the (possibly moved) object.
            self.obj = unsafe { Bound::from_owned_ptr(py, ptr) }.unbind();
        } else {
            let old = self.as_slice(py).to_vec();
            let fresh = bytes_filled(py, new_cap, |dst| dst[..old.len()].copy_from_slice(&old))?;
            self.obj = fresh.into_any().unbind();
        }
        self.cap = new_cap;
        Ok(())
    }

    pub fn extend(&mut self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.reserve(py, data.len())?;
        // SAFETY: `reserve` guaranteed `cap - len >= data.len()`; the regions cannot overlap
        // because `data` is not inside our private object.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.data_ptr(py).add(self.len),
                data.len(),
            )
        };
        self.len += data.len();
        Ok(())
    }

    /// One `read(2)` into the spare room (at least `want` bytes of it).
    pub fn read_from(
        &mut self,
        py: Python<'_>,
        fd: &OwnedFd,
        want: usize,
    ) -> PyResult<io::Result<usize>> {
        self.reserve(py, want)?;
        let spare = self.cap - self.len;
        loop {
            // SAFETY: the spare room [len, cap) of our private buffer is valid for writes.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    self.data_ptr(py).add(self.len).cast(),
                    spare,
                )
            };
            if n >= 0 {
                self.len += n as usize;
                if n > 0 {
                    self.populate_ahead(py);
                }
                return Ok(Ok(n as usize));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Ok(Err(err));
            }
        }
    }

    /// Faults in the pages the next read will fill, while the pipe's lock is free.
    ///
    /// The first write to a fresh page costs a fault and zeroing the page. When `read(2)` takes
    /// it, it does so inside `copy_to_user` with the pipe's mutex held, and the writer spins on
    /// that mutex meanwhile (perf, 2 GiB from `head`: 37 % of `head`'s samples are
    /// `mutex_spin_on_owner`, our faults 25 % of all samples). Done right after a read, the
    /// writer refills the pipe while we take them. The window is kept small enough for the
    /// zeroed pages to still be in cache when the copy reaches them (see
    /// `streams::reader::populate_window`); `finish` trims what was never filled.
    fn populate_ahead(&mut self, py: Python<'_>) {
        if self.window == 0 {
            return;
        }
        let end = self.cap.min(self.len + self.window);
        let start = self.populated.max(self.len);
        if end <= start {
            return;
        }
        let base = self.data_ptr(py) as usize;
        if super::fd::populate_write(base + start, base + end) {
            self.populated = end;
        }
    }

    /// The finished `bytes`, trimmed to what was written.
    pub fn finish(mut self, py: Python<'_>) -> PyResult<Bound<'_, PyBytes>> {
        if self.len != self.cap {
            self.resize(py, self.len)?;
        }
        Ok(self.obj.into_bound(py).cast_into::<PyBytes>()?)
    }
}
