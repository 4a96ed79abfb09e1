//! SQLite through rusqlite: WAL, `synchronous=FULL`, the usual event-store schema.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rkyv::util::AlignedVec;
use rusqlite::{Connection, params};

use crate::event::{BenchEvent, Tally, amount_at};
use crate::store::{BenchError, BenchResult, BenchStore, Concurrency, failed};

/// One connection: SQLite admits one writer at a time, and a connection per thread would only
/// add busy-waiting on its lock.
pub struct Sqlite {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS events (
        seq       INTEGER PRIMARY KEY,
        stream_id BLOB    NOT NULL,
        version   INTEGER NOT NULL,
        type      TEXT    NOT NULL,
        payload   BLOB    NOT NULL,
        UNIQUE (stream_id, version)
    );";

const INSERT: &str =
    "INSERT INTO events (stream_id, version, type, payload) VALUES (?1, ?2, ?3, ?4)";

fn serialize(e: &BenchEvent) -> BenchResult<AlignedVec> {
    rkyv::to_bytes::<rkyv::rancor::Error>(e).map_err(failed)
}

impl Sqlite {
    /// The name in the table.
    pub const NAME: &'static str = "SQLite";

    /// Opens `dir/events.sqlite`.
    pub fn open(dir: &Path) -> BenchResult<Sqlite> {
        std::fs::create_dir_all(dir).map_err(failed)?;
        let conn = Connection::open(dir.join("events.sqlite")).map_err(failed)?;
        conn.execute_batch(SCHEMA).map_err(failed)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_all<'a>(
        &self,
        rows: impl Iterator<Item = (u128, u32, &'a BenchEvent)>,
    ) -> BenchResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(failed)?;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(failed)?;
            for (stream, version, event) in rows {
                // UNIQUE (stream_id, version) is the optimistic-concurrency check.
                insert
                    .execute(params![
                        &stream.to_be_bytes()[..],
                        version,
                        "BenchEvent",
                        &serialize(event)?[..]
                    ])
                    .map_err(failed)?;
            }
        }
        tx.commit().map_err(failed)
    }
}

impl BenchStore for Sqlite {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn append(&self, stream: u128, version: u32, events: &[BenchEvent]) -> BenchResult<()> {
        self.insert_all(
            events
                .iter()
                .zip(version + 1..)
                .map(|(e, v)| (stream, v, e)),
        )
    }

    fn append_multi(&self, batch: &[(u128, u32, BenchEvent)]) -> BenchResult<()> {
        self.insert_all(batch.iter().map(|(s, v, e)| (*s, v + 1, e)))
    }

    fn concurrency(&self) -> Concurrency {
        Concurrency::OneCommitEach
    }

    fn scan(&self) -> BenchResult<(u64, i64)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT payload FROM events ORDER BY seq")
            .map_err(failed)?;
        let rows = stmt.query([]).map_err(failed)?;
        tally(rows)
    }

    fn point_reads(&self, seqs: &[u64]) -> BenchResult<i64> {
        let mut conn = self.conn();
        // One read transaction for all of them, like the other peers' one snapshot.
        let tx = conn.transaction().map_err(failed)?;
        let mut sum = 0;
        {
            let mut stmt = tx
                .prepare_cached("SELECT payload FROM events WHERE seq = ?1")
                .map_err(failed)?;
            let mut buf = AlignedVec::new();
            for &seq in seqs {
                let mut rows = stmt.query([seq as i64]).map_err(failed)?;
                let row = rows
                    .next()
                    .map_err(failed)?
                    .ok_or_else(|| BenchError::Failed(format!("no event at {seq}")))?;
                let blob = row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?;
                sum += amount_at(&mut buf, blob)?;
            }
        }
        tx.commit().map_err(failed)?;
        Ok(sum)
    }

    fn read_stream(&self, stream: u128) -> BenchResult<(u64, i64)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT payload FROM events WHERE stream_id = ?1 ORDER BY version")
            .map_err(failed)?;
        let rows = stmt.query([&stream.to_be_bytes()[..]]).map_err(failed)?;
        tally(rows)
    }
}

/// Counts and sums the payloads of `rows` (SQLite hands blobs out at any address, so most are
/// copied into an aligned buffer first, as a user storing rkyv in SQLite would have to).
fn tally(mut rows: rusqlite::Rows<'_>) -> BenchResult<(u64, i64)> {
    let mut tally = Tally::default();
    while let Some(row) = rows.next().map_err(failed)? {
        tally.add(row.get_ref(0).map_err(failed)?.as_blob().map_err(failed)?);
    }
    tally.finish()
}
