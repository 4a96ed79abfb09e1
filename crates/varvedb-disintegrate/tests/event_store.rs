//! The disintegrate backend: disintegrate-postgres's event store scenarios, rewritten for
//! VarveDB, conflicting decisions, listeners and snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use disintegrate::serde::json::Json;
use disintegrate::{
    EventListener, EventSourcedStateStore, EventStore, LoadState, NoSnapshot, PersistedEvent,
    StateQuery, StreamItem, StreamQuery, WithSnapshot, query,
};
use futures::TryStreamExt;
use varvedb::{Storage, StorageConfig};
use varvedb_disintegrate::{
    Error, ListenerConfig, RetryAction, VarveEventListener, VarveEventStore, VarveSnapshotter,
    decision_maker, decision_maker_with_snapshot,
};

type Store = VarveEventStore<DomainEvent, Json<DomainEvent>>;

fn open(dir: &tempfile::TempDir) -> (Storage, Store) {
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let store = VarveEventStore::new(storage.clone(), Json::<DomainEvent>::default());
    (storage, store)
}

async fn read<QE>(store: &Store, query: &StreamQuery<u64, QE>) -> (Vec<(u64, QE)>, u64)
where
    QE: TryFrom<DomainEvent> + disintegrate::Event + Clone + Send + Sync + 'static,
    <QE as TryFrom<DomainEvent>>::Error: std::error::Error + Send + Sync + 'static,
{
    let items: Vec<StreamItem<u64, QE>> = store.stream(query).try_collect().await.unwrap();
    let mut events = Vec::new();
    let mut end = None;
    for item in items {
        match item {
            StreamItem::Event(e) => {
                assert!(end.is_none(), "End is last");
                events.push((e.id(), e.into_inner()));
            }
            StreamItem::End(v) => end = Some(v),
        }
    }
    (events, end.expect("the stream ends with End"))
}

fn course_query(course: &str) -> StreamQuery<u64, CourseEvent> {
    query!(CourseEvent; course_id == course)
}

#[tokio::test]
async fn appended_events_stream_back_by_domain_id_in_order_with_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, store) = open(&dir);
    // An empty store: no events, and version 0.
    assert_eq!(read(&store, &course_query("c1")).await, (vec![], 0));

    let written = store
        .append_without_validation(vec![
            created("c1", 2),
            registered("s1"),
            created("c2", 5),
            subscribed("c1", "s1"),
            subscribed("c2", "s1"),
        ])
        .await
        .unwrap();
    let ids: Vec<u64> = written.iter().map(PersistedEvent::id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5], "event ids are the global sequence");

    let (events, end) = read(&store, &course_query("c1")).await;
    assert_eq!(end, 5, "the version is the log's end when the read began");
    assert_eq!(
        events,
        [
            (
                1,
                CourseEvent::CourseCreated {
                    course_id: "c1".into(),
                    seats: 2
                }
            ),
            (
                4,
                CourseEvent::StudentSubscribed {
                    course_id: "c1".into(),
                    student_id: "s1".into()
                }
            ),
        ]
    );
    // Another stream type over the same events: the student's.
    let (events, _) = read(&store, &query!(StudentEvent; student_id == "s1")).await;
    assert_eq!(
        events.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [2, 4, 5]
    );
    // Two domain ids: each must match where the event's type declares it (as on Postgres),
    // so c2's CourseCreated comes too, which has no student_id.
    let both: StreamQuery<u64, CourseEvent> =
        query!(CourseEvent; course_id == "c2", student_id == "s1");
    let (events, _) = read(&store, &both).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[0].1, CourseEvent::CourseCreated { course_id, .. } if course_id == "c2")
    );
    // An origin skips what came before it; excluded events are left out.
    let (events, _) = read(&store, &course_query("c1").change_origin(1)).await;
    assert_eq!(events.len(), 1);
    let (events, _) = read(
        &store,
        &course_query("c1").exclude_events(&["StudentSubscribed"]),
    )
    .await;
    assert_eq!(events.len(), 1);
    // All events of a stream type, without a domain id.
    let (events, _) = read(&store, &query!(CourseEvent)).await;
    assert_eq!(events.len(), 4);

    // Domain ids are tags in the store.
    let txn = storage.read_txn().unwrap();
    let raw = storage.raw_reader().get(&txn, 4).unwrap().unwrap();
    assert_eq!(
        raw.tags().collect::<Vec<_>>(),
        ["course_id=c1", "student_id=s1"]
    );
    assert_eq!(raw.event_type(), "StudentSubscribed");
    drop(txn);
    assert!(storage.verify().unwrap().is_clean());
}

#[tokio::test]
async fn an_append_fails_when_the_query_changed_after_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, store) = open(&dir);
    store
        .append_without_validation(vec![created("c1", 1), registered("s1"), registered("s2")])
        .await
        .unwrap();
    let query = course_query("c1");
    let (_, version) = read(&store, &query).await;
    // A decision made at `version` appends.
    store
        .append(vec![subscribed("c1", "s1")], query.clone(), version)
        .await
        .unwrap();
    // Another made at the same version is stale: the course changed.
    let err = store
        .append(vec![subscribed("c1", "s2")], query.clone(), version)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Concurrency { after, seq: 4 } if after == version),
        "{err}"
    );
    assert_eq!(storage.last_seq(&storage.read_txn().unwrap()).unwrap(), 4);
    // Events outside the query do not make it stale.
    let (_, version) = read(&store, &query).await;
    store
        .append_without_validation(vec![registered("s3"), created("c2", 1)])
        .await
        .unwrap();
    store
        .append(vec![subscribed("c1", "s2")], query, version)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_decision_is_made_refused_and_conflicts_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, store) = open(&dir);
    store
        .append_without_validation(vec![created("c1", 1), registered("s1"), registered("s2")])
        .await
        .unwrap();
    let maker = decision_maker(store.clone(), NoSnapshot);
    let made = maker.make(Subscribe::new("c1", "s1")).await.unwrap();
    assert_eq!(made[0].id(), 4);
    // The course is full, or there is none: domain errors.
    let full = maker.make(Subscribe::new("c1", "s2")).await;
    assert_eq!(domain_error(full), Some(SubscribeError::Full));
    let missing = maker.make(Subscribe::new("c9", "s2")).await;
    assert_eq!(domain_error(missing), Some(SubscribeError::NoCourse));
}

/// Eight tasks subscribe forty students to a course of ten seats through the decision maker,
/// retrying on conflicts. The course never overfills: without the check in the commit, decisions
/// made on the same state would all append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_decisions_never_overfill_a_course() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, store) = open(&dir);
    let mut setup = vec![created("c1", 10)];
    setup.extend((0..40).map(|i| registered(&format!("s{i}"))));
    store.append_without_validation(setup).await.unwrap();
    let conflicts = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        let conflicts = Arc::clone(&conflicts);
        tasks.push(tokio::spawn(async move {
            let maker = decision_maker(store, NoSnapshot);
            let mut accepted = 0;
            for i in 0..5 {
                let student = format!("s{}", t * 5 + i);
                loop {
                    match maker.make(Subscribe::new("c1", &student)).await {
                        Ok(_) => {
                            accepted += 1;
                            break;
                        }
                        Err(disintegrate::DecisionError::Domain(SubscribeError::Full)) => break,
                        Err(disintegrate::DecisionError::StateStore(e))
                            if matches!(
                                e.downcast_ref::<Error>(),
                                Some(Error::Concurrency { .. })
                            ) =>
                        {
                            *conflicts.lock().unwrap() += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 10);
    let (events, _) = read(&store, &course_query("c1")).await;
    assert_eq!(events.len(), 11, "the course and its ten subscriptions");
    eprintln!("conflicts: {}", conflicts.lock().unwrap());
}

/// Counts what it sees; fails on the events named in `fail_first` the given number of times.
struct Counter {
    query: StreamQuery<u64, CourseEvent>,
    seen: Arc<Mutex<Vec<u64>>>,
    failures: Arc<Mutex<u32>>,
}

#[async_trait::async_trait]
impl EventListener<u64, CourseEvent> for Counter {
    type Error = String;

    fn id(&self) -> &'static str {
        "course-counter"
    }

    fn query(&self) -> &StreamQuery<u64, CourseEvent> {
        &self.query
    }

    async fn handle(&self, event: PersistedEvent<u64, CourseEvent>) -> Result<(), String> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(format!("refusing {} once more", event.id()));
        }
        self.seen.lock().unwrap().push(event.id());
        Ok(())
    }
}

async fn wait_until(what: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !what() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_follows_retries_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, store) = open(&dir);
    store
        .append_without_validation(vec![created("c1", 5), registered("s1"), created("c2", 5)])
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(2));
    let counter = || Counter {
        query: query!(CourseEvent),
        seen: Arc::clone(&seen),
        failures: Arc::clone(&failures),
    };
    let config = || {
        ListenerConfig::poller(Duration::from_millis(20)).with_retry(|_, attempts| {
            if attempts < 5 {
                RetryAction::Wait {
                    duration: Duration::from_millis(1),
                }
            } else {
                RetryAction::Abort
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(
        VarveEventListener::builder(store.clone())
            .register_listener(counter(), config())
            .start_with_shutdown(async {
                let _ = stopped.await;
            }),
    );
    wait_until(|| seen.lock().unwrap().len() == 2).await;
    // It follows new events; the first one failed twice and was retried.
    store
        .append_without_validation(vec![subscribed("c1", "s1"), registered("s2")])
        .await
        .unwrap();
    wait_until(|| seen.lock().unwrap().len() == 3).await;
    assert_eq!(*failures.lock().unwrap(), 0);
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    let cursor = varvedb_disintegrate::cursor_name("course-counter");
    assert_eq!(storage.consumer_position(&cursor).unwrap(), Some(5));

    // Stopped: events come; a new runner resumes after its cursor, with nothing twice.
    store
        .append_without_validation(vec![created("c3", 1)])
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(
        VarveEventListener::builder(store.clone())
            .register_listener(counter(), config())
            .start_with_shutdown(async {
                let _ = stopped.await;
            }),
    );
    wait_until(|| seen.lock().unwrap().len() == 4).await;
    stop.send(()).unwrap();
    runner.await.unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 3, 4, 6]);

    // A handler that keeps failing stops its runner with the event, the cursor before it.
    *failures.lock().unwrap() = 100;
    store
        .append_without_validation(vec![created("c4", 1)])
        .await
        .unwrap();
    let err = VarveEventListener::builder(store.clone())
        .register_listener(counter(), config())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Listener { seq: 7, .. }), "{err}");
    assert_eq!(storage.consumer_position(&cursor).unwrap(), Some(6));
}

#[tokio::test]
async fn snapshots_give_the_same_states_as_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, store) = open(&dir);
    let mut setup = vec![created("c1", 30)];
    setup.extend((0..20).map(|i| registered(&format!("s{i}"))));
    store.append_without_validation(setup).await.unwrap();
    let with = decision_maker_with_snapshot(store.clone(), 3);
    let without = decision_maker(store.clone(), NoSnapshot);
    for i in 0..20 {
        let maker_result = if i % 2 == 0 {
            with.make(Subscribe::new("c1", &format!("s{i}"))).await
        } else {
            without.make(Subscribe::new("c1", &format!("s{i}"))).await
        };
        maker_result.unwrap();
    }
    // Snapshots were written, as JSON events of their own streams.
    let txn = storage.read_txn().unwrap();
    let snapshots = storage
        .raw_reader()
        .read_all(&txn, 1)
        .filter(|e| e.as_ref().unwrap().event_type() == varvedb_disintegrate::SNAPSHOT_EVENT)
        .count();
    drop(txn);
    assert!(snapshots > 0);
    // A state loaded from its snapshot is the state rebuilt from every event.
    let course = Course {
        course_id: "c1".into(),
        ..Default::default()
    };
    let student = Student {
        student_id: "s4".into(),
        ..Default::default()
    };
    let plain = EventSourcedStateStore::new(store.clone(), NoSnapshot);
    let snapped = EventSourcedStateStore::new(
        store.clone(),
        WithSnapshot::new(VarveSnapshotter::new(storage.clone(), 3)),
    );
    let a = plain.load((course.clone(), student.clone())).await.unwrap();
    let b = snapped.load((course.clone(), student)).await.unwrap();
    assert_eq!(a.state(), b.state());
    assert_eq!(a.version(), b.version());
    assert_eq!(a.state().0.subscribed, 20);
    let (events, _) = read(&store, &course.query()).await;
    assert_eq!(events.len(), 21);
    // One more subscription through the snapshotting maker sees 20 taken of 30.
    with.make(Subscribe::new("c1", "s0")).await.unwrap();
    let (events, _) = read(&store, &course_query("c1")).await;
    assert_eq!(events.len(), 22);
    assert!(storage.verify().unwrap().is_clean());
}

/// A state loaded from its snapshot counts the events applied since that snapshot: with a
/// snapshot every 3 events, 30 decisions on one course write about 10 snapshots of it, not
/// one per decision after the third (each an fsynced append).
#[tokio::test]
async fn a_loaded_snapshot_counts_events_from_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, store) = open(&dir);
    let mut setup = vec![created("c1", 100)];
    setup.extend((0..30).map(|i| registered(&format!("s{i}"))));
    store.append_without_validation(setup).await.unwrap();
    let maker = decision_maker_with_snapshot(store.clone(), 3);
    for i in 0..30 {
        maker
            .make(Subscribe::new("c1", &format!("s{i}")))
            .await
            .unwrap();
    }
    let txn = storage.read_txn().unwrap();
    let snapshots = storage
        .raw_reader()
        .read_all(&txn, 1)
        .filter(|e| e.as_ref().unwrap().event_type() == varvedb_disintegrate::SNAPSHOT_EVENT)
        .count();
    assert!(
        (8..=12).contains(&snapshots),
        "{snapshots} snapshots for 30 decisions, one due every 3 events"
    );
    drop(txn);
    // And the snapshotted state is still the state of every event.
    let plain = EventSourcedStateStore::new(store.clone(), NoSnapshot);
    let course = Course {
        course_id: "c1".into(),
        ..Default::default()
    };
    let snapped = EventSourcedStateStore::new(
        store.clone(),
        WithSnapshot::new(VarveSnapshotter::new(storage.clone(), 3)),
    );
    let a = plain.load(course.clone()).await.unwrap();
    let b = snapped.load(course).await.unwrap();
    assert_eq!(a.state(), b.state());
    assert_eq!(a.state().subscribed, 30);
}

/// disintegrate-postgres's scenarios for conflicts, rewritten: two appends on an empty store at
/// version 0 (the second is stale), and a narrower query read before a wider one appended.
#[tokio::test]
async fn concurrency_errors_as_in_the_postgres_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, store) = open(&dir);
    let both = || -> StreamQuery<u64, CourseEvent> {
        query!(CourseEvent; course_id == "c1", student_id == "s1")
    };
    store
        .append(vec![subscribed("c1", "s1")], both(), 0)
        .await
        .unwrap();
    let err = store
        .append(vec![subscribed("c1", "s1")], both(), 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Concurrency { after: 0, seq: 1 }),
        "{err}"
    );

    // Two reads: the course, and the course with the student.
    let (course_events, _) = read(&store, &course_query("c1")).await;
    let (pair_events, _) = read(&store, &both()).await;
    store
        .append(
            vec![subscribed("c1", "s1")],
            course_query("c1"),
            course_events.last().unwrap().0,
        )
        .await
        .unwrap();
    let err = store
        .append(
            vec![subscribed("c1", "s1")],
            both(),
            pair_events.last().unwrap().0,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Concurrency { seq: 2, .. }), "{err}");
}

/// Readers never skip an event: while writers append, every read returns exactly the matching
/// events up to its `End`, as a later read of everything confirms. (disintegrate-postgres
/// tests the same against out-of-order commits; here a snapshot always holds a prefix of the
/// log.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_never_skip_events_while_writers_append() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, store) = open(&dir);
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                let course = if i % 2 == 0 { "c1" } else { "c2" };
                store
                    .append_without_validation(vec![subscribed(course, &format!("s{w}-{i}"))])
                    .await
                    .unwrap();
            }
        }));
    }
    // Read until the writers are done, so that reads overlap the appends.
    let mut reads = Vec::new();
    while !writers.iter().all(|w| w.is_finished()) {
        reads.push(read(&store, &course_query("c1")).await);
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let (all, last) = read(&store, &course_query("c1")).await;
    assert_eq!(all.len(), 200);
    assert!(
        reads.iter().any(|(_, end)| *end > 0 && *end < last),
        "no read came in the middle of the appends"
    );
    for (events, end) in reads {
        let expected: Vec<u64> = all
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id <= &end)
            .collect();
        let got: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
        assert_eq!(got, expected, "a read up to {end}");
    }
}

/// A filter's domain id applies only to the event types that declare it, as in
/// disintegrate-postgres: `course_id == "c1"` over every event reads c1's events and every
/// `StudentRegistered` (which has no `course_id`). Decisions are unchanged: a state applies
/// only what `StreamQuery::matches` accepts, which requires the id on every event.
#[tokio::test]
async fn a_domain_id_filters_only_the_event_types_that_declare_it_as_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, store) = open(&dir);
    store
        .append_without_validation(vec![
            created("c1", 5),
            created("c2", 5),
            registered("s1"),
            registered("s2"),
            subscribed("c1", "s1"),
            subscribed("c2", "s2"),
        ])
        .await
        .unwrap();
    let query: StreamQuery<u64, DomainEvent> = query!(DomainEvent; course_id == "c1");
    let (events, _) = read(&store, &query).await;
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 3, 4, 5], "{events:?}");
    // `matches` keeps only the events that carry course_id c1: what a state applies.
    let items: Vec<StreamItem<u64, DomainEvent>> =
        store.stream(&query).try_collect().await.unwrap();
    let applied: Vec<u64> = items
        .into_iter()
        .filter_map(|item| match item {
            StreamItem::Event(e) if query.matches(&e) => Some(e.id()),
            _ => None,
        })
        .collect();
    assert_eq!(applied, [1, 5]);
    // The same query as an append's condition: a StudentRegistered that came after what the
    // decision read conflicts with it, as on Postgres; with nothing after, the append commits.
    store
        .append(vec![created("c3", 1)], query.clone(), 6)
        .await
        .unwrap();
    store
        .append_without_validation(vec![registered("s3")])
        .await
        .unwrap();
    let err = store
        .append(vec![created("c4", 1)], query.clone(), 7)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Concurrency { .. }), "{err:?}");
    store
        .append(vec![created("c4", 1)], query, 8)
        .await
        .unwrap();
}
