//! The thread that owns an embedded store's writes, fed by a bounded queue
//! of requests that each carry where their answer goes. Both embedded
//! stores group-commit on such a thread.

use crate::StoreError;
use std::thread;
use tokio::sync::{mpsc, oneshot};

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) struct WriterThread<R> {
    /// For messages: "the SQLite writer", "the event log writer".
    what: &'static str,
    /// `None` once closed: closing the queue stops the thread.
    requests: Option<mpsc::Sender<R>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<R: Send + 'static> WriterThread<R> {
    /// Start thread `name` running `run` on a queue of `queue` requests;
    /// beyond that, callers wait (backpressure).
    pub fn spawn(
        what: &'static str,
        name: &str,
        queue: usize,
        run: impl FnOnce(mpsc::Receiver<R>) + Send + 'static,
    ) -> Result<WriterThread<R>, StoreError> {
        let (requests, receiver) = mpsc::channel(queue);
        let thread = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(receiver))
            .map_err(|source| StoreError::Io {
                context: format!("starting {what} thread"),
                source,
            })?;
        Ok(WriterThread {
            what,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Queue the request `make` builds around its reply, and wait for the
    /// answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> R) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or_else(|| self.gone())?;
        requests.send(make(reply)).await.map_err(|_| self.gone())?;
        // The writer drops the reply only by dying; queued requests then
        // fail here instead of hanging.
        answer.await.map_err(|_| self.gone())?
    }
}

impl<R> WriterThread<R> {
    /// Close the queue and wait for the thread: it commits what is still
    /// queued and returns. Does nothing the second time.
    pub fn close(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("{} thread panicked", self.what);
            }
        }
    }

    fn gone(&self) -> StoreError {
        StoreError::Backend {
            message: format!("{} thread has stopped", self.what),
            retryable: false,
        }
    }
}

impl<R> Drop for WriterThread<R> {
    fn drop(&mut self) {
        self.close();
    }
}
