//! `varvedb demo`: a customer's personal data in an encrypted stream, forgotten by shredding
//! its key; then a bank account, an idempotent retry, two clerks racing, a conflict and a
//! retry, a processor's projection, and the run's metrics.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{
    Append, AppendOptions, Error, EventHandler, EventId, EventRef, ExpectedVersion, HandlerError,
    Processor, ProcessorOptions, Reader, Result, Storage, StorageConfig, Writer,
};

/// A projection: the balance of one account, kept by a processor.
struct BalanceProjection {
    account: u128,
    cents: i128,
    events: u64,
}

impl EventHandler<Account> for BalanceProjection {
    fn handle(&mut self, event: &EventRef<'_, Account>) -> std::result::Result<(), HandlerError> {
        if event.stream_id() != self.account {
            return Ok(());
        }
        self.events += 1;
        match &**event {
            ArchivedAccount::Opened { .. } => {}
            ArchivedAccount::Deposited { cents, .. } => self.cents += i128::from(cents.to_native()),
            ArchivedAccount::Withdrawn { cents, .. } => self.cents -= i128::from(cents.to_native()),
        }
        Ok(())
    }
}

/// The events of one bank account.
#[derive(Archive, Serialize, Deserialize, Debug, varvedb::Event)]
enum Account {
    Opened { owner: String },
    Deposited { cents: u64, note: String },
    Withdrawn { cents: u64, note: String },
}

fn balance(reader: &Reader<Account>, storage: &Storage, account: u128) -> Result<(i128, u32)> {
    let txn = storage.read_txn()?;
    let mut cents = 0i128;
    let mut version = 0;
    for event in reader.read_stream(&txn, account, 1) {
        let event = event?;
        version = event.version();
        match &*event {
            ArchivedAccount::Opened { .. } => {}
            ArchivedAccount::Deposited { cents: c, .. } => cents += i128::from(c.to_native()),
            ArchivedAccount::Withdrawn { cents: c, .. } => cents -= i128::from(c.to_native()),
        }
    }
    Ok((cents, version))
}

/// A customer's personal data, kept in an encrypted stream of its own so that it can be
/// forgotten (crypto-shredding) while the account's history stays.
#[derive(Archive, Serialize, Deserialize, Debug, varvedb::Event)]
struct CustomerProfile {
    name: String,
    email: String,
}

/// The demo's master key. A real application keeps its key out of the code and out of the
/// store's directory (a secrets manager, a key file readable by its user only).
const DEMO_MASTER_KEY: [u8; 32] = *b"varvedb demo key, never use it!!";

/// Opens the demo's store: a new one, or one the demo made before (an encrypted store that its
/// published key opens). Any other store is refused and left as it was: the demo would make a
/// plaintext store encrypted under a key the whole world knows.
/// The file that marks a directory as the demo's own store. The demo runs only on a store it
/// created: it encrypts its store under a built-in key, and must not tie anyone's data to it.
pub(crate) const DEMO_MARKER: &str = "varvedb-demo.txt";

/// Opens the demo's store at `path`: a new or empty directory becomes one (and gets the
/// marker); a store the demo made is opened again; anything else is refused, untouched.
fn open_demo_store(path: &Path) -> Result<Storage> {
    let marker = path.join(DEMO_MARKER);
    let refuse = |reason: String| Error::InvalidStore {
        path: path.into(),
        reason,
    };
    let io = |source: std::io::Error| Error::Io {
        path: path.into(),
        source,
    };
    let is_new = match std::fs::read_dir(path) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(refuse(
                "this is a file, not a directory; give the demo a new --path".into(),
            ));
        }
        Err(e) => return Err(io(e)),
    };
    if !is_new && !marker.is_file() {
        return Err(refuse(format!(
            "the demo runs only on a store it created (marked by {DEMO_MARKER}), because it \
             encrypts its store under a built-in key; this directory is not one, and nothing in \
             it was changed. Run the demo without --path (its own store, ./{DEFAULT_DEMO_PATH}) \
             or give it a new directory"
        )));
    }
    let storage = match Storage::open(StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        encryption_enabled: true,
        master_key: Some(DEMO_MASTER_KEY),
        ..Default::default()
    }) {
        Err(Error::WrongMasterKey) => Err(refuse(
            "the demo runs only on a store it created, and this one is encrypted under another \
             key; give the demo a new --path"
                .into(),
        )),
        other => other,
    }?;
    if is_new {
        std::fs::write(
            &marker,
            "This store was made by `varvedb demo`. It is encrypted under the demo's built-in \
             master key, which is public: keep no real data in it. Delete the directory when \
             done.\n",
        )
        .map_err(|source| Error::Io {
            path: marker.clone(),
            source,
        })?;
    }
    Ok(storage)
}

/// Where the demo keeps its store when not given `--path`.
pub(crate) const DEFAULT_DEMO_PATH: &str = "varvedb-demo";

/// Writes a customer profile to a new (so encrypted) stream, reads it back, shreds the stream
/// and shows that it is gone for good.
fn forget_a_customer(storage: &Storage, path: &Path, stream: u128) -> Result<()> {
    let writer = Writer::<CustomerProfile>::new(storage.clone());
    let reader = Reader::<CustomerProfile>::new(storage.clone());
    let profile = CustomerProfile {
        name: "Ada Lovelace".into(),
        email: "ada@example.org".into(),
    };
    let a = writer.append(stream, ExpectedVersion::NoStream, &profile)?;
    println!(
        "customer stream {}: encrypted under a key of its own (AES-256-GCM), v{} seq {}",
        crate::stream_id::show(stream),
        a.version,
        a.seq
    );
    {
        let txn = storage.read_txn()?;
        if let Some(p) = reader.get_by_version(&txn, stream, 1)? {
            println!("  reads back, decrypted: {} <{}>", p.name, p.email);
        }
    }
    let report = storage.shred_stream(stream)?;
    println!(
        "  Ada asks to be forgotten: the stream's key is deleted ({} event unreadable for good)",
        report.events
    );
    let txn = storage.read_txn()?;
    match reader.get_by_version(&txn, stream, 1) {
        Err(e @ Error::Shredded { .. }) => println!("  reading it now: {e}"),
        other => {
            return Err(Error::InvalidStore {
                path: path.into(),
                reason: format!("expected the shredded event to be unreadable, got {other:?}"),
            });
        }
    }
    Ok(())
}

fn money(cents: i128) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

pub(crate) fn run(path: &Path) -> Result<()> {
    // Fresh streams per run, so the demo can run again on the same store.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let account = (nanos ^ (u128::from(std::process::id()) << 64)) % (u128::MAX - 2) + 1;
    // The store is encrypted under the demo's key: every stream it creates has a key of its
    // own, which is what lets one customer be forgotten while the rest stays.
    let storage = open_demo_store(path)?;
    println!(
        "store: {} (the demo's own, encrypted under its built-in key: not for real data)",
        path.display()
    );
    let before = storage.stats()?.events;
    forget_a_customer(&storage, path, account + 1)?;

    let writer = Writer::<Account>::new(storage.clone());
    let reader = Reader::<Account>::new(storage.clone());
    println!("account stream {}", crate::stream_id::show(account));

    let a = writer.append(
        account,
        ExpectedVersion::NoStream,
        &Account::Opened {
            owner: "Ada".into(),
        },
    )?;
    println!("  v{} (seq {}): opened for Ada", a.version, a.seq);
    // The payroll system gives its deposit an event id: a retry after a lost answer is safe.
    let salary = Account::Deposited {
        cents: 10_000,
        note: "salary".into(),
    };
    let payroll = AppendOptions::new()
        .event_id(EventId::from_u128(account ^ 1))
        .metadata("clerk", "payroll");
    let a = writer
        .commit(Append::event(account, ExpectedVersion::Exact(1), &salary).options(payroll.clone()))
        .map(|v| v[0])?;
    println!("  v{} (seq {}): deposited 100.00", a.version, a.seq);
    let again = writer
        .commit(Append::event(account, ExpectedVersion::Exact(1), &salary).options(payroll))
        .map(|v| v[0])?;
    println!(
        "  payroll retried after a timeout: same event id, same answer (v{}, seq {}), nothing written",
        again.version, again.seq
    );

    // Two clerks read the account at the same version and both try to withdraw.
    let (_, seen_by_alice) = balance(&reader, &storage, account)?;
    let (_, seen_by_bob) = balance(&reader, &storage, account)?;
    let a = writer.append(
        account,
        ExpectedVersion::Exact(seen_by_alice),
        &Account::Withdrawn {
            cents: 3_000,
            note: "rent".into(),
        },
    )?;
    println!(
        "  v{} (seq {}): Alice withdrew 30.00 (expected v{seen_by_alice})",
        a.version, a.seq
    );
    let bob = Account::Withdrawn {
        cents: 8_000,
        note: "laptop".into(),
    };
    match writer.append(account, ExpectedVersion::Exact(seen_by_bob), &bob) {
        Err(Error::ConcurrencyConflict {
            expected, actual, ..
        }) => {
            println!(
                "  Bob's withdrawal of 80.00 was refused: he expected {expected}, the account is at version {actual}"
            );
        }
        other => {
            return Err(Error::InvalidStore {
                path: path.into(),
                reason: format!("expected a conflict, got {other:?}"),
            });
        }
    }
    // Bob re-reads the stream, sees the new balance, and retries with a smaller amount.
    let (cents, version) = balance(&reader, &storage, account)?;
    println!("  Bob re-reads: balance {} at v{version}", money(cents));
    let retry = Account::Withdrawn {
        cents: 5_000,
        note: "laptop, first half".into(),
    };
    let a = writer.append(account, ExpectedVersion::Exact(version), &retry)?;
    println!(
        "  v{} (seq {}): Bob withdrew 50.00 on retry",
        a.version, a.seq
    );

    // A batch is atomic: all three land with consecutive versions, or none.
    let interest = [1, 2, 3].map(|m| Account::Deposited {
        cents: 25,
        note: format!("interest, month {m}"),
    });
    let batch = writer.append_batch(account, ExpectedVersion::Exact(a.version), &interest)?;
    println!(
        "  v{}..=v{}: three interest deposits in one atomic batch",
        batch[0].version, batch[2].version
    );

    println!("reading the stream back (zero-copy from the memory map):");
    let txn = storage.read_txn()?;
    for event in reader.read_stream(&txn, account, 1) {
        let event = event?;
        let what = match &*event {
            ArchivedAccount::Opened { owner } => format!("opened for {owner}"),
            ArchivedAccount::Deposited { cents, note } => {
                format!("+{} ({note})", money(i128::from(cents.to_native())))
            }
            ArchivedAccount::Withdrawn { cents, note } => {
                format!("-{} ({note})", money(i128::from(cents.to_native())))
            }
        };
        let meta: Vec<String> = event
            .metadata()
            .iter()
            .map(|(k, v)| format!(" [{k}={v}]"))
            .collect();
        println!(
            "  v{} seq {} {}: {what}{}",
            event.version(),
            event.seq(),
            event.event_type(),
            meta.concat()
        );
    }
    drop(txn);
    let (cents, version) = balance(&reader, &storage, account)?;
    println!("balance {} at version {version}", money(cents));

    // A processor projects the account's balance from the log, from its own durable cursor.
    let projection = project(&storage, account)?;
    println!(
        "projection \"{}\": balance {} after {} events of the account",
        projection.0,
        money(projection.1.cents),
        projection.1.events
    );

    let stats = storage.stats()?;
    let appended = stats.events - before;
    println!(
        "store now holds {} events in {} streams ({} bytes of log): this run appended {appended}{}",
        stats.events,
        stats.streams,
        stats.log_bytes,
        match before {
            0 => String::new(),
            n => format!(", earlier runs {n}"),
        }
    );
    // A few of the Prometheus metrics this run produced (`varvedb metrics` prints them all).
    // They are this process's counters: they count this run's appends, not the store's.
    if before == 0 {
        println!("metrics of this run (this process's counters: its {appended} events):");
    } else {
        println!(
            "metrics of this run (this process's counters: its {appended} events, not the \
             store's {}):",
            stats.events
        );
    }
    for line in storage.metrics_text().lines() {
        let shown = [
            "varvedb_append_events_total ",
            "varvedb_append_conflicts_total ",
            "varvedb_append_idempotent_hits_total ",
            "varvedb_commit_duration_seconds_count ",
            "varvedb_consumer_lag_events{",
        ];
        if shown.iter().any(|prefix| line.starts_with(prefix)) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// Runs a processor over the log until it has reached the head, then stops it gracefully.
fn project(storage: &Storage, account: u128) -> Result<(String, BalanceProjection)> {
    let name = format!("demo-balance-{account:032x}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    let head = storage.last_seq(&storage.read_txn()?)?;
    let processor = Processor::new(
        Reader::<Account>::new(storage.clone()),
        BalanceProjection {
            account,
            cents: 0,
            events: 0,
        },
        name.clone(),
        storage.subscribe(),
    )
    .with_options(ProcessorOptions {
        checkpoint_every_ms: 20,
        ..Default::default()
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(processor.run_until(async move {
        let _ = stopped.await;
    }));
    runtime.block_on(async {
        // The processor checkpoints as it goes; wait for the head, at most a few seconds.
        for _ in 0..500 {
            if storage.consumer_position(&name)? == Some(head) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok::<_, Error>(())
    })?;
    let _ = stop.send(());
    let handler = runtime.block_on(task).map_err(|e| Error::HandlerFailed {
        consumer: name.clone(),
        seq: 0,
        reason: e.to_string(),
    })??;
    Ok((name, handler))
}
