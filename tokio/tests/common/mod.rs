//! Helpers shared by the integration tests (included with `mod common`).
#![allow(dead_code)]

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream that takes and gives at most a scripted number of bytes per call, cycling
/// through `sizes`, so frames arrive and leave in arbitrary pieces.
#[derive(Debug)]
pub struct Chunky<S> {
    pub inner: S,
    pub read_sizes: Vec<usize>,
    pub write_sizes: Vec<usize>,
    pub reads: usize,
    pub writes: usize,
}

impl<S> Chunky<S> {
    pub fn new(inner: S, read_sizes: Vec<usize>, write_sizes: Vec<usize>) -> Self {
        Chunky {
            inner,
            read_sizes,
            write_sizes,
            reads: 0,
            writes: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Chunky<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let size = this.read_sizes[this.reads % this.read_sizes.len()].max(1);
        let limit = size.min(buf.remaining());
        let mut small = ReadBuf::new(buf.initialize_unfilled_to(limit));
        let result = Pin::new(&mut this.inner).poll_read(cx, &mut small);
        let n = small.filled().len();
        if result.is_ready() {
            this.reads += 1;
        }
        buf.advance(n);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Chunky<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let size = this.write_sizes[this.writes % this.write_sizes.len()].max(1);
        let limit = size.min(data.len());
        let result = Pin::new(&mut this.inner).poll_write(cx, &data[..limit]);
        if result.is_ready() {
            this.writes += 1;
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
