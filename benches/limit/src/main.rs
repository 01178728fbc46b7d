//! The raw limit for rsubprocess's benchmarks (`benches/bench.py`).
//!
//! Each workload does the same work as the Python side with direct syscalls and no event loop:
//! `posix_spawn` + `waitpid` for spawning, a `poll`/`read`/`write` pump with large chunks (and
//! pipes enlarged with `F_SETPIPE_SZ`) for bulk transfers, `read` + `memchr` for line counting,
//! blocking `write`/`read` for ping-pong. It prints one line of JSON with the same metric names
//! as the Python workers; a wrong result exits non-zero with a message on stderr.
//!
//! Usage: `limit WORKLOAD ARGS...` (see `main`); bench.py passes the arguments.

use std::ffi::CString;
use std::io::Write;
use std::process::exit;
use std::ptr;
use std::time::Instant;

type Metrics = Vec<(&'static str, f64)>;

fn die(msg: &str) -> ! {
    eprintln!("limit: {msg}");
    exit(1)
}

fn check(ok: bool, msg: impl FnOnce() -> String) {
    if !ok {
        die(&msg());
    }
}

fn errno_msg(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cvt(r: libc::c_int, what: &str) -> libc::c_int {
    if r < 0 {
        die(&errno_msg(what));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

struct Cpu;

fn cpu_now() -> (f64, f64) {
    fn tv(t: libc::timeval) -> f64 {
        t.tv_sec as f64 + t.tv_usec as f64 * 1e-6
    }
    let mut s: libc::rusage = unsafe { std::mem::zeroed() };
    let mut c: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, &mut s);
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut c);
    }
    let own = tv(s.ru_utime) + tv(s.ru_stime);
    (own, own + tv(c.ru_utime) + tv(c.ru_stime))
}

impl Cpu {
    fn start() -> (f64, f64) {
        cpu_now()
    }
    fn metrics(start: (f64, f64), m: &mut Metrics) {
        let end = cpu_now();
        m.push(("cpu_self_s", end.0 - start.0));
        m.push(("cpu_s", end.1 - start.1));
    }
}

fn status_kib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix(field) {
            let v = rest.trim_start_matches(':').split_whitespace().next().unwrap_or("0");
            return v.parse().unwrap_or(0.0);
        }
    }
    0.0
}

/// Reset the peak-RSS mark (VmHWM) to the current RSS and return the current RSS in KiB.
fn rss_baseline() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS")
}

fn rss_growth_mib(baseline_kib: f64) -> f64 {
    (status_kib("VmHWM") - baseline_kib) / 1024.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    // Nearest-rank, as bench.py's percentile().
    let n = sorted.len();
    let k = ((q / 100.0 * n as f64).ceil() as usize).clamp(1, n);
    sorted[k - 1]
}

// ---------------------------------------------------------------------------------------------
// Spawning

extern "C" {
    static environ: *const *mut libc::c_char;
}

struct Child {
    pid: libc::pid_t,
    /// Parent ends: child's stdin (we write), stdout and stderr (we read); -1 when not piped.
    stdin: libc::c_int,
    stdout: libc::c_int,
    stderr: libc::c_int,
}

fn pipe() -> (libc::c_int, libc::c_int) {
    let mut fds = [0; 2];
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe2");
    (fds[0], fds[1])
}

fn enlarge(fd: libc::c_int, size: libc::c_int) {
    if size > 0 {
        // Best effort: F_SETPIPE_SZ may be refused above /proc/sys/fs/pipe-max-size.
        unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
    }
}

/// posix_spawnp `argv` with the requested standard streams piped; other fds are CLOEXEC.
fn spawn(argv: &[&str], stdin: bool, stdout: bool, stderr: bool, pipe_sz: libc::c_int) -> Child {
    let cargs: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<*mut libc::c_char> = cargs.iter().map(|a| a.as_ptr() as *mut _).collect();
    ptrs.push(ptr::null_mut());
    let mut fa: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
    unsafe { libc::posix_spawn_file_actions_init(&mut fa) };
    let mut child = Child { pid: 0, stdin: -1, stdout: -1, stderr: -1 };
    let mut child_ends = Vec::new();
    for (want, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        if !want {
            continue;
        }
        let (r, w) = pipe();
        let (parent, child_end) = if target == 0 { (w, r) } else { (r, w) };
        enlarge(parent, pipe_sz);
        unsafe { libc::posix_spawn_file_actions_adddup2(&mut fa, child_end, target) };
        child_ends.push(child_end);
        match target {
            0 => child.stdin = parent,
            1 => child.stdout = parent,
            _ => child.stderr = parent,
        }
    }
    let rc = unsafe {
        libc::posix_spawnp(&mut child.pid, ptrs[0], &fa, ptr::null(), ptrs.as_ptr(), environ)
    };
    unsafe { libc::posix_spawn_file_actions_destroy(&mut fa) };
    for fd in child_ends {
        unsafe { libc::close(fd) };
    }
    if rc != 0 {
        die(&format!("posix_spawnp {argv:?}: {}", std::io::Error::from_raw_os_error(rc)));
    }
    child
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            die(&errno_msg("waitpid"));
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

fn close(fd: &mut libc::c_int) {
    if *fd >= 0 {
        unsafe { libc::close(*fd) };
        *fd = -1;
    }
}

fn set_nonblocking(fd: libc::c_int) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

fn pin_to(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        cvt(libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set), "sched_setaffinity");
    }
}

// ---------------------------------------------------------------------------------------------
// The pump: write `input` to the child's stdin, collect stdout and stderr, all non-blocking.

const CHUNK: usize = 1 << 20;

/// `LIMIT_POPULATE=N`: after each read, fault in the next N bytes of spare room with
/// `MADV_POPULATE_WRITE`, as rsubprocess's bulk reads do (0, the default: the plain pump the
/// issue specifies). For measuring what that technique is worth to a raw pump too.
fn populate_window() -> usize {
    static W: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *W.get_or_init(|| {
        std::env::var("LIMIT_POPULATE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

fn populate_ahead(buf: &mut Vec<u8>) {
    let window = populate_window();
    if window == 0 {
        return;
    }
    let base = buf.as_mut_ptr() as usize;
    let start = (base + buf.len() + 4095) & !4095;
    let end = (base + buf.capacity().min(buf.len() + window)) & !4095;
    if end > start {
        // Pages we have already faulted are skipped by the kernel almost for free.
        unsafe { libc::madvise(start as *mut _, end - start, 23 /* MADV_POPULATE_WRITE */) };
    }
}

/// Read what `fd` has into `buf`'s spare capacity, growing it; false at EOF.
fn read_some(fd: libc::c_int, buf: &mut Vec<u8>) -> bool {
    loop {
        if buf.capacity() - buf.len() < CHUNK {
            buf.reserve(CHUNK.max(buf.len()));
        }
        let spare = buf.capacity() - buf.len();
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().add(buf.len()) as *mut _, spare) };
        if r > 0 {
            unsafe { buf.set_len(buf.len() + r as usize) };
            populate_ahead(buf);
            continue; // read until EAGAIN
        }
        if r == 0 {
            return false;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return true,
            Some(libc::EINTR) => continue,
            _ => die(&errno_msg("read")),
        }
    }
}

fn pump(child: &mut Child, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut off = 0;
    if child.stdin >= 0 && input.is_empty() {
        close(&mut child.stdin);
    }
    for fd in [child.stdin, child.stdout, child.stderr] {
        if fd >= 0 {
            set_nonblocking(fd);
        }
    }
    loop {
        let mut pfds = Vec::with_capacity(3);
        if child.stdin >= 0 {
            pfds.push(libc::pollfd { fd: child.stdin, events: libc::POLLOUT, revents: 0 });
        }
        for fd in [child.stdout, child.stderr] {
            if fd >= 0 {
                pfds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            }
        }
        if pfds.is_empty() {
            break;
        }
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as _, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            die(&errno_msg("poll"));
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == child.stdin {
                while off < input.len() {
                    let n = (input.len() - off).min(4 * CHUNK);
                    let w = unsafe { libc::write(p.fd, input[off..].as_ptr() as *const _, n) };
                    if w < 0 {
                        match std::io::Error::last_os_error().raw_os_error() {
                            Some(libc::EAGAIN) => break,
                            Some(libc::EINTR) => continue,
                            _ => die(&errno_msg("write")),
                        }
                    }
                    off += w as usize;
                }
                if off == input.len() {
                    close(&mut child.stdin);
                }
            } else if p.fd == child.stdout {
                if !read_some(p.fd, &mut out) {
                    close(&mut child.stdout);
                }
            } else if !read_some(p.fd, &mut err) {
                close(&mut child.stderr);
            }
        }
    }
    (out, err)
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn arg<T: std::str::FromStr>(args: &[String], i: usize, name: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| die(&format!("missing or bad argument {i} ({name})")))
}

/// a / a2: `n` sequential spawn + wait of /bin/true, with `heap` bytes resident.
fn spawn_seq(n: usize, heap: usize) -> Metrics {
    let heap_buf = vec![1u8; heap]; // touched: resident
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let cpu = Cpu::start();
    let t = Instant::now();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let c = spawn(&["/bin/true"], false, false, false, 0);
        let rc = wait(c.pid);
        lat.push(t0.elapsed().as_secs_f64());
        check(rc == 0, || format!("/bin/true exited {rc}"));
    }
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    std::hint::black_box(&heap_buf);
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    m.push(("p50_us", percentile(&lat, 50.0) * 1e6));
    m.push(("p99_us", percentile(&lat, 99.0) * 1e6));
    m.push(("spawns_s", n as f64 / wall));
    m.push(("wall_s", wall));
    m
}

/// b: spawn `n` /bin/true, then wait for all.
fn spawn_concurrent(n: usize) -> Metrics {
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let cpu = Cpu::start();
    let t = Instant::now();
    let pids: Vec<_> = (0..n).map(|_| spawn(&["/bin/true"], false, false, false, 0).pid).collect();
    for pid in pids {
        let rc = wait(pid);
        check(rc == 0, || format!("/bin/true exited {rc}"));
    }
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    m.push(("total_ms", wall * 1e3));
    m.push(("wall_s", wall));
    m
}

fn pattern(size: usize) -> Vec<u8> {
    // The same non-repeating-at-power-of-two pattern as bench.py's pattern().
    let block: Vec<u8> = (0..65537u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    block.iter().copied().cycle().take(size).collect()
}

/// c: `size` bytes through `cat`.
fn cat(size: usize, pipe_sz: libc::c_int) -> Metrics {
    let input = pattern(size);
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let base = rss_baseline();
    let cpu = Cpu::start();
    let t = Instant::now();
    let mut c = spawn(&["cat"], true, true, false, pipe_sz);
    let (out, _) = pump(&mut c, &input);
    let rc = wait(c.pid);
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    let growth = rss_growth_mib(base);
    check(rc == 0, || format!("cat exited {rc}"));
    check(out == input, || format!("cat: {} bytes back, expected {size} identical", out.len()));
    m.push(("mib_s", size as f64 / (1 << 20) as f64 / wall));
    m.push(("rss_mib", growth));
    m.push(("rss_x_out", growth * (1 << 20) as f64 / size as f64));
    m.push(("wall_s", wall));
    m
}

/// d: `size` bytes from `head -c SIZE /dev/zero`; `keep` collects them (d1), else discards (d2).
fn read_zero(size: usize, keep: bool, pipe_sz: libc::c_int) -> Metrics {
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let base = rss_baseline();
    let cpu = Cpu::start();
    let t = Instant::now();
    let sz = size.to_string();
    let mut c = spawn(&["head", "-c", &sz, "/dev/zero"], false, true, false, pipe_sz);
    let (total, kept) = if keep {
        let (out, _) = pump(&mut c, &[]);
        (out.len(), out)
    } else {
        let mut buf = vec![0u8; 4 * CHUNK];
        let mut total = 0;
        loop {
            let r = unsafe { libc::read(c.stdout, buf.as_mut_ptr() as *mut _, buf.len()) };
            if r == 0 {
                break;
            }
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                die(&errno_msg("read"));
            }
            total += r as usize;
        }
        close(&mut c.stdout);
        (total, Vec::new())
    };
    let rc = wait(c.pid);
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    let growth = rss_growth_mib(base);
    check(rc == 0, || format!("head exited {rc}"));
    let zeros = kept.iter().all(|&b| b == 0);
    check(total == size && zeros, || format!("head: {total} bytes, expected {size} zeros"));
    m.push(("mib_s", size as f64 / (1 << 20) as f64 / wall));
    if keep {
        m.push(("rss_mib", growth));
        m.push(("rss_x_out", growth * (1 << 20) as f64 / size as f64));
    }
    m.push(("wall_s", wall));
    m
}

/// e: `seq N`, lines counted with memchr over large reads.
fn lines(n: usize, expected_bytes: usize, pipe_sz: libc::c_int) -> Metrics {
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let cpu = Cpu::start();
    let t = Instant::now();
    let ns = n.to_string();
    let mut c = spawn(&["seq", &ns], false, true, false, pipe_sz);
    let mut buf = vec![0u8; 4 * CHUNK];
    let (mut count, mut total) = (0usize, 0usize);
    loop {
        let r = unsafe { libc::read(c.stdout, buf.as_mut_ptr() as *mut _, buf.len()) };
        if r == 0 {
            break;
        }
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            die(&errno_msg("read"));
        }
        count += memchr::memchr_iter(b'\n', &buf[..r as usize]).count();
        total += r as usize;
    }
    close(&mut c.stdout);
    let rc = wait(c.pid);
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    check(rc == 0, || format!("seq exited {rc}"));
    check(count == n && total == expected_bytes, || {
        format!("seq: {count} lines / {total} bytes, expected {n} / {expected_bytes}")
    });
    m.push(("mlines_s", n as f64 / 1e6 / wall));
    m.push(("wall_s", wall));
    m
}

/// f: `chunks` x 64 KiB on stdout and on stderr, alternating, from the given child command.
fn interleave(chunks: usize, chunk: usize, child: &[&str], pipe_sz: libc::c_int) -> Metrics {
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let base = rss_baseline();
    let cpu = Cpu::start();
    let t = Instant::now();
    let mut c = spawn(child, false, true, true, pipe_sz);
    let (out, err) = pump(&mut c, &[]);
    let rc = wait(c.pid);
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    let growth = rss_growth_mib(base);
    let size = chunks * chunk;
    check(rc == 0, || format!("child exited {rc}"));
    check(out.len() == size && out.iter().all(|&b| b == b'o'), || {
        format!("stdout: {} bytes, expected {size} of 'o'", out.len())
    });
    check(err.len() == size && err.iter().all(|&b| b == b'e'), || {
        format!("stderr: {} bytes, expected {size} of 'e'", err.len())
    });
    let both = 2.0 * size as f64;
    m.push(("mib_s", both / (1 << 20) as f64 / wall));
    m.push(("rss_mib", growth));
    m.push(("rss_x_out", growth * (1 << 20) as f64 / both));
    m.push(("wall_s", wall));
    m
}

/// g: `n` round trips of a 100-byte line through `cat`, blocking write + read.
fn pingpong(n: usize, pin: Option<usize>) -> Metrics {
    if let Some(cpu) = pin {
        pin_to(cpu);
    }
    let warm = spawn(&["/bin/true"], false, false, false, 0);
    check(wait(warm.pid) == 0, || "warm-up /bin/true failed".into());
    let cpu = Cpu::start();
    let t = Instant::now();
    let mut c = spawn(&["cat"], true, true, false, 0);
    let mut buf = [0u8; 4096];
    for i in 0..n {
        let msg = format!("{i:099}\n");
        let w = unsafe { libc::write(c.stdin, msg.as_ptr() as *const _, msg.len()) };
        check(w == msg.len() as isize, || errno_msg("write"));
        let mut got = 0;
        while got == 0 || buf[got - 1] != b'\n' {
            let r = unsafe { libc::read(c.stdout, buf[got..].as_mut_ptr() as *mut _, 4096 - got) };
            check(r > 0, || format!("read returned {r} at round trip {i}"));
            got += r as usize;
        }
        check(&buf[..got] == msg.as_bytes(), || format!("round trip {i}: wrong echo"));
    }
    close(&mut c.stdin);
    let mut rest = [0u8; 16];
    let r = unsafe { libc::read(c.stdout, rest.as_mut_ptr() as *mut _, 16) };
    check(r == 0, || "cat wrote more than it was sent".into());
    close(&mut c.stdout);
    let rc = wait(c.pid);
    let wall = t.elapsed().as_secs_f64();
    let mut m = Metrics::new();
    Cpu::metrics(cpu, &mut m);
    check(rc == 0, || format!("cat exited {rc}"));
    m.push(("rt_us", wall / n as f64 * 1e6));
    m.push(("wall_s", wall));
    m
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let wl = args.first().map(String::as_str).unwrap_or("");
    // Pipe size for the bulk pumps: 256 KiB (capped by pipe-max-size; measured here as good as
    // or better than 64 KiB and 1 MiB with GNU cat's 128 KiB buffer), or LIMIT_PIPE_SZ.
    let max: libc::c_int = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let pipe_sz: libc::c_int = std::env::var("LIMIT_PIPE_SZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| max.min(1 << 18));
    let m = match wl {
        "spawn" => spawn_seq(arg(&args, 1, "n"), arg(&args, 2, "heap bytes")),
        "concurrent" => spawn_concurrent(arg(&args, 1, "n")),
        "cat" => cat(arg(&args, 1, "size"), pipe_sz),
        "read" => read_zero(arg(&args, 1, "size"), arg::<u8>(&args, 2, "keep") != 0, pipe_sz),
        "lines" => lines(arg(&args, 1, "n"), arg(&args, 2, "expected bytes"), pipe_sz),
        "interleave" => {
            let child: Vec<&str> = args[3..].iter().map(String::as_str).collect();
            interleave(arg(&args, 1, "chunks"), arg(&args, 2, "chunk"), &child, pipe_sz)
        }
        "pingpong" => {
            let pin: i64 = arg(&args, 2, "pin cpu or -1");
            pingpong(arg(&args, 1, "n"), usize::try_from(pin).ok())
        }
        _ => die(&format!("unknown workload {wl:?}")),
    };
    let body: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\": {v:.9}")).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{{\"metrics\": {{{}}}}}", body.join(", ")).unwrap();
}
