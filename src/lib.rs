//! rsubprocess's native core: `asyncio.subprocess` semantics served from Rust.
//!
//! Table of contents:
//! - `bridge`: coroutine-shaped awaitables and loop plumbing
//! - `streams`: `StreamReader` / `StreamWriter` over pipes (buffer logic in `streams::buffer`)
//! - `spawn`: native clone + exec that never blocks the loop (`spawn::child` is the child side)
//! - `process`: `Process` (exit watch, signals, `wait`, `communicate`)
//! - `errors`: Rust errors -> Python exceptions
//! - `compat`: per-version switches decided in Rust
//! - `sys`: every `unsafe` system call

pub mod bridge;
pub mod compat;
pub mod errors;
pub mod process;
pub mod spawn;
pub mod streams;
pub mod sys;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<bridge::Coro>()?;
    sys::install_am_send::<bridge::Coro>(&py.get_type::<bridge::Coro>());
    m.add_class::<bridge::Waiter>()?;
    m.add_class::<streams::reader::StreamReader>()?;
    m.add_class::<streams::reader::LineIter>()?;
    m.add_class::<streams::writer::StreamWriter>()?;
    m.add_class::<process::Process>()?;
    m.add_function(wrap_pyfunction!(process::watcher::_join_watchers, m)?)?;
    m.add_function(wrap_pyfunction!(streams::_register_stream_types, m)?)?;
    m.add_function(wrap_pyfunction!(streams::args::reader_limit, m)?)?;
    m.add_class::<spawn::SpawnJob>()?;
    m.add_function(wrap_pyfunction!(spawn::spawn, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::native_spawn_available, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::_set_fd_relay, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::_set_exec_gate, m)?)?;
    m.add_function(wrap_pyfunction!(
        bridge::looputil::_register_idle_window,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(spawn::_fd_relay_slots, m)?)?;
    m.add_function(wrap_pyfunction!(spawn::_child_stacks_busy, m)?)?;
    // asyncio.create_task()/ensure_future() accept registered Coroutine types.
    py.import("collections.abc")?
        .getattr("Coroutine")?
        .call_method1("register", (m.getattr("Coro")?,))?;
    Ok(())
}
