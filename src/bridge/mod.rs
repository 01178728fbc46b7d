//! How Rust meets the event loop: coroutine-shaped awaitables driven by Rust state machines,
//! loop futures as waiters, fd registration with `add_reader`/`add_writer`, and one epoll
//! instance per loop for error pipes and pidfds (`reactor`).
//!
//! Everything here runs on the loop's thread with the GIL held; no thread is involved, so the
//! same code works under asyncio's loops, uvloop, and loops running in non-main threads.

pub mod coro;
pub mod looputil;
pub mod reactor;
pub mod waiter;

pub use coro::{Coro, Op, Poll};
pub use reactor::Reactor;
pub use waiter::Waiter;
