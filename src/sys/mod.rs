//! Every raw system call rsubprocess makes, each `unsafe` block with its `// SAFETY:` line.
//!
//! Callers get safe functions returning `io::Result`; nothing else in the crate uses `unsafe`.
//! Calls that glibc 2.17 does not export (`pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`)
//! go through `syscall(2)` so the wheel's glibc floor stays low.
//!
//! What lives where (everything is re-exported here, so callers write `sys::read`,
//! `sys::raw::dup2`, `sys::ChildStack`, ...):
//! - `fd`: descriptors: `own_fd`, non-blocking mode, EINTR-retried `read`/`write`,
//!   `poll_in`, `poll_any_us`, `dup_cloexec`, `pipe_cloexec`, `grow_pipe`, and the spawn slots'
//!   `unique_placeholder`, `dup_at_least`, `dup_owned_at_least`, `dup_onto`, `identity`,
//!   `close_raw`, and an epoll instance of our own (`epoll_create`, `epoll_add_in`, `epoll_del`, `epoll_ready`)
//! - `proc`: processes: pidfds, `kill`, reaping (`reap_nohang`, `reap_blocking`,
//!   `wait_exit_noreap`) and the `Usage` it reports, `returncode_from_siginfo`, `strerror`
//! - `child`: spawning: `clone_vm` on a pooled `ChildStack`, signal masks,
//!   `environ_snapshot`, `max_fd`, `CStrArray` (argv/envp), `child_trampoline`, and `raw`,
//!   the async-signal-safe calls the child makes
//! - `bytes`: `bytes` objects filled in place: `bytes_filled`, `BytesBuilder`
//! - `pyapi`: the CPython C-API beyond PyO3: the `am_send` slot, `refcount`

mod bytes;
mod child;
mod fd;
mod proc;
mod pyapi;

pub use bytes::{bytes_filled, BytesBuilder};
pub use child::{
    block_all_signals, child_stacks_busy, child_trampoline, clone_vm, empty_sigset,
    environ_snapshot, max_fd, raw, restore_signals, CStrArray, ChildStack, NATIVE_SPAWN,
};
pub use fd::{
    at_fork_child, close_raw, dup_at_least, dup_cloexec, dup_onto, dup_owned_at_least,
    epoll_add_in, epoll_create, epoll_del, epoll_ready, grow_pipe, identity, own_fd, pipe_cloexec,
    poll_any_us, poll_in, poll_in_timeout, read, read_into_spare, set_nonblocking,
    unique_placeholder, write,
};
pub use proc::{
    kill, pidfd_open, pidfd_send_signal, reap_blocking, reap_nohang, returncode_from_siginfo,
    strerror, wait_exit_noreap, Usage,
};
pub use pyapi::{install_am_send, refcount, SendSlot};
