//! Event listeners on durable cursors: the `PgEventListener` of this backend.

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use disintegrate::serde::Serde;
use disintegrate::{Event, EventListener};
use tokio::sync::watch;

use crate::{Error, VarveEventStore, to_query};

/// What to do when a listener's `handle` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryAction {
    /// Wait, then handle the event again.
    Wait {
        /// How long.
        duration: Duration,
    },
    /// Give up: the runner stops with [`Error::Listener`](crate::Error), the cursor left before
    /// the event.
    Abort,
    /// Skip the event: the cursor moves past it.
    Skip,
}

type Retry<Err> = Arc<dyn Fn(&Err, usize) -> RetryAction + Send + Sync>;

/// How a listener runs: how often it polls for events written by other processes (events of
/// this process wake it at once), and what it does when `handle` fails.
pub struct ListenerConfig<Err> {
    poll: Duration,
    retry: Retry<Err>,
}

impl<Err> Clone for ListenerConfig<Err> {
    fn clone(&self) -> Self {
        ListenerConfig {
            poll: self.poll,
            retry: Arc::clone(&self.retry),
        }
    }
}

impl<Err> std::fmt::Debug for ListenerConfig<Err> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl<Err> ListenerConfig<Err> {
    /// Polls every `poll`; a failed `handle` is retried after 100 ms, 200 ms, ... up to 5 s,
    /// ten times, and then aborts.
    pub fn poller(poll: Duration) -> Self {
        ListenerConfig {
            poll,
            retry: Arc::new(|_, attempts| {
                if attempts >= 10 {
                    RetryAction::Abort
                } else {
                    let ms = 100u64.saturating_mul(1 << attempts.min(6)).min(5_000);
                    RetryAction::Wait {
                        duration: Duration::from_millis(ms),
                    }
                }
            }),
        }
    }

    /// Decides what a failure does: `retry(error, attempts so far)`.
    pub fn with_retry(
        mut self,
        retry: impl Fn(&Err, usize) -> RetryAction + Send + Sync + 'static,
    ) -> Self {
        self.retry = Arc::new(retry);
        self
    }
}

#[async_trait::async_trait]
trait Runner: Send + Sync {
    async fn run(&self, shutdown: watch::Receiver<bool>) -> Result<(), Error>;
}

struct ListenerRunner<L: EventListener<u64, QE>, QE: Event + Clone, E, S> {
    listener: L,
    store: VarveEventStore<E, S>,
    config: ListenerConfig<L::Error>,
    _event: std::marker::PhantomData<fn() -> QE>,
}

/// The consumer cursor of a listener.
pub fn cursor_name(listener_id: &str) -> String {
    format!("disintegrate:{listener_id}")
}

#[async_trait::async_trait]
impl<L, QE, E, S> Runner for ListenerRunner<L, QE, E, S>
where
    L: EventListener<u64, QE> + 'static,
    L::Error: Display + Send + Sync,
    QE: TryFrom<E> + Event + Clone + Send + Sync + 'static,
    <QE as TryFrom<E>>::Error: Display,
    E: Event + Clone + Send + Sync + 'static,
    S: Serde<E> + Clone + Send + Sync + 'static,
{
    async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let storage = self.store.storage().clone();
        let name = cursor_name(self.listener.id());
        let (query, _) = to_query(self.listener.query());
        let mut changes = storage.subscribe();
        let mut position = storage.consumer_position(&name)?.unwrap_or(0);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            changes.borrow_and_update();
            let Some(varve) = &query else {
                // The listener's query matches nothing: wait for the end.
                let _ = shutdown.changed().await;
                return Ok(());
            };
            let (events, end, more) =
                self.store
                    .read_chunk(self.listener.query(), varve, position + 1, None)?;
            for event in events {
                let seq = event.id();
                let mut attempts = 0;
                loop {
                    match self.listener.handle(event.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            attempts += 1;
                            match (self.config.retry)(&e, attempts) {
                                RetryAction::Wait { duration } => {
                                    tokio::select! {
                                        () = tokio::time::sleep(duration) => {}
                                        _ = shutdown.changed() => return Ok(()),
                                    }
                                }
                                RetryAction::Skip => break,
                                RetryAction::Abort => {
                                    return Err(Error::Listener {
                                        id: self.listener.id(),
                                        seq,
                                        reason: e.to_string(),
                                    });
                                }
                            }
                        }
                    }
                }
                storage.reset_consumer(&name, seq)?;
                position = seq;
            }
            if more {
                continue;
            }
            if end > position {
                storage.reset_consumer(&name, end)?;
                position = end;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = changes.changed() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }
}

/// Runs disintegrate [`EventListener`]s on a store, each from its own durable cursor: the
/// store's consumer `disintegrate:<listener id>` (listed by `varvedb consumers`, with its lag
/// among the store's metrics).
///
/// A listener sees the events matching its query in global order, each once in the normal
/// case; its cursor moves after each handled event, so a crash hands at most the event being
/// handled again (at-least-once, as `PgEventListener`). A failed `handle` follows the
/// listener's [`ListenerConfig`]. Restarted, a listener resumes after its cursor.
pub struct VarveEventListener<E: Event + Clone, S> {
    store: VarveEventStore<E, S>,
    runners: Vec<Box<dyn Runner>>,
}

impl<E: Event + Clone, S> std::fmt::Debug for VarveEventListener<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarveEventListener")
            .field("listeners", &self.runners.len())
            .finish_non_exhaustive()
    }
}

impl<E, S> VarveEventListener<E, S>
where
    E: Event + Clone + Send + Sync + 'static,
    S: Serde<E> + Clone + Send + Sync + 'static,
{
    /// A runner of listeners on `store`.
    pub fn builder(store: VarveEventStore<E, S>) -> Self {
        VarveEventListener {
            store,
            runners: Vec::new(),
        }
    }

    /// Adds a listener, of the store's events or of a sub-enum of them (`QE`).
    pub fn register_listener<L, QE>(mut self, listener: L, config: ListenerConfig<L::Error>) -> Self
    where
        L: EventListener<u64, QE> + 'static,
        L::Error: Display + Send + Sync,
        QE: TryFrom<E> + Event + Clone + Send + Sync + 'static,
        <QE as TryFrom<E>>::Error: Display,
    {
        self.runners.push(Box::new(ListenerRunner {
            listener,
            store: self.store.clone(),
            config,
            _event: std::marker::PhantomData,
        }));
        self
    }

    /// Runs every listener until one fails for good.
    pub async fn start(self) -> Result<(), Error> {
        self.start_with_shutdown(std::future::pending()).await
    }

    /// Runs every listener until `shutdown` completes (each finishes the event it is handling)
    /// or one fails for good.
    pub async fn start_with_shutdown(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let (tx, rx) = watch::channel(false);
        let runs = futures::future::try_join_all(self.runners.iter().map(|r| r.run(rx.clone())));
        tokio::pin!(runs);
        tokio::select! {
            result = &mut runs => result.map(|_| ()),
            () = shutdown => {
                let _ = tx.send(true);
                runs.await.map(|_| ())
            }
        }
    }
}
