//! A pull's progress watchdog: cancelled after `progress_timeout` without a byte.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::ImageError;

/// Last time a pull received bytes or got an answer, and what it is doing now.
#[derive(Clone)]
pub(crate) struct Progress(Arc<ProgressState>);

struct ProgressState {
    last: Mutex<Instant>,
    /// Layer jobs queued behind another pull (same layer) or a download slot.
    waiting: AtomicUsize,
    /// Layer jobs downloading.
    downloading: AtomicUsize,
}

/// Counts a job in one of the states while alive.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self(Arc::new(ProgressState {
            last: Mutex::new(Instant::now()),
            waiting: AtomicUsize::new(0),
            downloading: AtomicUsize::new(0),
        }))
    }

    pub(crate) fn touch(&self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
    }

    /// Time since the last progress. A pull whose only work is queued behind other
    /// pulls is not idle: those have their own watchdogs, and a stalled one frees
    /// what this one waits for when it is cancelled.
    pub(crate) fn idle(&self) -> Duration {
        let queued = self.0.waiting.load(Ordering::SeqCst) > 0
            && self.0.downloading.load(Ordering::SeqCst) == 0;
        if queued {
            self.touch();
            return Duration::ZERO;
        }
        self.0
            .last
            .lock()
            .map(|last| last.elapsed())
            .unwrap_or_default()
    }

    pub(crate) fn waiting(&self) -> Counted<'_> {
        Counted::new(&self.0.waiting)
    }

    pub(crate) fn downloading(&self) -> Counted<'_> {
        Counted::new(&self.0.downloading)
    }
}

/// Runs `work` until it ends or makes no progress for `timeout`.
pub(crate) async fn with_progress_timeout<T>(
    reference: &str,
    progress: &Progress,
    timeout: Duration,
    work: impl Future<Output = Result<T, ImageError>>,
) -> Result<T, ImageError> {
    tokio::pin!(work);
    loop {
        let idle = progress.idle();
        if idle >= timeout {
            return Err(ImageError::ProgressTimeout {
                reference: reference.to_owned(),
                timeout,
            });
        }
        tokio::select! {
            result = &mut work => return result,
            () = tokio::time::sleep(timeout - idle) => {}
        }
    }
}
