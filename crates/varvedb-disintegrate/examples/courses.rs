//! Course subscriptions with disintegrate on an embedded VarveDB store: decisions on a
//! Dynamic Consistency Boundary (a course and a student), a conflict between two decisions made
//! on the same state, and a listener on a durable cursor.
//!
//! `cargo run -p varvedb-disintegrate --example courses [DIR]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use disintegrate::serde::json::Json;
use disintegrate::{
    Decision, EventListener, EventStore, NoSnapshot, PersistedEvent, StateMutate, StateQuery,
    StreamQuery, query,
};
use serde::{Deserialize, Serialize};
use varvedb::{Storage, StorageConfig};
use varvedb_disintegrate::{ListenerConfig, VarveEventListener, VarveEventStore, decision_maker};

#[derive(Debug, Clone, PartialEq, Eq, disintegrate::Event, Serialize, Deserialize)]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
#[stream(StudentEvent, [StudentRegistered, StudentSubscribed])]
enum DomainEvent {
    CourseCreated {
        #[id]
        course_id: String,
        seats: u32,
    },
    StudentRegistered {
        #[id]
        student_id: String,
    },
    StudentSubscribed {
        #[id]
        course_id: String,
        #[id]
        student_id: String,
    },
}

#[derive(Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(CourseEvent)]
struct Course {
    #[id]
    course_id: String,
    seats: u32,
    subscribed: u32,
}

impl StateMutate for Course {
    fn mutate(&mut self, event: Self::Event) {
        match event {
            CourseEvent::CourseCreated { seats, .. } => self.seats = seats,
            CourseEvent::StudentSubscribed { .. } => self.subscribed += 1,
        }
    }
}

#[derive(Default, StateQuery, Clone, Serialize, Deserialize)]
#[state_query(StudentEvent)]
struct Student {
    #[id]
    student_id: String,
    registered: bool,
}

impl StateMutate for Student {
    fn mutate(&mut self, event: Self::Event) {
        if let StudentEvent::StudentRegistered { .. } = event {
            self.registered = true;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    #[error("the student is not registered")]
    NotRegistered,
    #[error("the course is full")]
    Full,
}

struct Subscribe {
    course_id: String,
    student_id: String,
}

impl Decision for Subscribe {
    type Event = DomainEvent;
    type StateQuery = (Course, Student);
    type Error = SubscribeError;

    fn state_query(&self) -> Self::StateQuery {
        (
            Course {
                course_id: self.course_id.clone(),
                ..Default::default()
            },
            Student {
                student_id: self.student_id.clone(),
                ..Default::default()
            },
        )
    }

    fn process(
        &self,
        (course, student): &Self::StateQuery,
    ) -> Result<Vec<DomainEvent>, SubscribeError> {
        if !student.registered {
            return Err(SubscribeError::NotRegistered);
        }
        if course.subscribed >= course.seats {
            return Err(SubscribeError::Full);
        }
        Ok(vec![DomainEvent::StudentSubscribed {
            course_id: self.course_id.clone(),
            student_id: self.student_id.clone(),
        }])
    }
}

/// A read model: subscriptions counted from a durable cursor.
struct Subscriptions {
    query: StreamQuery<u64, CourseEvent>,
    count: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl EventListener<u64, CourseEvent> for Subscriptions {
    type Error = std::convert::Infallible;

    fn id(&self) -> &'static str {
        "subscriptions"
    }

    fn query(&self) -> &StreamQuery<u64, CourseEvent> {
        &self.query
    }

    async fn handle(&self, event: PersistedEvent<u64, CourseEvent>) -> Result<(), Self::Error> {
        if let CourseEvent::StudentSubscribed { .. } = event.into_inner() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| dir.path().to_path_buf(), Into::into);
    let storage = Storage::open(StorageConfig {
        path: path.clone(),
        ..Default::default()
    })?;
    // The two lines that differ from a Postgres application:
    let event_store = VarveEventStore::new(storage.clone(), Json::<DomainEvent>::default());
    let maker = decision_maker(event_store.clone(), NoSnapshot);

    event_store
        .append_without_validation(vec![
            DomainEvent::CourseCreated {
                course_id: "rust-101".into(),
                seats: 2,
            },
            DomainEvent::StudentRegistered {
                student_id: "ada".into(),
            },
            DomainEvent::StudentRegistered {
                student_id: "alan".into(),
            },
            DomainEvent::StudentRegistered {
                student_id: "grace".into(),
            },
        ])
        .await?;
    for student in ["ada", "alan", "grace"] {
        let made = maker
            .make(Subscribe {
                course_id: "rust-101".into(),
                student_id: student.into(),
            })
            .await;
        match made {
            Ok(events) => println!("{student}: subscribed (event {})", events[0].id()),
            Err(e) => println!("{student}: refused: {e}"),
        }
    }

    // Two decisions on the same state: the second is stale, and the store says so.
    let query: StreamQuery<u64, CourseEvent> = query!(CourseEvent; course_id == "rust-101");
    let version = storage.last_seq(&storage.read_txn()?)?;
    let more_seats = DomainEvent::CourseCreated {
        course_id: "rust-101".into(),
        seats: 3,
    };
    event_store
        .append(vec![more_seats.clone()], query.clone(), version)
        .await?;
    match event_store.append(vec![more_seats], query, version).await {
        Err(varvedb_disintegrate::Error::Concurrency { after, seq }) => {
            println!("a stale decision (made at {after}) was refused: event {seq} came after it")
        }
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    // A listener on a durable cursor.
    let count = Arc::new(AtomicU32::new(0));
    let listener = Subscriptions {
        query: query!(CourseEvent),
        count: Arc::clone(&count),
    };
    VarveEventListener::builder(event_store)
        .register_listener(listener, ListenerConfig::poller(Duration::from_millis(50)))
        .start_with_shutdown(tokio::time::sleep(Duration::from_millis(300)))
        .await?;
    println!(
        "the listener counted {} subscriptions; its cursor is at {:?}",
        count.load(Ordering::Relaxed),
        storage.consumer_position(&varvedb_disintegrate::cursor_name("subscriptions"))?
    );
    println!("store: {}", path.display());
    Ok(())
}
