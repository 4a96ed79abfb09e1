//! Commands per second through cqrs-es 0.5's `CqrsFramework`, on VarveDB (`varvedb-cqrs`) and
//! on SQLite (`sqlite-es`), in one run; medians of three runs each (`docs/performance.md`,
//! "Framework backends"). Then decisions per second through disintegrate (`dcb.rs`).
//! `cargo run --release [-- cqrs|disintegrate [DECISIONS]]`.
//!
//! Workloads (every command loads its account from its events and commits one event):
//! - `1 handler`: one task, 2,000 deposits over 100 accounts in turn;
//! - `64 handlers`: 64 tasks, an account each, 50 deposits each.
//!
//! Backends: VarveDB (durable: each commit flushed), sqlite-es's default pool (WAL,
//! `synchronous = NORMAL`, not flushed per commit), and sqlite-es with `synchronous = FULL`
//! (flushed per commit, like VarveDB).

mod dcb;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore};
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        "MoneyDeposited".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = i64;
    type Event = AccountEvent;
    type Error = Never;
    type Services = ();
    async fn handle(
        &mut self,
        amount: i64,
        _: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Never> {
        sink.write(AccountEvent::Deposited { amount }, self).await;
        Ok(())
    }
    fn apply(&mut self, event: AccountEvent) {
        let AccountEvent::Deposited { amount } = event;
        self.balance += amount;
    }
}

async fn workload<R: PersistedEventRepository + 'static>(repo: R, handlers: usize) -> f64 {
    let cqrs = Arc::new(CqrsFramework::new(
        PersistedEventStore::<_, Account>::new_event_store(repo),
        vec![],
        (),
    ));
    let started = Instant::now();
    let commands = if handlers == 1 {
        for i in 0..2000i64 {
            cqrs.execute(&format!("acc-{}", i % 100), i)
                .await
                .expect("command");
        }
        2000
    } else {
        let mut tasks = Vec::new();
        for t in 0..handlers {
            let cqrs = cqrs.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50i64 {
                    cqrs.execute(&format!("acc-{t}"), i).await.expect("command");
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        handlers * 50
    };
    commands as f64 / started.elapsed().as_secs_f64()
}

async fn sqlite_repo(
    dir: &std::path::Path,
    sync: SqliteSynchronous,
) -> sqlite_es::SqliteEventRepository {
    let url = format!("sqlite://{}", dir.join("events.db").display());
    let options = SqliteConnectOptions::from_str(&url)
        .expect("url")
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sync);
    let pool = SqlitePoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .expect("sqlite");
    for table in [
        "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         sequence integer CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
         event_version text NOT NULL, payload text NOT NULL, metadata text NOT NULL, \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence)) STRICT",
        "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         last_sequence integer NOT NULL, current_snapshot integer NOT NULL, payload text NOT NULL, \
         PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)) STRICT",
    ] {
        sqlx::query(table).execute(&pool).await.expect("schema");
    }
    sqlite_es::SqliteEventRepository::new(pool)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    if which == "all" || which == "cqrs" {
        cqrs().await;
    }
    if which == "all" || which == "disintegrate" {
        let decisions = std::env::args()
            .nth(2)
            .map_or(2_000, |n| n.parse().expect("DECISIONS is a number"));
        dcb::run(decisions).await;
    }
}

async fn cqrs() {
    for handlers in [1usize, 64] {
        let (mut varve, mut normal, mut full) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let storage = varvedb::Storage::open(varvedb::StorageConfig {
                path: dir.path().join("varvedb"),
                ..Default::default()
            })
            .expect("store");
            varve.push(workload(varvedb_cqrs::VarveEventRepository::new(storage), handlers).await);
            let d = tempfile::tempdir().expect("tempdir");
            normal.push(
                workload(
                    sqlite_repo(d.path(), SqliteSynchronous::Normal).await,
                    handlers,
                )
                .await,
            );
            let d = tempfile::tempdir().expect("tempdir");
            full.push(
                workload(
                    sqlite_repo(d.path(), SqliteSynchronous::Full).await,
                    handlers,
                )
                .await,
            );
        }
        let (v, n, f) = (
            median(varve.clone()),
            median(normal.clone()),
            median(full.clone()),
        );
        println!(
            "{handlers} handler(s): VarveDB {v:.0} commands/s {varve:.0?}; sqlite-es default (NORMAL) {n:.0} {normal:.0?}; sqlite-es FULL {f:.0} {full:.0?}; VarveDB / NORMAL {:.2}x, VarveDB / FULL {:.2}x",
            v / n,
            v / f
        );
    }
}
