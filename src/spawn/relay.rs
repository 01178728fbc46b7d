//! Spawning from a parent with a large fd table without copying that table (issue 6).
//!
//! clone() gives the child a copy of the parent's whole fd table, and with `close_fds` the
//! child closes it all again before exec. With thousands of fds open (a pidfd per live child,
//! a server's sockets) that is most of what a spawn costs: +390-470 us per spawn with 3200
//! extra fds, measured for asyncio and rsubprocess alike.
//!
//! Instead the child shares the table (CLONE_FILES) and unshares it first thing with
//! `close_range(lo, ~0, CLOSE_RANGE_UNSHARE)`, which copies only the fds below `lo`
//! (fs/file.c, `__close_range`). The fds the child needs are usually far above `lo`: new pipes
//! land at the top of a dense table. So the parent first duplicates them into *slots*, a few
//! fds that hold a placeholder (a memfd) while idle, reserved at the lowest free numbers by
//! the first spawn that uses them (one whose fds are above the kernel's first 64-entry
//! table): a table that grows to thousands later still has its slots near 64-100. The child
//! moves pass_fds back to their own numbers.
//!
//! The parent must not put the placeholders back before the child has its own table, and it
//! must not wait for that either: with the CPUs busy a new child can wait in a run queue for
//! hundreds of microseconds (measured: waiting in `spawn()` made 1600 concurrent spawns
//! slower, 1119 -> 1626 ms, although each child cost 210 us less CPU). So the child, once
//! unshared, sets a flag per slot in the memory it shares with us and writes one marker byte
//! (`MARKER`) to the error pipe; the loop wakes on that as it would on the exec, and `sweep`
//! puts back every slot whose child is done with it. Until then the parent holds one more
//! copy of each pipe end, so the error pipe reaches EOF only after the sweep (`SpawnJob`
//! sweeps whenever it reads the pipe, and releases a dead child's slots itself).
//!
//! Every fd the child needs goes through a slot, even a low one: the loop goes on while the
//! child still shares the table, and may close its copy of a pipe end by then.
//!
//! A benchmark's probe (`benches/probes/fd_relay.c`) relayed the fds over a socketpair with
//! SCM_RIGHTS instead: that costs ~50 us a spawn; two dup3 calls per fd cost ~1 us.
//!
//! The slots are skipped (the plain copy is used) when close_fds is off (the child must keep
//! every inheritable fd), when fewer are free than the child needs, for good once someone
//! else closed or replaced one of our slot fds, and with `RSUBPROCESS_SPAWN_SLOTS=0`.
//!
//! The parent's own fds for a child (the error pipe's read end, the pidfd) would fill those
//! first 64 entries themselves: the kernel copies at least that table whatever `lo` is
//! (`sane_fdtable_size`), and the child closes every copied fd it does not need again. With
//! 1600 children at once the first 64 were all pidfds and error pipes, and closing them was
//! 35 us of each child's CPU (`perf record -a`: `filp_close` under `close_range`, 38 % of a
//! child's time before exec). So once the table is busy (one of them lands at `HOIST_FROM` or
//! above), `hoist` moves them above the first table and every later spawn takes the slots.
//!
//! `os.fork()` while a slot holds a child's pipe end would give the forked process a copy
//! that nothing there ever closes (a multiprocessing worker would keep a pipe from reaching
//! EOF for as long as it lives). A forked process never uses the pool it inherited (it copies
//! its table as before), so a pthread_atfork handler closes all of the pool's fds there,
//! without the pool's lock (another thread may hold it, and does not exist there): the fds
//! and which slots are filled are also kept in atomics.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::sys;

/// Slots reserved. A piped child takes four (stdin, stdout, stderr, the error pipe), one with
/// inherited stdio takes one; a spawn finding too few free copies instead. A slot is held
/// from the clone until the child first runs, which on a saturated machine can be long. With
/// 1600 spawns at once and 16 slots, 82-573 of them per run found none free (a debug
/// counter), each of those children copying and closing the whole table: the children's time
/// in `close_range` before exec averaged 49 us, against 19 us with 32 (`perf record -a`).
/// Benchmark b at 8x took 8 % less wall time with 32 than with 16 (14 alternating runs
/// each), and 48 no less than 32. Every relayed child copies and closes the idle slots too,
/// so not more.
const SLOTS: usize = 32;

/// Below this, every fd the child needs is in the kernel's first table (64 fds), which is
/// cheap to copy: the slots would buy nothing, and a process that never has a larger table
/// never reserves them. A large table whose new pipes land in a hole below this copies too.
const SMALL_TABLE: i32 = 64;

/// Our fds for a child landing at or above this (and below `SMALL_TABLE`) are moved up: the
/// first table is filling, with fds every relayed child would copy and close again.
const HOIST_FROM: i32 = 16;

/// The slots are not reserved under a soft RLIMIT_NOFILE this low: 33 fds would be a share
/// of it that the program may need.
const MIN_NOFILE: i32 = 256;

/// The byte a relayed child writes to the error pipe once its table is its own (stages are
/// 0-2, so it cannot be mistaken for an error report).
pub const MARKER: u8 = 0xff;

/// Set to 1 by the child using slot `i` once it no longer needs it (it has its own copy).
static DONE: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];

/// The process that reserved the pool (0: none yet). A forked process has a copy of the pool
/// but not of the threads that may hold its lock, so it must not use it.
static OWNER_PID: AtomicU32 = AtomicU32::new(0);
/// 0: not reserved yet; 1: being reserved or done (tried once per process).
static INIT_STATE: AtomicU8 = AtomicU8::new(0);
/// What the fork handler needs, readable without the lock: the placeholder, its identity, the
/// slot fds, and (bit i) whether slot i may hold a child's fd: set before it is filled,
/// cleared once it holds the placeholder again.
static MASTER_FD: AtomicI32 = AtomicI32::new(-1);
static MASTER_ID: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static SLOT_FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static HELD: AtomicU32 = AtomicU32::new(0);
/// Set once `hoist` has moved an fd: the first table no longer tells whether the table is big.
static HOISTED: AtomicBool = AtomicBool::new(false);

/// Whether this process reserved the pool (not a forked copy of one that did).
fn pool_is_ours() -> bool {
    OWNER_PID.load(Ordering::Acquire) == std::process::id()
}

/// In the forked process (its only thread): it never uses the pool it inherited, so it gets
/// none of its fds, above all no slot still holding a copy of the parent's child's pipe end.
/// Only async-signal-safe calls (fstat, close).
extern "C" fn after_fork_child() {
    let master = MASTER_FD.load(Ordering::Acquire);
    if master < 0 {
        return;
    }
    let id = (
        MASTER_ID[0].load(Ordering::Relaxed),
        MASTER_ID[1].load(Ordering::Relaxed),
    );
    let held = HELD.load(Ordering::Acquire);
    for (i, slot) in SLOT_FDS.iter().enumerate() {
        let fd = slot.load(Ordering::Relaxed);
        // A filled slot is ours whatever it holds; an idle one only if it still holds the
        // placeholder (someone else may have closed and reused the number).
        if fd >= 0 && (held & (1 << i) != 0 || sys::identity(fd) == Some(id)) {
            sys::close_raw(fd);
        }
    }
    if sys::identity(master) == Some(id) {
        sys::close_raw(master);
    }
    HELD.store(0, Ordering::Release);
    MASTER_FD.store(-1, Ordering::Release);
}

/// What a relayed child does, prepared by the parent (the child only reads it).
#[derive(Debug, PartialEq, Eq)]
pub struct Relay {
    /// The child's private table holds fds `< lo` only.
    pub lo: u32,
    /// (slot, target): pass_fds, put back at their own numbers.
    pub moves: Vec<(i32, i32)>,
    /// The stdio sources and error pipe as the child sees them after the unshare.
    pub stdin: i32,
    pub stdout: i32,
    pub stderr: i32,
    pub errpipe_write: i32,
    /// `keep_fds` as the child sees them: sorted, the error pipe at its slot.
    pub keep_fds: Vec<i32>,
    /// Indices of the slots used, whose `DONE` flags the child sets.
    pub slots: Vec<usize>,
}

impl Relay {
    /// The child's side, after the unshare: the slots are ours to give back.
    pub fn mark_done(&self) {
        for &i in &self.slots {
            DONE[i].store(1, Ordering::Release);
        }
    }
}

/// Which needed fd goes into which slot: the `Relay` and the parent's `(fd, slot index)`
/// copies to make. `free` holds (index, fd) of free slots; `reserved` every fd of ours.
/// `None` when more fds need a slot than are free, or a needed fd is one of ours (a caller
/// passing one of our fds gets the plain copy, which behaves as before).
pub fn plan(
    lo: i32,
    free: &[(usize, i32)],
    reserved: &[i32],
    stdio: [i32; 3],
    errpipe: i32,
    keep: &[i32],
) -> Option<(Relay, Vec<(i32, usize)>)> {
    let needed = stdio.iter().chain(keep).chain(std::iter::once(&errpipe));
    if needed.clone().any(|fd| reserved.contains(fd)) {
        return None;
    }
    let mut fills: Vec<(i32, (usize, i32))> = Vec::new();
    let mut slot_for = |fd: i32| -> Option<i32> {
        if fd < 0 {
            return Some(fd);
        }
        if let Some(&(_, (_, s))) = fills.iter().find(|&&(f, _)| f == fd) {
            return Some(s);
        }
        let slot = *free.get(fills.len())?;
        fills.push((fd, slot));
        Some(slot.1)
    };
    let [stdin, stdout, stderr] = [
        slot_for(stdio[0])?,
        slot_for(stdio[1])?,
        slot_for(stdio[2])?,
    ];
    let errpipe_write = slot_for(errpipe)?;
    let mut moves = Vec::new();
    let mut keep_fds = vec![errpipe_write];
    for &k in keep {
        if k == errpipe {
            continue;
        }
        moves.push((slot_for(k)?, k));
        keep_fds.push(k);
    }
    keep_fds.sort_unstable();
    keep_fds.dedup();
    let relay = Relay {
        lo: lo as u32,
        moves,
        stdin,
        stdout,
        stderr,
        errpipe_write,
        keep_fds,
        slots: fills.iter().map(|&(_, (i, _))| i).collect(),
    };
    Some((
        relay,
        fills.into_iter().map(|(fd, (i, _))| (fd, i)).collect(),
    ))
}

struct Pool {
    /// The placeholder every idle slot duplicates; itself low, so inside `lo` too.
    master: i32,
    slots: [i32; SLOTS],
    /// The lease holding each slot (0: free).
    owner: [u64; SLOTS],
    id: (u64, u64),
    /// One past the highest of `master` and `slots`.
    lo: i32,
    /// Someone else closed or replaced one of our fds: no more leases, and slots in use are
    /// closed, not refilled, when released.
    retired: bool,
}

impl Pool {
    fn ours(&self, fd: i32) -> bool {
        sys::identity(fd) == Some(self.id)
    }

    fn all(&self) -> impl Iterator<Item = i32> + '_ {
        std::iter::once(self.master).chain(self.slots.iter().copied())
    }

    /// Slot `i` holds the placeholder again and is free.
    fn restore(&mut self, i: usize) {
        // Our slot holds the child's copy of a pipe end or pass_fd; from here on it holds the
        // placeholder again, so the parent no longer keeps that file open through it.
        if self.retired || sys::dup_onto(self.master, self.slots[i]).is_err() {
            sys::close_raw(self.slots[i]);
            self.retired = true;
        }
        HELD.fetch_and(!(1 << i), Ordering::Release);
        self.owner[i] = 0;
    }

    /// Puts back every slot whose child has set its flag.
    fn sweep(&mut self) {
        for (i, done) in DONE.iter().enumerate() {
            if self.owner[i] != 0 && done.load(Ordering::Acquire) != 0 {
                self.restore(i);
            }
        }
    }
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
/// 0: not decided yet (`RSUBPROCESS_SPAWN_SLOTS=0` turns them off); 1: off; 2: on.
static ENABLED: AtomicU8 = AtomicU8::new(0);
static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var_os("RSUBPROCESS_SPAWN_SLOTS").is_some_and(|v| v == "0");
            let _ = ENABLED.compare_exchange(
                0,
                if off { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            ENABLED.load(Ordering::Relaxed) == 2
        }
        v => v == 2,
    }
}

/// Reserves the slots, once per process, by the first spawn that would use them (or
/// `set_enabled(true)`), at the lowest free numbers then. Best effort: without them spawns
/// copy. Never blocks: a spawn racing the reservation copies.
fn init() {
    if INIT_STATE
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    if sys::max_fd() < MIN_NOFILE {
        // Tried again by a later spawn: the limit may be raised.
        INIT_STATE.store(0, Ordering::Release);
        return;
    }
    let Ok(mut pool) = POOL.lock() else { return };
    if pool.is_some() {
        return;
    }
    let Ok(master) = sys::unique_placeholder() else {
        return;
    };
    let Some(id) = sys::identity(std::os::fd::AsRawFd::as_raw_fd(&master)) else {
        return;
    };
    let master = std::os::fd::IntoRawFd::into_raw_fd(master);
    let mut slots = [-1; SLOTS];
    for i in 0..SLOTS {
        match sys::dup_at_least(master, 3) {
            Ok(fd) => slots[i] = fd,
            Err(_) => {
                for &fd in &slots[..i] {
                    sys::close_raw(fd);
                }
                sys::close_raw(master);
                return;
            }
        }
    }
    let lo = slots.iter().copied().max().unwrap_or(master).max(master) + 1;
    MASTER_ID[0].store(id.0, Ordering::Relaxed);
    MASTER_ID[1].store(id.1, Ordering::Relaxed);
    for (atomic, &fd) in SLOT_FDS.iter().zip(&slots) {
        atomic.store(fd, Ordering::Relaxed);
    }
    MASTER_FD.store(master, Ordering::Release);
    if sys::at_fork_child(after_fork_child).is_err() {
        // Without the handler a fork could keep a child's pipe open: no slots then.
        for fd in slots.into_iter().chain(std::iter::once(master)) {
            sys::close_raw(fd);
        }
        MASTER_FD.store(-1, Ordering::Release);
        return;
    }
    *pool = Some(Pool {
        master,
        slots,
        owner: [0; SLOTS],
        id,
        lo,
        retired: false,
    });
    OWNER_PID.store(std::process::id(), Ordering::Release);
}

/// Turns the slots off or on (tests and benchmarks compare both ways); returns the old value.
pub fn set_enabled(on: bool) -> bool {
    let was = enabled();
    ENABLED.store(if on { 2 } else { 1 }, Ordering::Relaxed);
    if on {
        init();
    }
    was
}

/// The slot fds (master first), for tests; empty when there are none.
pub fn reserved_fds() -> Vec<i32> {
    if !pool_is_ours() {
        return Vec::new();
    }
    match POOL.lock() {
        Ok(p) => p.as_ref().map(|p| p.all().collect()).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Puts back every slot whose child has its own table now. Cheap (no system call for a slot
/// still in use); called whenever an error pipe is read.
pub fn sweep() {
    if !pool_is_ours() {
        return;
    }
    let Ok(mut guard) = POOL.lock() else { return };
    if let Some(pool) = guard.as_mut() {
        pool.sweep();
    }
}

/// The slots filled for one child. `release` (or dropping it) puts back those the sweep has
/// not: only once the child has its own table or is dead.
#[derive(Debug)]
pub struct Lease {
    id: u64,
    slots: Vec<usize>,
}

impl Lease {
    /// Whether every slot has been put back already.
    pub fn done(&self) -> bool {
        if !pool_is_ours() {
            return true;
        }
        match POOL.lock() {
            Ok(g) => g
                .as_ref()
                .is_none_or(|p| self.slots.iter().all(|&i| p.owner[i] != self.id)),
            Err(_) => true,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !pool_is_ours() {
            return;
        }
        let Ok(mut guard) = POOL.lock() else { return };
        let Some(pool) = guard.as_mut() else { return };
        for &i in &self.slots {
            if pool.owner[i] == self.id {
                pool.restore(i);
            }
        }
    }
}

/// `fd` (ours, kept for a child: never one the child needs) moved above the first table if it
/// landed in its upper part, else as it is (also when no number up there is free).
pub fn hoist(fd: OwnedFd) -> OwnedFd {
    let raw = fd.as_raw_fd();
    if !(HOIST_FROM..SMALL_TABLE).contains(&raw) || !sys::NATIVE_SPAWN || !enabled() {
        return fd;
    }
    match sys::dup_owned_at_least(&fd, SMALL_TABLE) {
        Ok(up) => {
            HOISTED.store(true, Ordering::Relaxed);
            up
        }
        Err(_) => fd,
    }
}

/// Fills slots for a child that will close every fd but `stdio`, `errpipe` and `keep`, or
/// None (spawn with the plain copy).
pub fn lease(stdio: [i32; 3], errpipe: i32, keep: &[i32]) -> Option<(Lease, Relay)> {
    if !sys::NATIVE_SPAWN || !enabled() {
        return None;
    }
    let needed = stdio.iter().chain(keep).chain(std::iter::once(&errpipe));
    if needed.copied().max().unwrap_or(-1) < SMALL_TABLE && !HOISTED.load(Ordering::Relaxed) {
        return None;
    }
    init();
    if !pool_is_ours() {
        return None;
    }
    let mut guard = POOL.lock().ok()?;
    let pool = guard.as_mut()?;
    if pool.retired {
        return None;
    }
    pool.sweep();
    let free: Vec<(usize, i32)> = (0..SLOTS)
        .filter(|&i| pool.owner[i] == 0)
        .map(|i| (i, pool.slots[i]))
        .collect();
    let reserved: Vec<i32> = pool.all().collect();
    let (relay, fills) = plan(pool.lo, &free, &reserved, stdio, errpipe, keep)?;
    // Writing over a number that is no longer ours would destroy someone's fd: check the
    // placeholder and every slot about to be filled (an idle slot holds the placeholder).
    if !pool.ours(pool.master) || fills.iter().any(|&(_, i)| !pool.ours(pool.slots[i])) {
        // Someone closed or replaced one of our fds (a closerange, a dup2). Close the idle
        // ones that are still ours and copy from now on; slots in use stay until released.
        for i in 0..SLOTS {
            if pool.owner[i] == 0 && pool.ours(pool.slots[i]) {
                sys::close_raw(pool.slots[i]);
            }
        }
        if pool.ours(pool.master) {
            sys::close_raw(pool.master);
        }
        pool.retired = true;
        return None;
    }
    let id = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
    for (n, &(fd, i)) in fills.iter().enumerate() {
        DONE[i].store(0, Ordering::Relaxed);
        HELD.fetch_or(1 << i, Ordering::AcqRel);
        if sys::dup_onto(fd, pool.slots[i]).is_err() {
            HELD.fetch_and(!(1 << i), Ordering::Release);
            // Not an fd (EBADF): the plain copy makes the child report it as Popen would.
            for &(_, j) in &fills[..n] {
                pool.restore(j);
            }
            return None;
        }
        pool.owner[i] = id;
    }
    // Created only now, with the pool's lock still held: its drop takes that lock.
    let lease = Lease {
        id,
        slots: relay.slots.clone(),
    };
    Some((lease, relay))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: [(usize, i32); 4] = [(0, 4), (1, 5), (3, 7), (5, 9)];
    const RESERVED: [i32; 7] = [3, 4, 5, 6, 7, 8, 9];

    #[test]
    fn every_fd_goes_through_a_slot_even_a_low_one() {
        // The loop may close a low pipe end before the child unshares: no fd is used in place.
        let (r, fills) = plan(10, &FREE, &RESERVED, [0, 1, 2], 2, &[2]).unwrap();
        assert_eq!(fills, vec![(0, 0), (1, 1), (2, 3)]);
        assert_eq!((r.stdin, r.stdout, r.stderr, r.errpipe_write), (4, 5, 7, 7));
        assert!(r.moves.is_empty());
        assert_eq!(r.keep_fds, vec![7]);
        assert_eq!(r.slots, vec![0, 1, 3]);
    }

    #[test]
    fn shared_sources_share_a_slot_and_none_takes_none() {
        // stdin inherited, stdout and stderr the same pipe end (stderr=STDOUT).
        let (r, fills) = plan(10, &FREE, &RESERVED, [-1, 900, 900], 901, &[901]).unwrap();
        assert_eq!(fills, vec![(900, 0), (901, 1)]);
        assert_eq!(
            (r.stdin, r.stdout, r.stderr, r.errpipe_write),
            (-1, 4, 4, 5)
        );
        assert_eq!(r.keep_fds, vec![5]);
        assert_eq!(r.lo, 10);
        assert_eq!(r.slots, vec![0, 1]);
    }

    #[test]
    fn pass_fds_go_back_to_their_numbers() {
        let (r, fills) = plan(10, &FREE, &RESERVED, [-1, -1, 12], 13, &[2, 12, 13, 5000]).unwrap();
        assert_eq!(fills, vec![(12, 0), (13, 1), (2, 3), (5000, 5)]);
        assert_eq!(r.stderr, 4);
        assert_eq!(r.moves, vec![(7, 2), (4, 12), (9, 5000)]);
        assert_eq!(r.keep_fds, vec![2, 5, 12, 5000]);
    }

    #[test]
    fn exactly_as_many_fds_as_free_slots() {
        assert!(plan(10, &FREE, &RESERVED, [10, 11, 12], 13, &[13]).is_some());
        assert!(plan(10, &FREE, &RESERVED, [10, 11, 12], 13, &[13, 14]).is_none());
        assert!(plan(10, &[], &RESERVED, [-1, -1, -1], 13, &[13]).is_none());
    }

    #[test]
    fn one_of_our_fds_passed_by_the_caller_means_no_relay() {
        assert!(plan(10, &FREE, &RESERVED, [3, 11, 12], 13, &[13]).is_none());
        assert!(plan(10, &FREE, &RESERVED, [-1, 11, 12], 13, &[13, 6]).is_none());
    }
}
