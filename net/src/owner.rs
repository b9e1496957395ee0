//! One thread owns a piece of state; clonable handles send it work and await the answer.
//!
//! The node's model and the aggregator's global student live in an [`Owner`]: training and
//! checkpoints run on its dedicated thread, never on the async runtime, and no one else can
//! touch the state. Each call is a closure with a `oneshot` reply. The thread ends when the last
//! handle is dropped, after the work already queued; [`Thread::join`] waits for that, so that a
//! shutdown does not return while a checkpoint is still being written.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The owner thread is gone (it panicked, or was never started).
#[derive(Debug, thiserror::Error)]
#[error("the `{0}` thread has stopped")]
pub struct Stopped(pub String);

/// A clonable handle to state owned by a dedicated thread.
pub struct Owner<S> {
    jobs: mpsc::Sender<Job<S>>,
    name: Arc<str>,
}

impl<S> Clone for Owner<S> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone(), name: self.name.clone() }
    }
}

impl<S> std::fmt::Debug for Owner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The owner thread itself, to be joined once every handle is dropped.
#[derive(Debug)]
#[must_use = "an owner thread is joined at shutdown"]
pub struct Thread {
    handle: std::thread::JoinHandle<()>,
    name: Arc<str>,
}

impl Thread {
    /// Waits, off the runtime, until the thread has run the work queued and ended; it ends when
    /// the last [`Owner`] handle is dropped, so drop them first. `Err`: the thread panicked.
    pub async fn join(self) -> Result<(), Stopped> {
        let Self { handle, name } = self;
        match tokio::task::spawn_blocking(move || handle.join()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Stopped(name.to_string())),
        }
    }
}

impl<S: Send + 'static> Owner<S> {
    /// Moves `state` to a new thread named `name`; at most `queue` calls wait in line. The
    /// state is dropped on that thread when it ends.
    pub fn spawn(name: &str, state: S, queue: usize) -> std::io::Result<(Self, Thread)> {
        let (jobs, mut rx) = mpsc::channel::<Job<S>>(queue.max(1));
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let mut state = state;
            while let Some(job) = rx.blocking_recv() {
                job(&mut state);
            }
        })?;
        let name: Arc<str> = name.into();
        Ok((Self { jobs, name: name.clone() }, Thread { handle, name }))
    }

    /// Runs `f` on the owner thread, after the calls queued before it, and returns its result.
    /// If the caller stops waiting, `f` still runs to its end (the state stays consistent).
    pub async fn call<R, F>(&self, f: F) -> Result<R, Stopped>
    where
        R: Send + 'static,
        F: FnOnce(&mut S) -> R + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.jobs.send(job).await.map_err(|_| Stopped(self.name.to_string()))?;
        rx.await.map_err(|_| Stopped(self.name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records, when dropped, what the state held.
    struct Recorder(Vec<u32>, std::sync::mpsc::Sender<Vec<u32>>);

    impl Drop for Recorder {
        fn drop(&mut self) {
            let _ = self.1.send(std::mem::take(&mut self.0));
        }
    }

    #[tokio::test]
    async fn calls_run_in_order_on_one_thread_which_ends_when_the_handles_drop() {
        let (dropped, last) = std::sync::mpsc::channel();
        let (owner, thread) = Owner::spawn("counter", Recorder(Vec::new(), dropped), 4).unwrap();
        let other = owner.clone();
        let main_thread = std::thread::current().id();
        for i in 0..10 {
            let h = if i % 2 == 0 { &owner } else { &other };
            let (len, tid) = h
                .call(move |r| {
                    r.0.push(i);
                    (r.0.len(), std::thread::current().id())
                })
                .await
                .unwrap();
            assert_eq!(len, i as usize + 1);
            assert_ne!(tid, main_thread);
        }
        drop(owner);
        drop(other);
        thread.join().await.unwrap();
        assert_eq!(last.try_recv().unwrap(), (0..10).collect::<Vec<_>>(), "the state was dropped before join returned");
    }

    #[tokio::test]
    async fn a_panicking_call_stops_the_owner_and_later_calls_and_the_join_fail() {
        let (owner, thread) = Owner::spawn("fragile", 0u8, 1).unwrap();
        assert!(owner.call(|_| -> () { panic!("boom") }).await.is_err());
        assert!(owner.call(|s| *s).await.is_err());
        drop(owner);
        assert!(thread.join().await.is_err());
    }
}
