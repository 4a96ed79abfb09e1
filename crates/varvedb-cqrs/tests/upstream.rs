//! cqrs-es's upstream suites, ported to the VarveDB repository: postgres-es's repository tests
//! (`persistence/postgres-es/src/event_repository.rs`) and integration tests (`tests/lib.rs`),
//! and cqrs-es's own `PersistedEventStore` tests (`src/persist/event_store.rs`), which upstream
//! runs against a mock repository and here run against a real store. Each keeps its upstream
//! name; where a scenario needed a seeded database row, the row is written through `persist`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use cqrs_es::doc::{Customer, CustomerEvent};
use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    SemanticVersionEventUpcaster, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::{Aggregate, DomainEvent, EventStore};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use varvedb::{Storage, StorageConfig};
use varvedb_cqrs::VarveEventRepository;

fn repository(dir: &tempfile::TempDir) -> VarveEventRepository {
    VarveEventRepository::new(
        Storage::open(StorageConfig {
            path: dir.path().into(),
            ..Default::default()
        })
        .unwrap(),
    )
}

// ---- postgres-es's test aggregate (`src/testing.rs`) ----

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct TestAggregate {
    id: String,
    description: String,
    tests: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TestEvent {
    Created(Created),
    Tested(Tested),
    SomethingElse(SomethingElse),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Created {
    id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tested {
    test_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SomethingElse {
    description: String,
}

impl DomainEvent for TestEvent {
    fn event_type(&self) -> String {
        match self {
            TestEvent::Created(_) => "Created",
            TestEvent::Tested(_) => "Tested",
            TestEvent::SomethingElse(_) => "SomethingElse",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

impl Aggregate for TestAggregate {
    const TYPE: &'static str = "TestAggregate";
    type Command = ();
    type Event = TestEvent;
    type Error = TestError;
    type Services = ();

    async fn handle(
        &mut self,
        _: (),
        _: &(),
        _: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), TestError> {
        Ok(())
    }

    fn apply(&mut self, event: TestEvent) {
        match event {
            TestEvent::Created(e) => self.id = e.id,
            TestEvent::Tested(e) => self.tests.push(e.test_name),
            TestEvent::SomethingElse(e) => self.description = e.description,
        }
    }
}

fn test_event_envelope(id: &str, sequence: usize, event: TestEvent) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: id.to_string(),
        sequence,
        aggregate_type: TestAggregate::TYPE.to_string(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(&event).unwrap(),
        metadata: json!({}),
    }
}

fn snapshot_context(
    id: String,
    sequence: usize,
    version: usize,
    value: Value,
) -> SerializedSnapshot {
    SerializedSnapshot {
        aggregate_id: id,
        aggregate: value,
        current_sequence: sequence,
        current_snapshot: version,
    }
}

async fn count_stream(repo: &VarveEventRepository, id: Option<&str>) -> usize {
    let mut stream = match id {
        Some(id) => repo.stream_events::<TestAggregate>(id).await.unwrap(),
        None => repo.stream_all_events::<TestAggregate>().await.unwrap(),
    };
    let mut found = 0;
    while stream.next::<TestAggregate>(&[]).await.is_some() {
        found += 1;
    }
    found
}

// ---- postgres-es: src/event_repository.rs ----

#[tokio::test(flavor = "multi_thread")]
async fn event_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let event_repo = repository(&dir);
    let id = "a3a0e1c2-postgres-es-event-repositories".to_string();
    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert!(events.is_empty());

    event_repo
        .persist::<TestAggregate>(
            &[
                test_event_envelope(&id, 1, TestEvent::Created(Created { id: id.clone() })),
                test_event_envelope(
                    &id,
                    2,
                    TestEvent::Tested(Tested {
                        test_name: "a test was run".to_string(),
                    }),
                ),
            ],
            None,
        )
        .await
        .unwrap();
    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert_eq!(2, events.len());
    events.iter().for_each(|e| assert_eq!(&id, &e.aggregate_id));

    // Optimistic lock error
    let result = event_repo
        .persist::<TestAggregate>(
            &[
                test_event_envelope(
                    &id,
                    3,
                    TestEvent::SomethingElse(SomethingElse {
                        description: "this should not persist".to_string(),
                    }),
                ),
                test_event_envelope(
                    &id,
                    2,
                    TestEvent::SomethingElse(SomethingElse {
                        description: "bad sequence number".to_string(),
                    }),
                ),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(result, PersistenceError::OptimisticLockError),
        "invalid error result found during insert: {result}"
    );

    let events = event_repo.get_events::<TestAggregate>(&id).await.unwrap();
    assert_eq!(2, events.len());

    // verify_replay_stream
    assert_eq!(count_stream(&event_repo, Some(&id)).await, 2);
    assert!(count_stream(&event_repo, None).await >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let event_repo = repository(&dir);
    let id = "postgres-es-snapshot-repositories".to_string();
    let snapshot = event_repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(None, snapshot);

    let test_description = "some test snapshot here".to_string();
    let test_tests = vec!["testA".to_string(), "testB".to_string()];
    let value = |description: &str| {
        serde_json::to_value(TestAggregate {
            id: id.clone(),
            description: description.to_string(),
            tests: test_tests.clone(),
        })
        .unwrap()
    };
    event_repo
        .persist::<TestAggregate>(&[], Some((id.clone(), value(&test_description), 1)))
        .await
        .unwrap();

    let snapshot = event_repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 0, 1, value(&test_description))),
        snapshot
    );

    // sequence iterated, does update
    let saved = "a test description that should be saved";
    event_repo
        .persist::<TestAggregate>(&[], Some((id.clone(), value(saved), 2)))
        .await
        .unwrap();

    let snapshot = event_repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 0, 2, value(saved))),
        snapshot
    );

    // sequence out of order or not iterated, does not update
    let result = event_repo
        .persist::<TestAggregate>(
            &[],
            Some((
                id.clone(),
                value("a test description that should not be saved"),
                2,
            )),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(result, PersistenceError::OptimisticLockError),
        "invalid error result found during insert: {result}"
    );

    let snapshot = event_repo.get_snapshot::<TestAggregate>(&id).await.unwrap();
    assert_eq!(
        Some(snapshot_context(id.clone(), 0, 2, value(saved))),
        snapshot
    );
}

// ---- postgres-es: tests/lib.rs ----

async fn simple_es_commit_and_load_test(
    event_store: PersistedEventStore<VarveEventRepository, Customer>,
) {
    let id = "postgres-es-simple-commit-and-load".to_string();
    assert_eq!(0, event_store.load_events(id.as_str()).await.unwrap().len());
    let context = event_store.load_aggregate(id.as_str()).await.unwrap();

    event_store
        .commit(
            vec![
                CustomerEvent::NameAdded {
                    name: "test_event_A".to_string(),
                },
                CustomerEvent::EmailUpdated {
                    new_email: "email A".to_string(),
                },
            ],
            context,
            HashMap::default(),
        )
        .await
        .unwrap();

    assert_eq!(2, event_store.load_events(id.as_str()).await.unwrap().len());
    let context = event_store.load_aggregate(id.as_str()).await.unwrap();

    event_store
        .commit(
            vec![CustomerEvent::EmailUpdated {
                new_email: "email B".to_string(),
            }],
            context,
            HashMap::default(),
        )
        .await
        .unwrap();
    assert_eq!(3, event_store.load_events(id.as_str()).await.unwrap().len());
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_and_load_events() {
    let dir = tempfile::tempdir().unwrap();
    let event_store = PersistedEventStore::<_, Customer>::new_event_store(repository(&dir));
    simple_es_commit_and_load_test(event_store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_and_load_events_snapshot_store() {
    let dir = tempfile::tempdir().unwrap();
    let event_store = PersistedEventStore::<_, Customer>::new_aggregate_store(repository(&dir));
    simple_es_commit_and_load_test(event_store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upcasted_event() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir);
    // postgres-es's init.sql row: a NameAdded of version 1.0, from before it had a name.
    let id = "previous_event_in_need_of_upcast".to_string();
    repo.persist::<Customer>(
        &[SerializedEvent {
            aggregate_id: id.clone(),
            sequence: 1,
            aggregate_type: Customer::TYPE.to_string(),
            event_type: "NameAdded".to_string(),
            event_version: "1.0".to_string(),
            payload: json!({"NameAdded": {}}),
            metadata: json!({}),
        }],
        None,
    )
    .await
    .unwrap();
    let upcaster = SemanticVersionEventUpcaster::new(
        "NameAdded",
        "1.0.1",
        Box::new(|mut event| match event.get_mut("NameAdded").unwrap() {
            Value::Object(object) => {
                object.insert("name".to_string(), Value::String("UNKNOWN".to_string()));
                event
            }
            _ => panic!("not the expected object"),
        }),
    );
    let event_store = PersistedEventStore::<_, Customer>::new_event_store(repo)
        .with_upcasters(vec![Box::new(upcaster)]);

    let result = event_store.load_aggregate(id.as_str()).await.unwrap();
    assert_eq!(1, result.current_sequence);
    assert_eq!(None, result.current_snapshot);
    assert_eq!(result.aggregate.name, "UNKNOWN");
}

// ---- cqrs-es: src/persist/event_store.rs, snapshotted_store_test, on a real repository ----

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
enum TestEvents {
    Started,
    SomethingWasDone,
}

impl DomainEvent for TestEvents {
    fn event_type(&self) -> String {
        match self {
            Self::Started => "Started".to_string(),
            Self::SomethingWasDone => "SomethingWasDone".to_string(),
        }
    }
    fn event_version(&self) -> String {
        EVENT_VERSION.to_string()
    }
}

const EVENT_VERSION: &str = "1.0";
const TEST_AGGREGATE_ID: &str = "test-aggregate-C";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Counter {
    something_happened: usize,
}

impl Aggregate for Counter {
    const TYPE: &'static str = "TestAggregate";
    type Command = ();
    type Event = TestEvents;
    type Error = TestError;
    type Services = ();

    async fn handle(
        &mut self,
        _: (),
        _: &(),
        _: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), TestError> {
        Ok(())
    }

    fn apply(&mut self, event: TestEvents) {
        match event {
            TestEvents::Started => {}
            TestEvents::SomethingWasDone => self.something_happened += 1,
        }
    }
}

fn test_serialized_event(sequence: usize, event: TestEvents) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: TEST_AGGREGATE_ID.to_string(),
        sequence,
        aggregate_type: Counter::TYPE.to_string(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(&event).unwrap(),
        metadata: json!({}),
    }
}

/// A repository holding `events` of the test aggregate and, with them, `snapshot`.
async fn seeded(
    dir: &tempfile::TempDir,
    events: &[SerializedEvent],
    snapshot: Option<(Value, usize)>,
) -> VarveEventRepository {
    let repo = repository(dir);
    repo.persist::<Counter>(
        events,
        snapshot.map(|(value, version)| (TEST_AGGREGATE_ID.to_string(), value, version)),
    )
    .await
    .unwrap();
    repo
}

#[tokio::test(flavor = "multi_thread")]
async fn load() {
    let dir = tempfile::tempdir().unwrap();
    let repo = seeded(
        &dir,
        &[test_serialized_event(1, TestEvents::SomethingWasDone)],
        None,
    )
    .await;
    let store = PersistedEventStore::<_, Counter>::new_snapshot_store(repo, 2);
    let events = store.load_events(TEST_AGGREGATE_ID).await.unwrap();
    let event = events.first().unwrap();
    assert_eq!(1, event.sequence);
    assert_eq!("SomethingWasDone", event.payload.event_type());
    assert_eq!(EVENT_VERSION, event.payload.event_version());
}

#[tokio::test(flavor = "multi_thread")]
async fn load_aggregate_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = PersistedEventStore::<_, Counter>::new_snapshot_store(repository(&dir), 2);
    let snapshot_context = store.load_aggregate(TEST_AGGREGATE_ID).await.unwrap();
    assert_eq!(None, snapshot_context.current_snapshot);
    assert_eq!(0, snapshot_context.current_sequence);
    assert_eq!(TEST_AGGREGATE_ID, snapshot_context.aggregate_id);
    assert_eq!(Counter::default(), snapshot_context.aggregate);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_aggregate_existing() {
    let dir = tempfile::tempdir().unwrap();
    // Three events with a snapshot (version 2) of them, then a fourth after it.
    let repo = seeded(
        &dir,
        &[
            test_serialized_event(1, TestEvents::SomethingWasDone),
            test_serialized_event(2, TestEvents::SomethingWasDone),
            test_serialized_event(3, TestEvents::SomethingWasDone),
        ],
        Some((
            serde_json::to_value(Counter {
                something_happened: 3,
            })
            .unwrap(),
            1,
        )),
    )
    .await;
    repo.persist::<Counter>(
        &[],
        Some((
            TEST_AGGREGATE_ID.to_string(),
            serde_json::to_value(Counter {
                something_happened: 3,
            })
            .unwrap(),
            2,
        )),
    )
    .await
    .unwrap();
    repo.persist::<Counter>(
        &[test_serialized_event(4, TestEvents::SomethingWasDone)],
        None,
    )
    .await
    .unwrap();
    let store = PersistedEventStore::<_, Counter>::new_snapshot_store(repo, 2);
    let snapshot_context = store.load_aggregate(TEST_AGGREGATE_ID).await.unwrap();
    assert_eq!(Some(2), snapshot_context.current_snapshot);
    assert_eq!(4, snapshot_context.current_sequence);
    assert_eq!(TEST_AGGREGATE_ID, snapshot_context.aggregate_id);
    assert_eq!(
        Counter {
            something_happened: 4
        },
        snapshot_context.aggregate
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn load_aggregate_after_deserialize_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = seeded(
        &dir,
        &[
            test_serialized_event(1, TestEvents::SomethingWasDone),
            test_serialized_event(2, TestEvents::SomethingWasDone),
        ],
        Some((json!({"incompatible": "structure"}), 1)),
    )
    .await;
    let store = PersistedEventStore::<_, Counter>::new_snapshot_store(repo, 2);
    let snapshot_context = store.load_aggregate(TEST_AGGREGATE_ID).await.unwrap();
    // The snapshot does not deserialize: the events are applied again instead.
    assert_eq!(None, snapshot_context.current_snapshot);
    assert_eq!(2, snapshot_context.current_sequence);
    assert_eq!(TEST_AGGREGATE_ID, snapshot_context.aggregate_id);
    assert_eq!(
        Counter {
            something_happened: 2
        },
        snapshot_context.aggregate
    );
}

/// Commits `events` on `context` through a snapshot store (a snapshot every 2 events), and
/// returns the stored snapshot's state, sequence and version.
async fn commit_snapshotted(
    events: Vec<TestEvents>,
    context: EventStoreAggregateContext<Counter>,
) -> (Vec<TestEvents>, Option<SerializedSnapshot>) {
    let dir = tempfile::tempdir().unwrap();
    let prior: Vec<SerializedEvent> = (1..=context.current_sequence)
        .map(|s| test_serialized_event(s, TestEvents::Started))
        .collect();
    let snapshot = context
        .current_snapshot
        .filter(|v| *v > 0)
        .map(|v| (json!(Counter::default()), v));
    let repo = seeded(&dir, &prior, snapshot).await;
    let store = PersistedEventStore::<_, Counter>::new_snapshot_store(repo.clone(), 2);
    let envelopes = store
        .commit(events, context, HashMap::default())
        .await
        .unwrap();
    for e in &envelopes {
        assert_eq!(TEST_AGGREGATE_ID, e.aggregate_id);
    }
    let payloads = envelopes.into_iter().map(|e| e.payload).collect();
    let snapshot = repo
        .get_snapshot::<Counter>(TEST_AGGREGATE_ID)
        .await
        .unwrap();
    (payloads, snapshot)
}

fn context(sequence: usize, snapshot: usize) -> EventStoreAggregateContext<Counter> {
    EventStoreAggregateContext {
        aggregate_id: TEST_AGGREGATE_ID.to_string(),
        aggregate: Counter::default(),
        current_sequence: sequence,
        current_snapshot: Some(snapshot),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_one_event() {
    let (events, snapshot) = commit_snapshotted(vec![TestEvents::Started], context(0, 0)).await;
    assert_eq!(events, [TestEvents::Started]);
    assert_eq!(
        snapshot, None,
        "one event is not enough for a snapshot of 2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_one_event_with_previous() {
    let (events, snapshot) =
        commit_snapshotted(vec![TestEvents::SomethingWasDone], context(2, 1)).await;
    assert_eq!(events, [TestEvents::SomethingWasDone]);
    // The snapshot of version 1 that was there stays.
    assert_eq!(snapshot.map(|s| s.current_snapshot), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_three_events() {
    let (events, snapshot) = commit_snapshotted(
        vec![
            TestEvents::Started,
            TestEvents::SomethingWasDone,
            TestEvents::SomethingWasDone,
        ],
        context(0, 0),
    )
    .await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], TestEvents::Started);
    assert_eq!(events[2], TestEvents::SomethingWasDone);
    let snapshot = snapshot.expect("a snapshot");
    assert_eq!(snapshot.current_snapshot, 1);
    assert_eq!(snapshot.current_sequence, 3);
    // The state cqrs-es hands the repository, as upstream's mock sees it.
    assert_eq!(
        snapshot.aggregate,
        json!(Counter {
            something_happened: 1
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_two_with_existing() {
    let (events, snapshot) = commit_snapshotted(
        vec![TestEvents::SomethingWasDone, TestEvents::SomethingWasDone],
        context(1, 1),
    )
    .await;
    assert_eq!(
        events,
        [TestEvents::SomethingWasDone, TestEvents::SomethingWasDone]
    );
    let snapshot = snapshot.expect("a snapshot");
    assert_eq!(snapshot.current_snapshot, 2);
    assert_eq!(snapshot.current_sequence, 3);
    assert_eq!(
        snapshot.aggregate,
        json!(Counter {
            something_happened: 1
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn commit_five() {
    let events = vec![
        TestEvents::Started,
        TestEvents::SomethingWasDone,
        TestEvents::SomethingWasDone,
        TestEvents::SomethingWasDone,
        TestEvents::SomethingWasDone,
    ];
    let (committed, snapshot) = commit_snapshotted(events.clone(), context(0, 0)).await;
    assert_eq!(committed, events);
    let snapshot = snapshot.expect("a snapshot");
    assert_eq!(snapshot.current_snapshot, 1);
    assert_eq!(snapshot.current_sequence, 5);
    assert_eq!(
        snapshot.aggregate,
        json!(Counter {
            something_happened: 3
        })
    );
}
