//! `kill_tree`: signal a child and every descendant still in its tree, without racing forks.
//!
//! Freeze first, then signal: each process found is sent SIGSTOP before its children are
//! listed, so it cannot fork behind our back; passes repeat until a pass finds nobody new
//! (a fork already under way when SIGSTOP arrived completes, and the next pass sees it).
//! A stopped process cannot exit by itself and cannot reap its children, so no pid in the
//! list can be recycled before we signal it. Then everyone gets `sig`, then SIGCONT.
//!
//! What it will not do: reach orphans already reparented to init (or a subreaper): they left
//! the tree. `start_new_session=True` plus `os.killpg` covers those that stay in the group.

use std::collections::HashSet;
use std::fs;

/// Parses the ppid out of a `/proc/<pid>/stat` line (the comm field may contain spaces and
/// parentheses, so parse after the last ')').
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let _state = it.next()?;
    it.next()?.parse().ok()
}

/// Children of `pid` across all its threads, from `/proc/<pid>/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    let mut any = false;
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            any = true;
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    if !any {
        out = children_by_scan(pid);
    }
    out
}

/// Fallback where the `children` files are missing (kernels without CONFIG_PROC_CHILDREN).
fn children_by_scan(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_ppid(&s))
                == Some(pid)
        })
        .collect()
}

/// Signals the tree under `root` (already stopped by the caller through its pidfd).
/// `send(pid, sig)` signals one descendant; returns the descendants signalled with `sig`.
pub fn signal_descendants(root: i32, sig: i32, send: &dyn Fn(i32, i32) -> bool) -> usize {
    let mut seen: HashSet<i32> = HashSet::from([root]);
    let mut order = vec![root];
    loop {
        let mut found = false;
        let mut i = 0;
        while i < order.len() {
            for c in children(order[i]) {
                if seen.insert(c) && send(c, libc::SIGSTOP) {
                    order.push(c);
                    found = true;
                }
            }
            i += 1;
        }
        if !found {
            break;
        }
    }
    let descendants = &order[1..];
    let n = descendants.iter().filter(|&&p| send(p, sig)).count();
    for &p in descendants {
        send(p, libc::SIGCONT);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::parse_ppid;

    #[test]
    fn ppid_after_tricky_comm() {
        assert_eq!(parse_ppid("123 (a b) c) S 45 123 123 0"), Some(45));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }
}
