//! Streams: the Rust-backed `StreamReader` (stdout/stderr) and `StreamWriter` (stdin).
//!
//! Both are served on the loop thread: the reader fills a [`buffer::ByteBuf`] from an
//! `add_reader` callback and answers `read*()` from it; the writer writes straight to the pipe
//! when nothing is queued and flushes the rest from an `add_writer` callback.

pub mod buffer;
pub mod reader;
pub mod reader_ops;
pub mod writer;
