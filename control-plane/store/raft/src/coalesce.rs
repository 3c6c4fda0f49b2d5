//! Coalescing of identical concurrent work: callers arriving while a round is running wait for
//! the next round and share its result.
//!
//! Used for read indexes: each linearizable read needs *a* leadership confirmation that
//! started after the read arrived, not one of its own, so a thousand concurrent reads cost one
//! quorum round trip.

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Runs rounds of one piece of work for everyone waiting.
pub struct Coalescer<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    running: bool,
    waiters: Vec<oneshot::Sender<T>>,
}

impl<T: Clone + Send + 'static> Coalescer<T> {
    /// An idle coalescer.
    pub fn new() -> Arc<Coalescer<T>> {
        Arc::new(Coalescer {
            state: Mutex::new(State {
                running: false,
                waiters: Vec::new(),
            }),
        })
    }

    /// Waits for the result of a round of `work` that starts after this call. `work` runs on
    /// a spawned task, so a caller that gives up does not strand the others. Returns `None` if
    /// the round's task died.
    pub async fn run<F, Fut>(self: &Arc<Self>, work: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock();
            state.waiters.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    let round = {
                        let mut state = this.state.lock();
                        if state.waiters.is_empty() {
                            state.running = false;
                            return;
                        }
                        std::mem::take(&mut state.waiters)
                    };
                    let result = work().await;
                    for waiter in round {
                        let _ = waiter.send(result.clone());
                    }
                }
            });
        }
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_rounds() {
        let coalescer = Coalescer::<usize>::new();
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let coalescer = coalescer.clone();
            let rounds = rounds.clone();
            tasks.push(tokio::spawn(async move {
                coalescer
                    .run(move || {
                        let rounds = rounds.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            rounds.fetch_add(1, Ordering::SeqCst)
                        }
                    })
                    .await
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        assert!(
            rounds.load(Ordering::SeqCst) <= 3,
            "{} rounds",
            rounds.load(Ordering::SeqCst)
        );
    }
}
