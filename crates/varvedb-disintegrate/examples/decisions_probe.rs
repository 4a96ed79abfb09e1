//! Decisions per second through disintegrate's `DecisionMaker` on VarveDB: one decision maker
//! at a time over 100 courses, and 64 concurrent tasks with a course each (every decision
//! flushed).
//!
//! `cargo run --release -p varvedb-disintegrate --example decisions_probe -- [DECISIONS] [RUNS]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use disintegrate::serde::json::Json;
use disintegrate::{Decision, EventStore, NoSnapshot, StateMutate, StateQuery};
use serde::{Deserialize, Serialize};
use varvedb::{Storage, StorageConfig};
use varvedb_disintegrate::{VarveEventStore, decision_maker};

#[derive(Debug, Clone, PartialEq, Eq, disintegrate::Event, Serialize, Deserialize)]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
enum DomainEvent {
    CourseCreated {
        #[id]
        course_id: String,
        seats: u32,
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

#[derive(Debug, thiserror::Error)]
#[error("full")]
struct Full;

struct Subscribe(String, String);

impl Decision for Subscribe {
    type Event = DomainEvent;
    type StateQuery = Course;
    type Error = Full;

    fn state_query(&self) -> Course {
        Course {
            course_id: self.0.clone(),
            ..Default::default()
        }
    }

    fn process(&self, course: &Course) -> Result<Vec<DomainEvent>, Full> {
        if course.subscribed >= course.seats {
            return Err(Full);
        }
        Ok(vec![DomainEvent::StudentSubscribed {
            course_id: self.0.clone(),
            student_id: self.1.clone(),
        }])
    }
}

async fn run(decisions: usize, tasks: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        ..Default::default()
    })
    .unwrap();
    let store = VarveEventStore::new(storage, Json::<DomainEvent>::default());
    // One task spreads its decisions over 100 courses; concurrent tasks have a course each.
    let ncourses = if tasks == 1 { 100 } else { tasks };
    let courses: Vec<DomainEvent> = (0..ncourses)
        .map(|c| DomainEvent::CourseCreated {
            course_id: format!("c{c}"),
            seats: u32::MAX,
        })
        .collect();
    store.append_without_validation(courses).await.unwrap();
    let per_task = decisions / tasks;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let maker = decision_maker(store, NoSnapshot);
            for i in 0..per_task {
                maker
                    .make(Subscribe(
                        format!("c{}", if tasks == 1 { i % 100 } else { t }),
                        format!("s{i}"),
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (per_task * tasks) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().unwrap());
    let decisions = args.next().unwrap_or(2_000);
    let runs = args.next().unwrap_or(3);
    for tasks in [1, 64] {
        let mut rates = Vec::new();
        for run_no in 0..runs {
            let rate = run(decisions, tasks).await;
            println!("{tasks} task(s) run {run_no}: {rate:.0} decisions/s");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "MEDIAN {tasks} task(s), {decisions} decisions: {:.0} decisions/s",
            rates[rates.len() / 2]
        );
    }
}
