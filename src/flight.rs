//! Single-flight: at most one background task per resource, shared by every
//! caller that needs its result (the key store's fetches, the client's token
//! requests).
//!
//! The task runs on its own tokio task, so it completes even when every
//! caller stops waiting. Its slot is cleared however the task ends — with a
//! result, a panic, a cancellation or a runtime shutdown — by a guard the
//! task owns: nothing can leave a resource wedged behind a flight that will
//! never land.
//!
//! The task runs on the runtime of the caller that started it. If that is a
//! current-thread runtime that stays alive but is no longer driven, callers
//! joining from other runtimes wait until it is driven again (tokio's
//! semantics for any spawned task); a runtime that shuts down drops the task,
//! and its waiters get [`Lost::Cancelled`] at once.

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// How a flight ended without producing its own result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The task panicked.
    Panicked,
    /// The task was cancelled (runtime shutting down), or no runtime was there to run it.
    Cancelled,
}

/// The shared result of one flight.
pub(crate) type Flight<T, E> = Shared<BoxFuture<'static, Result<T, E>>>;

struct Slot<T, E> {
    /// Incremented for every flight started: a guard clears only its own.
    generation: u64,
    running: Option<Flight<T, E>>,
}

/// One resource's flight slot.
pub(crate) struct SingleFlight<T, E> {
    slot: Arc<Mutex<Slot<T, E>>>,
}

impl<T, E> Default for SingleFlight<T, E> {
    fn default() -> Self {
        SingleFlight {
            slot: Arc::new(Mutex::new(Slot {
                generation: 0,
                running: None,
            })),
        }
    }
}

/// Clears the slot of flight `generation` when dropped: on return, on
/// unwind, and when the task's future is dropped unfinished.
struct ClearOnDrop<T, E> {
    slot: Arc<Mutex<Slot<T, E>>>,
    generation: u64,
}

impl<T, E> Drop for ClearOnDrop<T, E> {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == self.generation {
            slot.running = None;
        }
    }
}

impl<T, E> SingleFlight<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Whether a flight is under way.
    pub(crate) fn is_running(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .is_some()
    }

    /// The flight under way, if any, to join without starting one.
    #[cfg(feature = "client")]
    pub(crate) fn running(&self) -> Option<Flight<T, E>> {
        self.slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running
            .clone()
    }

    /// Join the flight under way, or start `make()` on its own task.
    /// Returns the shared result and whether this call started the flight.
    ///
    /// The slot is cleared just before the result becomes visible, so a
    /// caller that reads state the flight wrote and still needs more can
    /// start the next flight at once. `lost` turns a panic or cancellation
    /// into the error every waiter sees.
    ///
    /// The slot lock is never held while the task is spawned: a runtime that
    /// is shutting down drops the task at once, and its guard must be able to
    /// clear the slot.
    pub(crate) fn join_or_start<F, Fut>(&self, make: F, lost: fn(Lost) -> E) -> (Flight<T, E>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Nothing to run it on: fail this call, leave the slot alone.
            let failed = futures_util::future::ready(Err(lost(Lost::Cancelled)));
            return (failed.boxed().shared(), false);
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, E>>();
        let flight = async move {
            // A dropped sender: the task was dropped unfinished.
            rx.await.unwrap_or_else(|_| Err(lost(Lost::Cancelled)))
        }
        .boxed()
        .shared();
        let generation = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(running) = slot.running.as_ref() {
                return (running.clone(), false);
            }
            slot.generation = slot.generation.wrapping_add(1);
            slot.running = Some(flight.clone());
            slot.generation
        };
        // From here on the guard clears the slot whatever happens, `make`
        // panicking included.
        let guard = ClearOnDrop {
            slot: self.slot.clone(),
            generation,
        };
        let work = make();
        drop(runtime.spawn(async move {
            let result = std::panic::AssertUnwindSafe(work)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(lost(Lost::Panicked)));
            drop(guard);
            let _ = tx.send(result);
        }));
        (flight, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn lost(l: Lost) -> String {
        format!("{l:?}")
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_flight() {
        let flight = SingleFlight::<u32, String>::default();
        let runs = Arc::new(AtomicU32::new(0));
        let start = |runs: Arc<AtomicU32>| {
            flight.join_or_start(
                move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(7)
                },
                lost,
            )
        };
        let (a, started_a) = start(runs.clone());
        let (b, started_b) = start(runs.clone());
        assert!(started_a && !started_b);
        assert!(flight.is_running());
        assert_eq!((a.await, b.await), (Ok(7), Ok(7)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!flight.is_running(), "the slot is cleared after the result");
    }

    #[tokio::test]
    async fn a_panicking_flight_clears_its_slot_and_reports_the_panic() {
        let flight = SingleFlight::<u32, String>::default();
        let (f, _) = flight.join_or_start(
            || async {
                panic!("boom inside the flight");
                #[allow(unreachable_code)]
                Ok(1)
            },
            lost,
        );
        assert_eq!(f.await, Err("Panicked".into()));
        assert!(!flight.is_running(), "a panic must not wedge the slot");
        let (next, started) = flight.join_or_start(|| async { Ok(2) }, lost);
        assert!(started, "the next caller starts a new flight");
        assert_eq!(next.await, Ok(2));
    }

    #[test]
    #[allow(clippy::async_yields_async)] // the flight is awaited on the next runtime
    fn a_flight_cancelled_by_runtime_shutdown_clears_its_slot() {
        let flight = Arc::new(SingleFlight::<u32, String>::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let pending = rt.block_on(async {
            let (f, started) = flight.join_or_start(
                || async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok(1)
                },
                lost,
            );
            assert!(started);
            f
        });
        assert!(flight.is_running());
        drop(rt); // drops the task's future unfinished
        assert!(!flight.is_running(), "shutdown must not wedge the slot");
        let rt2 = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt2.block_on(pending), Err("Cancelled".into()));
        let (next, started) =
            rt2.block_on(async { flight.join_or_start(|| async { Ok(3) }, lost) });
        assert!(started);
        assert_eq!(rt2.block_on(next), Ok(3));
    }

    #[test]
    fn a_runtime_already_shut_down_neither_deadlocks_nor_wedges() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        rt.shutdown_background();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let flight = SingleFlight::<u32, String>::default();
            let _entered = handle.enter();
            // The closing runtime drops the task, at once or from its
            // shutting-down worker a moment later.
            let (f, _) = flight.join_or_start(|| async { Ok(1) }, lost);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let result = loop {
                let r = futures_util::FutureExt::now_or_never(f.clone());
                if r.is_some() || std::time::Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            while flight.is_running() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = done.send((flight.is_running(), result));
        });
        let (running, result) = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("join_or_start deadlocked on a closed runtime");
        assert!(!running, "the slot was cleared");
        assert_eq!(result, Some(Err("Cancelled".into())));
    }

    #[test]
    fn a_panicking_make_clears_the_slot() {
        let flight = SingleFlight::<u32, String>::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            flight.join_or_start::<_, std::future::Ready<Result<u32, String>>>(
                || panic!("make panicked"),
                lost,
            )
        }));
        assert!(r.is_err());
        assert!(!flight.is_running());
    }

    #[test]
    fn no_runtime_is_an_error_not_a_panic_nor_a_wedge() {
        let flight = SingleFlight::<u32, String>::default();
        let (f, started) = flight.join_or_start(|| async { Ok(1) }, lost);
        assert!(!started && !flight.is_running());
        assert_eq!(
            futures_util::FutureExt::now_or_never(f),
            Some(Err("Cancelled".into()))
        );
    }
}
