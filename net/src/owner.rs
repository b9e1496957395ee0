//! One thread owns a piece of state; clonable handles send it work and await the answer.
//!
//! The node's model and the aggregator's global student live in an [`Owner`]: training and
//! checkpoints run on its dedicated thread, never on the async runtime, and no one else can
//! touch the state. Each call is a closure with a `oneshot` reply. The thread ends when the last
//! handle is dropped, after the work already queued.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The owner thread is gone (it panicked, or was never started).
#[derive(Debug, thiserror::Error)]
#[error("the `{0}` thread has stopped")]
pub struct Stopped(pub String);

/// A clonable handle to state owned by a dedicated thread.
pub struct Owner<S> {
    jobs: mpsc::Sender<Job<S>>,
    name: std::sync::Arc<str>,
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

impl<S: Send + 'static> Owner<S> {
    /// Moves `state` to a new thread named `name`; at most `queue` calls wait in line.
    pub fn spawn(name: &str, state: S, queue: usize) -> std::io::Result<(Self, JoinHandle<S>)> {
        let (jobs, mut rx) = mpsc::channel::<Job<S>>(queue.max(1));
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let mut state = state;
            while let Some(job) = rx.blocking_recv() {
                job(&mut state);
            }
            state
        })?;
        Ok((Self { jobs, name: name.into() }, thread))
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

    #[tokio::test]
    async fn calls_run_in_order_on_one_thread_and_the_thread_returns_the_state_when_handles_drop() {
        let (owner, thread) = Owner::spawn("counter", Vec::<u32>::new(), 4).unwrap();
        let other = owner.clone();
        let main_thread = std::thread::current().id();
        for i in 0..10 {
            let h = if i % 2 == 0 { &owner } else { &other };
            let (len, tid) = h
                .call(move |v| {
                    v.push(i);
                    (v.len(), std::thread::current().id())
                })
                .await
                .unwrap();
            assert_eq!(len, i as usize + 1);
            assert_ne!(tid, main_thread);
        }
        drop(owner);
        drop(other);
        let state = tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap();
        assert_eq!(state, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_call_stops_the_owner_and_later_calls_fail() {
        let (owner, _thread) = Owner::spawn("fragile", 0u8, 1).unwrap();
        assert!(owner.call(|_| -> () { panic!("boom") }).await.is_err());
        assert!(owner.call(|s| *s).await.is_err());
    }
}
