//! The repository against cqrs-es 0.5: postgres-es's repository scenarios rewritten for an
//! embedded store (events, last events, snapshots, conflicts, streams, collisions), and a
//! bank account through `CqrsFramework` with concurrent command handlers and a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistedEventStore, PersistenceError, SerializedEvent,
};
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, CqrsFramework, DomainEvent, EventStore,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use varvedb::{Append, AppendOptions, ExpectedVersion, JsonEvent, Storage, StorageConfig, Writer};
use varvedb_cqrs::{CqrsError, VarveEventRepository, stream_of};

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct BankAccount {
    opened: bool,
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum BankEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> String {
        match self {
            BankEvent::Opened { .. } => "AccountOpened",
            BankEvent::Deposited { .. } => "MoneyDeposited",
            BankEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug)]
enum BankCommand {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug)]
struct BankError(String);

impl std::fmt::Display for BankError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BankError {}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankCommand;
    type Event = BankEvent;
    type Error = BankError;
    type Services = ();

    async fn handle(
        &mut self,
        command: BankCommand,
        _: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), BankError> {
        match command {
            BankCommand::Open { owner } => {
                if self.opened {
                    return Err(BankError("already open".into()));
                }
                sink.write(BankEvent::Opened { owner }, self).await;
            }
            BankCommand::Deposit { amount } => {
                sink.write(BankEvent::Deposited { amount }, self).await;
            }
            BankCommand::Withdraw { amount } => {
                if self.balance < amount {
                    return Err(BankError("funds".into()));
                }
                sink.write(BankEvent::Withdrawn { amount }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: BankEvent) {
        match event {
            BankEvent::Opened { .. } => self.opened = true,
            BankEvent::Deposited { amount } => self.balance += amount,
            BankEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap()
}

fn event(id: &str, sequence: usize, payload: serde_json::Value) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: id.into(),
        sequence,
        aggregate_type: BankAccount::TYPE.into(),
        event_type: "MoneyDeposited".into(),
        event_version: "1.0".into(),
        payload,
        metadata: json!({"user": "ada", "time": "2026-11-26T14:00:00Z"}),
    }
}

/// The stored snapshot of aggregate `id`: its state, current sequence and snapshot version.
async fn snapshot_of(repo: &VarveEventRepository, id: &str) -> (serde_json::Value, usize, usize) {
    let snapshot = repo
        .get_snapshot::<BankAccount>(id)
        .await
        .unwrap()
        .expect("a snapshot");
    (
        snapshot.aggregate,
        snapshot.current_sequence,
        snapshot.current_snapshot,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn events_commit_load_and_conflict_as_postgres_es_does() {
    let dir = tempfile::tempdir().unwrap();
    let repo = VarveEventRepository::new(open(&dir));
    let rt = runtime();
    rt.block_on(async {
        let a = [
            event("a", 1, json!({"Opened": {"owner": "ada"}})),
            event("a", 2, json!({"Deposited": {"amount": 10}})),
        ];
        repo.persist::<BankAccount>(&a, None).await.unwrap();
        repo.persist::<BankAccount>(&[event("b", 1, json!({"Deposited": {"amount": 1}}))], None)
            .await
            .unwrap();
        // Everything comes back as it went in.
        assert_eq!(repo.get_events::<BankAccount>("a").await.unwrap(), a);
        assert_eq!(repo.get_events::<BankAccount>("nobody").await.unwrap(), []);
        // The events after sequence 1.
        assert_eq!(
            repo.get_last_events::<BankAccount>("a", 1).await.unwrap(),
            a[1..]
        );
        // A sequence already taken: an optimistic-lock error, and nothing of it written.
        let again = [
            event("a", 2, json!({"Deposited": {"amount": 99}})),
            event("a", 3, json!({"Deposited": {"amount": 99}})),
        ];
        assert!(matches!(
            repo.persist::<BankAccount>(&again, None).await,
            Err(PersistenceError::OptimisticLockError)
        ));
        assert_eq!(repo.get_events::<BankAccount>("a").await.unwrap().len(), 2);
        // A gap is a conflict too: the stream is not at sequence 4.
        assert!(matches!(
            repo.persist::<BankAccount>(&[event("a", 5, json!({}))], None)
                .await,
            Err(PersistenceError::OptimisticLockError)
        ));
        // Events of two aggregates in one commit are refused.
        let mixed = [event("a", 3, json!({})), event("b", 2, json!({}))];
        let b_before = repo.get_events::<BankAccount>("b").await.unwrap().len();
        let refused = repo.persist::<BankAccount>(&mixed, None).await;
        assert!(
            matches!(&refused, Err(PersistenceError::UnknownError(e))
                if e.downcast_ref::<varvedb_cqrs::CqrsError>()
                    .is_some_and(|e| matches!(e, varvedb_cqrs::CqrsError::BadCommit(_)))),
            "{refused:?}"
        );
        // Nothing of it was written.
        assert_eq!(
            repo.get_events::<BankAccount>("b").await.unwrap().len(),
            b_before
        );
        assert_eq!(repo.get_events::<BankAccount>("a").await.unwrap().len(), 2);
    });
}

#[test]
fn snapshots_are_written_with_their_events_and_conflict_on_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let repo = VarveEventRepository::new(open(&dir));
    let rt = runtime();
    rt.block_on(async {
        assert_eq!(repo.get_snapshot::<BankAccount>("a").await.unwrap(), None);
        let events = [
            event("a", 1, json!({"Opened": {"owner": "ada"}})),
            event("a", 2, json!({"Deposited": {"amount": 10}})),
        ];
        let state = json!({"opened": true, "balance": 10});
        repo.persist::<BankAccount>(&events, Some(("a".into(), state.clone(), 1)))
            .await
            .unwrap();
        assert_eq!(snapshot_of(&repo, "a").await, (state, 2, 1));
        // Version 1 again (a concurrent writer won): conflict, and the events of that commit
        // are not written either.
        let more = [event("a", 3, json!({"Deposited": {"amount": 5}}))];
        assert!(matches!(
            repo.persist::<BankAccount>(&more, Some(("a".into(), json!({}), 1)))
                .await,
            Err(PersistenceError::OptimisticLockError)
        ));
        assert_eq!(repo.get_events::<BankAccount>("a").await.unwrap().len(), 2);
        let state = json!({"opened": true, "balance": 15});
        repo.persist::<BankAccount>(&more, Some(("a".into(), state.clone(), 2)))
            .await
            .unwrap();
        assert_eq!(snapshot_of(&repo, "a").await, (state, 3, 2));
    });
}

#[test]
fn streams_replay_one_aggregate_or_a_whole_type_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let repo = VarveEventRepository::new(storage.clone());
    // Another application's events in the same store are not replayed.
    Writer::<JsonEvent>::new(storage.clone())
        .append(9, ExpectedVersion::Auto, &JsonEvent::new("Other", "{}"))
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let mut sequences = [0usize; 7];
        for i in 1..=3000usize {
            let id = format!("acc-{}", i % 7);
            sequences[i % 7] += 1;
            let sequence = sequences[i % 7];
            let payload = json!({"Deposited": {"amount": i}});
            repo.persist::<BankAccount>(&[event(&id, sequence, payload)], None)
                .await
                .unwrap();
        }
        let mut one = repo.stream_events::<BankAccount>("acc-3").await.unwrap();
        let mut seen = Vec::new();
        while let Some(e) = one.next::<BankAccount>(&[]).await {
            seen.push(e.unwrap().sequence);
        }
        assert_eq!(seen, (1..=seen.len()).collect::<Vec<_>>());
        assert_eq!(seen.len(), (1..=3000).filter(|i| i % 7 == 3).count());
        let mut all = repo.stream_all_events::<BankAccount>().await.unwrap();
        let mut amounts = Vec::new();
        while let Some(e) = all.next::<BankAccount>(&[]).await {
            match e.unwrap().payload {
                BankEvent::Deposited { amount } => amounts.push(amount),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(amounts, (1..=3000).collect::<Vec<i64>>());
    });
}

#[test]
fn a_stream_that_names_another_aggregate_is_an_error_not_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let repo = VarveEventRepository::new(storage.clone());
    // Forge a collision: an event of aggregate ("account", "mallory") in the stream of
    // ("account", "alice").
    let stream = stream_of(BankAccount::TYPE, "alice", 0);
    Writer::<JsonEvent>::new(storage)
        .commit(
            Append::event(
                stream,
                ExpectedVersion::NoStream,
                &JsonEvent::new("MoneyDeposited", "{}"),
            )
            .options(
                AppendOptions::new()
                    .metadata(varvedb_cqrs::META_AGGREGATE_TYPE, "account")
                    .metadata(varvedb_cqrs::META_AGGREGATE_ID, "mallory"),
            ),
        )
        .map(|v| v[0])
        .unwrap();
    let rt = runtime();
    rt.block_on(async {
        let read = repo.get_events::<BankAccount>("alice").await.unwrap_err();
        let PersistenceError::UnknownError(e) = read else {
            panic!("{read:?}")
        };
        assert!(matches!(
            e.downcast_ref::<CqrsError>(),
            Some(CqrsError::Collision { .. })
        ));
        let write = repo
            .persist::<BankAccount>(&[event("alice", 2, json!({}))], None)
            .await
            .unwrap_err();
        assert!(matches!(write, PersistenceError::UnknownError(_)));
    });
}

#[test]
fn a_bank_account_through_cqrs_framework_with_concurrent_handlers_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let deposited = {
        let storage = open(&dir);
        // An event store: cqrs-es 0.5.0's snapshot and aggregate stores apply a command's
        // events twice when they take a snapshot (`EventSink::write` applied them already),
        // whatever the backend; the repository's own snapshot tests are above.
        let store = PersistedEventStore::<_, BankAccount>::new_event_store(
            VarveEventRepository::new(storage),
        );
        let cqrs = Arc::new(CqrsFramework::new(store, vec![], ()));
        rt.block_on(async {
            cqrs.execute(
                "acc-1",
                BankCommand::Open {
                    owner: "ada".into(),
                },
            )
            .await
            .unwrap();
            // Opening twice is the aggregate's own error.
            assert!(matches!(
                cqrs.execute(
                    "acc-1",
                    BankCommand::Open {
                        owner: "ada".into()
                    }
                )
                .await,
                Err(AggregateError::UserError(_))
            ));
            // 8 command handlers deposit into one account at once: some conflict, and a
            // conflicting command wrote nothing.
            let mut tasks = Vec::new();
            for t in 0..8i64 {
                let cqrs = cqrs.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut ok, mut conflicts) = (0i64, 0u32);
                    for i in 0..25i64 {
                        let amount = t * 100 + i + 1;
                        match cqrs.execute("acc-1", BankCommand::Deposit { amount }).await {
                            Ok(()) => ok += amount,
                            Err(AggregateError::AggregateConflict) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (ok, conflicts)
                }));
            }
            let mut total = 0;
            let mut conflicts = 0;
            for task in tasks {
                let (ok, c) = task.await.unwrap();
                total += ok;
                conflicts += c;
            }
            assert!(conflicts > 0, "8 handlers on one account never conflicted");
            cqrs.execute("acc-1", BankCommand::Withdraw { amount: 7 })
                .await
                .unwrap();
            total - 7
        })
    };
    // Reopened: the aggregate loads from its events.
    let storage = open(&dir);
    let repo = VarveEventRepository::new(storage);
    let store = PersistedEventStore::<_, BankAccount>::new_event_store(repo.clone());
    rt.block_on(async {
        let mut context = store.load_aggregate("acc-1").await.unwrap();
        assert_eq!(
            *context.aggregate(),
            BankAccount {
                opened: true,
                balance: deposited
            }
        );
        // Every event is there once, in sequence order.
        let events = store.load_events("acc-1").await.unwrap();
        let sequences: Vec<usize> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, (1..=events.len()).collect::<Vec<_>>());
    });
}

/// A view: every account's balance and the number of events it saw.
#[derive(Default)]
struct Balances(std::sync::Mutex<std::collections::HashMap<String, (i64, usize)>>);

#[async_trait::async_trait]
impl cqrs_es::Query<BankAccount> for Arc<Balances> {
    async fn dispatch(&self, aggregate_id: &str, events: &[cqrs_es::EventEnvelope<BankAccount>]) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(aggregate_id.to_owned()).or_default();
        for e in events {
            assert_eq!(e.metadata.get("user").map(String::as_str), Some("ada"));
            if let BankEvent::Deposited { amount } = e.payload {
                entry.0 += amount;
            }
            entry.1 += 1;
        }
    }
}

#[test]
fn a_query_runner_feeds_views_from_a_durable_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let repo = VarveEventRepository::new(storage.clone());
    let rt = runtime();
    let deposit = |id: &str, sequence: usize, amount: i64| {
        event(id, sequence, json!({"Deposited": {"amount": amount}}))
    };
    rt.block_on(async {
        for s in 1..=300usize {
            repo.persist::<BankAccount>(
                &[deposit(&format!("acc-{}", s % 3), s.div_ceil(3), 2)],
                None,
            )
            .await
            .unwrap();
        }
        let view = Arc::new(Balances::default());
        let runner = varvedb_cqrs::QueryRunner::<BankAccount>::new(
            storage.clone(),
            "balances",
            vec![Box::new(view.clone())],
        );
        let position = runner.run_once().await.unwrap();
        assert_eq!(position, 300);
        assert_eq!(view.0.lock().unwrap()["acc-1"], (200, 100));
        assert_eq!(storage.consumer_position("balances").unwrap(), Some(300));

        // A runner of the same name, later (a restart): only the new events.
        repo.persist::<BankAccount>(&[deposit("acc-1", 101, 5)], None)
            .await
            .unwrap();
        let again = Arc::new(Balances::default());
        varvedb_cqrs::QueryRunner::<BankAccount>::new(
            storage.clone(),
            "balances",
            vec![Box::new(again.clone())],
        )
        .run_once()
        .await
        .unwrap();
        assert_eq!(again.0.lock().unwrap()["acc-1"], (5, 1));

        // A following runner sees events as they are committed.
        let live = Arc::new(Balances::default());
        let follower = varvedb_cqrs::QueryRunner::<BankAccount>::new(
            storage.clone(),
            "live",
            vec![Box::new(live.clone())],
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            follower
                .run_until(async {
                    let _ = stopped.await;
                })
                .await
        });
        repo.persist::<BankAccount>(&[deposit("acc-2", 101, 7)], None)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while live.0.lock().unwrap().get("acc-2").map(|e| e.1) != Some(101) {
            assert!(
                std::time::Instant::now() < deadline,
                "the follower fell behind"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().unwrap(), 302);
        assert_eq!(live.0.lock().unwrap()["acc-2"], (207, 101));
    });
}

/// Two findings of the upstream suites (postgres-es, mysql-es, sqlite-es, dynamo-es): a commit
/// that holds a sequence already written is an optimistic-lock error whatever else is wrong
/// with it, and a snapshot update without events is taken, with its own version check.
#[test]
fn a_taken_sequence_conflicts_before_shape_and_a_snapshot_alone_commits() {
    let dir = tempfile::tempdir().unwrap();
    let repo = VarveEventRepository::new(open(&dir));
    let rt = runtime();
    rt.block_on(async {
        let a = [
            event("a", 1, json!({"Opened": {"owner": "ada"}})),
            event("a", 2, json!({"Deposited": {"amount": 10}})),
        ];
        repo.persist::<BankAccount>(&a, None).await.unwrap();
        // [3, 2] after 1 and 2: sequence 2 is taken.
        let out_of_order = [event("a", 3, json!({})), event("a", 2, json!({}))];
        assert!(matches!(
            repo.persist::<BankAccount>(&out_of_order, None).await,
            Err(PersistenceError::OptimisticLockError)
        ));
        assert_eq!(repo.get_events::<BankAccount>("a").await.unwrap(), a);

        // A snapshot alone, then the next version, then that version again.
        let state = json!({"opened": true, "balance": 10});
        repo.persist::<BankAccount>(&[], Some(("a".into(), state.clone(), 1)))
            .await
            .unwrap();
        assert_eq!(snapshot_of(&repo, "a").await, (state, 2, 1));
        let later = json!({"opened": true, "balance": 11});
        repo.persist::<BankAccount>(&[], Some(("a".into(), later.clone(), 2)))
            .await
            .unwrap();
        assert!(matches!(
            repo.persist::<BankAccount>(&[], Some(("a".into(), json!({}), 2)))
                .await,
            Err(PersistenceError::OptimisticLockError)
        ));
        assert_eq!(snapshot_of(&repo, "a").await, (later, 2, 2));
    });
}
