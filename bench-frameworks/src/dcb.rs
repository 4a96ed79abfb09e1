//! Decisions per second through disintegrate 4's `DecisionMaker`, on VarveDB
//! (`varvedb-disintegrate`) and on PostgreSQL (`disintegrate-postgres`, a server from Debian's
//! packages started on loopback by `scripts/postgres.sh`, with its defaults: every commit
//! flushed), in one run; medians of three runs each.
//!
//! Workloads (every decision loads a course's state from its events, checks a seat is free, and
//! appends one `StudentSubscribed` conditional on the course not having changed):
//! - `1 task`: DECISIONS decisions over 100 courses in turn;
//! - `64 tasks`: 64 tasks, a course each, DECISIONS / 64 decisions each.
//!
//! DECISIONS is 2,000 unless given: `cargo run --release -- disintegrate 20000`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use disintegrate::serde::json::Json;
use disintegrate::{Decision, EventStore, NoSnapshot, StateMutate, StateQuery};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, disintegrate::Event, Serialize, Deserialize)]
#[stream(CourseEvent, [CourseCreated, StudentSubscribed])]
pub enum DomainEvent {
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
pub struct Course {
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
#[error("the course is full")]
pub struct Full;

#[derive(Clone)]
pub struct Subscribe(String, String);

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

type Make = Arc<dyn Fn(Subscribe) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

const COURSES_ONE_TASK: usize = 100;

fn courses(n: usize) -> Vec<DomainEvent> {
    (0..n)
        .map(|c| DomainEvent::CourseCreated {
            course_id: format!("c{c}"),
            seats: u32::MAX,
        })
        .collect()
}

async fn workload(make: Make, tasks: usize, decisions: usize) -> f64 {
    let per_task = decisions / tasks;
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let make = make.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let course = if tasks == 1 { i % COURSES_ONE_TASK } else { t };
                make(Subscribe(format!("c{course}"), format!("s{t}-{i}"))).await;
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    (per_task * tasks) as f64 / started.elapsed().as_secs_f64()
}

async fn varvedb_run(tasks: usize, decisions: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = varvedb::Storage::open(varvedb::StorageConfig {
        path: dir.path().join("varvedb"),
        ..Default::default()
    })
    .expect("store");
    let store = varvedb_disintegrate::VarveEventStore::new(storage, Json::<DomainEvent>::default());
    store
        .append_without_validation(courses(tasks.max(COURSES_ONE_TASK)))
        .await
        .expect("courses");
    let maker = Arc::new(varvedb_disintegrate::decision_maker(store, NoSnapshot));
    let make: Make = Arc::new(move |d| {
        let maker = maker.clone();
        Box::pin(async move {
            maker.make(d).await.expect("decision");
        })
    });
    workload(make, tasks, decisions).await
}

/// A PostgreSQL server for the run, stopped when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    url: String,
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
}

impl Postgres {
    fn start(port: u16) -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        // The server runs as `postgres`, which must reach its directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let out = Command::new(script())
            .args(["start", &port.to_string()])
            .arg(dir.path().join("pg"))
            .output()
            .expect("scripts/postgres.sh");
        assert!(
            out.status.success(),
            "scripts/postgres.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Postgres { dir, url }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path().join("pg"))
            .status();
    }
}

async fn postgres_run(pg: &Postgres, tasks: usize, decisions: usize, run: usize) -> f64 {
    // A fresh database per run.
    let admin = sqlx::PgPool::connect(&pg.url).await.expect("postgres");
    let db = format!("bench_{tasks}_{decisions}_{run}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let url = format!("{}/{db}", pg.url.rsplit_once('/').expect("url").0);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await
        .expect("postgres");
    init_schema(&pool).await;
    let store = disintegrate_postgres::PgEventStore::new_uninitialized(
        pool,
        Json::<DomainEvent>::default(),
    );
    store
        .append_without_validation(courses(tasks.max(COURSES_ONE_TASK)))
        .await
        .expect("courses");
    let maker = Arc::new(disintegrate_postgres::decision_maker(store, NoSnapshot));
    let retries = Arc::new(AtomicU64::new(0));
    let counted = retries.clone();
    let make: Make = Arc::new(move |d| {
        let maker = maker.clone();
        let retries = counted.clone();
        Box::pin(async move {
            // PostgreSQL runs the append serializable, and its predicate locks can refuse a
            // transaction of another course (SQLSTATE 40001): the application retries it.
            loop {
                match maker.make(d.clone()).await {
                    Ok(_) => return,
                    Err(e) if is_retryable(&e.to_string()) => {
                        retries.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("decision: {e}"),
                }
            }
        })
    });
    let rate = workload(make, tasks, decisions).await;
    let retried = retries.load(Ordering::Relaxed);
    if retried > 0 {
        println!(
            "  disintegrate-postgres, {tasks} task(s), run {run}: {retried} serialization failures retried"
        );
    }
    rate
}

fn is_retryable(error: &str) -> bool {
    error.contains("could not serialize") || error.contains("concurren")
}

/// disintegrate-postgres's schema, from its own SQL files in cargo's registry. Its
/// `PgEventStore::try_new` cannot create it on PostgreSQL 15 (Debian 12's): one function uses a
/// hexadecimal integer literal, which PostgreSQL accepts from version 16. The files run here
/// in the order its migrator runs them, with that literal in decimal; then a column and an index
/// per domain id, as its migrator adds them.
async fn init_schema(pool: &sqlx::PgPool) {
    let home = std::env::var("CARGO_HOME").map_or_else(
        |_| std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"),
        std::path::PathBuf::from,
    );
    let sql_dir = std::fs::read_dir(home.join("registry/src"))
        .expect("cargo's registry")
        .filter_map(|d| d.ok())
        .map(|d| {
            d.path()
                .join("disintegrate-postgres-4.0.1/src/event_store/sql")
        })
        .find(|p| p.is_dir())
        .expect("disintegrate-postgres 4.0.1's sources in cargo's registry");
    for file in [
        "seq_event_event_id.sql",
        "table_event.sql",
        "idx_event_type.sql",
        "fn_event_store_current_epoch.sql",
        "fn_event_store_begin_epoch.sql",
    ] {
        let sql = std::fs::read_to_string(sql_dir.join(file))
            .expect("sql file")
            .replace("0xFFFFFFFF", "4294967295");
        sqlx::raw_sql(&sql).execute(pool).await.expect(file);
    }
    for column in ["course_id", "student_id"] {
        sqlx::raw_sql(&format!(
            "ALTER TABLE event ADD COLUMN IF NOT EXISTS {column} TEXT; \
             CREATE INDEX IF NOT EXISTS idx_event_{column} ON event ({column}) \
             WHERE {column} IS NOT NULL"
        ))
        .execute(pool)
        .await
        .expect("domain id column");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(decisions: usize) {
    let pg = Postgres::start(55433);
    for tasks in [1usize, 64] {
        let (mut varve, mut postgres) = (Vec::new(), Vec::new());
        for run in 0..3 {
            varve.push(varvedb_run(tasks, decisions).await);
            postgres.push(postgres_run(&pg, tasks, decisions, run).await);
        }
        let (v, p) = (median(varve.clone()), median(postgres.clone()));
        println!(
            "disintegrate, {tasks} task(s), {decisions} decisions: VarveDB {v:.0} decisions/s {varve:.0?}; disintegrate-postgres {p:.0} {postgres:.0?}; VarveDB / Postgres {:.2}x",
            v / p
        );
    }
}
