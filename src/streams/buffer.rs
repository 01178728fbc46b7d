//! The reader's byte buffer and asyncio's separator search, in pure Rust (no PyO3).
//!
//! `ByteBuf` is a `Vec<u8>` with a read offset: consuming from the front is O(1) and the
//! unread bytes are compacted to the front only when that halves the copy work, so a reader
//! that consumes line by line does not memmove the whole buffer per line.
//! `search` reproduces `StreamReader.readuntil`'s decision table exactly (CPython 3.9-3.13,
//! including 3.13's tuple of separators where the match that *ends* first wins).

use memchr::memmem;

#[derive(Default, Debug)]
pub struct ByteBuf {
    data: Vec<u8>,
    start: usize,
}

impl ByteBuf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.data.extend_from_slice(bytes);
    }

    /// Drops the first `n` unread bytes.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.start += n;
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// A vector whose spare capacity is at least `want` bytes, for reading straight into it
    /// (the caller appends and must keep the unread region intact).
    pub fn spare(&mut self, want: usize) -> &mut Vec<u8> {
        self.make_room(want);
        &mut self.data
    }

    /// Takes all unread bytes out, leaving the buffer empty, without copying when possible.
    pub fn take_all(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.data);
        if self.start > 0 {
            v.drain(..self.start);
        }
        self.start = 0;
        v
    }

    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    fn make_room(&mut self, want: usize) {
        let spare = self.data.capacity() - self.data.len();
        if spare >= want {
            return;
        }
        // Reclaim the consumed prefix instead of growing when it is at least half the buffer:
        // the copy is then no bigger than what a growth would have copied anyway.
        if self.start > 0 && self.start >= self.len() {
            self.data.drain(..self.start);
            self.start = 0;
            if self.data.capacity() - self.data.len() >= want {
                return;
            }
        }
        self.data.reserve(want);
    }
}

/// Outcome of one `readuntil` search over the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Search {
    /// A separator ends at `end` (exclusive) and starts within the limit: return `buf[..end]`.
    Found { end: usize },
    /// A separator was found, but it starts after `limit` bytes: `LimitOverrunError`
    /// ("Separator is found, but chunk is longer than limit", consumed = start).
    FoundOverLimit { start: usize },
    /// No separator and more than `limit` bytes that can no longer contain one:
    /// `LimitOverrunError` ("Separator is not found, and chunk exceed the limit", consumed).
    NotFoundOverLimit { consumed: usize },
    /// No separator yet; search again from `offset` once more data (or EOF) arrives.
    NeedMore { offset: usize },
}

/// One pass of asyncio's `readuntil` loop body over `buf`, starting at `offset` (the value the
/// previous pass returned; 0 at first). `seps` must be non-empty and contain no empty separator.
pub fn search(buf: &[u8], seps: &[&[u8]], offset: usize, limit: usize) -> Search {
    let min_seplen = seps.iter().map(|s| s.len()).min().unwrap_or(1);
    let max_seplen = seps.iter().map(|s| s.len()).max().unwrap_or(1);
    let buflen = buf.len();
    if buflen >= offset && buflen - offset >= min_seplen {
        let mut best: Option<(usize, usize)> = None; // (start, end)
        for sep in seps {
            if let Some(i) = find(&buf[offset..], sep) {
                let start = offset + i;
                let end = start + sep.len();
                if best.is_none_or(|(_, e)| end < e) {
                    best = Some((start, end));
                }
            }
        }
        if let Some((start, end)) = best {
            if start > limit {
                return Search::FoundOverLimit { start };
            }
            return Search::Found { end };
        }
        let next = (buflen + 1).saturating_sub(max_seplen);
        if next > limit {
            return Search::NotFoundOverLimit { consumed: next };
        }
        return Search::NeedMore { offset: next };
    }
    Search::NeedMore { offset }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        memchr::memchr(needle[0], hay)
    } else {
        memmem::find(hay, needle)
    }
}

/// Counts complete lines (ending in `\n`) in `buf`, for bulk line iteration.
pub fn line_ends(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', buf).map(|i| i + 1)
}

/// sysfs's cache size ("1024K", "2M", "512"), in bytes.
pub fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&b| b > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_from_sysfs() {
        assert_eq!(parse_cache_size("1024K\n"), Some(1 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("0K"), None);
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("99999999999999999999G"), None);
    }

    #[test]
    fn bytebuf_consume_and_compact() {
        let mut b = ByteBuf::new();
        b.extend(b"hello world");
        b.consume(6);
        assert_eq!(b.as_slice(), b"world");
        b.extend(&[b'!'; 100]);
        assert_eq!(&b.as_slice()[..6], b"world!");
        assert_eq!(b.len(), 105);
        b.consume(1000);
        assert!(b.is_empty());
        assert_eq!(b.take_all(), Vec::<u8>::new());
    }

    #[test]
    fn take_all_drops_consumed_prefix() {
        let mut b = ByteBuf::new();
        b.extend(b"abcdef");
        b.consume(2);
        assert_eq!(b.take_all(), b"cdef");
        assert!(b.is_empty());
    }

    #[test]
    fn search_found_and_limits() {
        let nl: &[&[u8]] = &[b"\n"];
        assert_eq!(search(b"ab\ncd", nl, 0, 10), Search::Found { end: 3 });
        // A line of exactly `limit` bytes plus its separator is fine.
        assert_eq!(search(b"aaaa\n", nl, 0, 4), Search::Found { end: 5 });
        assert_eq!(
            search(b"aaaaa\n", nl, 0, 4),
            Search::FoundOverLimit { start: 5 }
        );
        assert_eq!(search(b"aaaa", nl, 0, 4), Search::NeedMore { offset: 4 });
        assert_eq!(
            search(b"aaaaa", nl, 0, 4),
            Search::NotFoundOverLimit { consumed: 5 }
        );
        assert_eq!(search(b"", nl, 0, 4), Search::NeedMore { offset: 0 });
    }

    #[test]
    fn search_multibyte_separator_across_reads() {
        let sep: &[&[u8]] = &[b"\r\n"];
        let r = search(b"abc\r", sep, 0, 100);
        assert_eq!(r, Search::NeedMore { offset: 3 });
        assert_eq!(search(b"abc\r\n", sep, 3, 100), Search::Found { end: 5 });
    }

    #[test]
    fn search_tuple_shortest_end_wins() {
        // CPython 3.13: (b'DEF', b'BCDE') on b'ABCDEFG' -> b'ABCDE'.
        let seps: &[&[u8]] = &[b"DEF", b"BCDE"];
        assert_eq!(search(b"ABCDEFG", seps, 0, 100), Search::Found { end: 5 });
    }

    #[test]
    fn line_ends_counts() {
        assert_eq!(line_ends(b"a\nb\n\nc").collect::<Vec<_>>(), vec![2, 4, 5]);
    }
}
