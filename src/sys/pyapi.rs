//! The CPython C-API reached outside what PyO3 offers: the `am_send` slot (3.10+), which the
//! limited API lets a type read but gives no way to fill in after PyO3 has built the type, and
//! an `am_await` that returns the object itself without a trip through PyO3's trampoline;
//! and an object's reference count.

use std::ffi::{c_int, c_void};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// `obj`'s reference count: 1 means the caller's reference is the only one, so the object can
/// be reused without anyone seeing it change.
pub fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live object (we hold a reference); this only reads its refcount.
    unsafe { ffi::Py_REFCNT(obj.as_ptr()) }
}

/// A type whose instances answer `am_send`: `Ok((true, v))` finishes with `v`, `Ok((false, v))`
/// suspends yielding `v`, `Err` raises.
pub trait SendSlot {
    fn send(obj: &Bound<'_, PyAny>) -> PyResult<(bool, Py<PyAny>)>;
}

const PYGEN_RETURN: c_int = 0;
const PYGEN_ERROR: c_int = -1;
const PYGEN_NEXT: c_int = 1;
const PY_AM_SEND: c_int = 81;

type UnaryFn = unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;
type SendFn =
    unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut *mut ffi::PyObject) -> c_int;

/// `PyAsyncMethods` as CPython 3.10-3.13 lay it out (3.9's ends before `am_send`).
#[repr(C)]
struct AsyncMethods {
    am_await: Option<UnaryFn>,
    am_aiter: *mut c_void,
    am_anext: *mut c_void,
    am_send: Option<SendFn>,
}

/// `tp_as_async` follows `PyObject_VAR_HEAD` and seven pointer-sized fields in `PyTypeObject`
/// (unchanged from 3.5 to 3.13; verified against `PyType_GetSlot` before every use).
const TP_AS_ASYNC_OFFSET: usize =
    3 * std::mem::size_of::<usize>() + 7 * std::mem::size_of::<usize>();

unsafe extern "C" fn send_trampoline<T: SendSlot>(
    slf: *mut ffi::PyObject,
    _arg: *mut ffi::PyObject,
    result: *mut *mut ffi::PyObject,
) -> c_int {
    let outcome = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            // SAFETY: the interpreter passes a live, borrowed reference to the receiver.
            let obj = unsafe { Bound::from_borrowed_ptr(py, slf) };
            match T::send(&obj) {
                Ok((done, v)) => {
                    // SAFETY: `result` is the interpreter's out-pointer; it takes our reference.
                    unsafe { *result = v.into_ptr() };
                    if done {
                        PYGEN_RETURN
                    } else {
                        PYGEN_NEXT
                    }
                }
                Err(e) => {
                    // SAFETY: as above; on error the out-value is NULL.
                    unsafe { *result = std::ptr::null_mut() };
                    e.restore(py);
                    PYGEN_ERROR
                }
            }
        })
    });
    outcome.unwrap_or_else(|_| {
        Python::attach(|py| {
            // SAFETY: as above.
            unsafe { *result = std::ptr::null_mut() };
            pyo3::panic::PanicException::new_err("panic in am_send").restore(py);
        });
        PYGEN_ERROR
    })
}

/// `__await__` of an object that is its own iterator: a new reference to itself. Nothing here
/// can fail or panic, so it needs none of PyO3's per-call set-up.
unsafe extern "C" fn await_self(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: the interpreter passes a live object and holds the GIL; we return a new reference.
    unsafe { ffi::Py_IncRef(slf) };
    slf
}

/// Gives `ty` (a PyO3 class whose `__await__` returns `self`) an `am_send` slot served by `T`
/// and a direct `am_await`, on 3.10+. Returns whether they were installed; without them the
/// interpreter calls `__await__` and `__next__` through PyO3, with the same results.
pub fn install_am_send<T: SendSlot>(ty: &Bound<'_, PyType>) -> bool {
    if ty.py().version_info() < (3, 10) {
        return false;
    }
    let tp = ty.as_type_ptr();
    let send: SendFn = send_trampoline::<T>;
    let await_fn: UnaryFn = await_self;
    // SAFETY: `tp` is a live heap type (PyO3 builds classes with PyType_FromSpec), whose
    // `tp_as_async` points into its own writable PyHeapTypeObject. The field is found by its
    // offset, and used only if what it points at agrees with PyType_GetSlot's `am_await`, so a
    // different layout is detected and left alone. The type is not yet shared with other code
    // that could be reading the slot (called at module init, under the GIL).
    unsafe {
        let want = ffi::PyType_GetSlot(tp, ffi::Py_am_await);
        if want.is_null() {
            return false;
        }
        let am = *((tp as *const u8).add(TP_AS_ASYNC_OFFSET) as *const *mut AsyncMethods);
        if am.is_null()
            || (*am).am_await.map(|f| f as *mut c_void) != Some(want)
            || (*am).am_send.is_some()
        {
            return false;
        }
        (*am).am_send = Some(send);
        (*am).am_await = Some(await_fn);
        ffi::PyType_Modified(tp);
        ffi::PyType_GetSlot(tp, PY_AM_SEND) == send as *mut c_void
    }
}
