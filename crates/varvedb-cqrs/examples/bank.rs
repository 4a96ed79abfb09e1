//! A bank account on cqrs-es with VarveDB as its event store: commands through
//! `CqrsFramework`, a conflict between two handlers, a view fed by a `QueryRunner` from a
//! durable cursor, and the account loaded again after the store is reopened.
//!
//! `cargo run -p varvedb-cqrs --example bank`

use std::sync::{Arc, Mutex};

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{
    Aggregate, AggregateContext, CqrsFramework, DomainEvent, EventEnvelope, EventStore, Query,
};
use serde::{Deserialize, Serialize};
use varvedb::{Storage, StorageConfig};
use varvedb_cqrs::{QueryRunner, VarveEventRepository};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    open: bool,
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

enum Command {
    Open { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug)]
struct Refused(&'static str);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Refused {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = AccountEvent;
    type Error = Refused;
    type Services = ();

    async fn handle(
        &mut self,
        command: Command,
        _: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Refused> {
        match command {
            Command::Open { owner } if !self.open => {
                sink.write(AccountEvent::Opened { owner }, self).await
            }
            Command::Open { .. } => return Err(Refused("the account is open already")),
            Command::Deposit { amount } => {
                sink.write(AccountEvent::Deposited { amount }, self).await
            }
            Command::Withdraw { amount } if amount <= self.balance => {
                sink.write(AccountEvent::Withdrawn { amount }, self).await
            }
            Command::Withdraw { .. } => return Err(Refused("insufficient funds")),
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// A statement: every movement of every account, in the order the log has them.
#[derive(Default, Clone)]
struct Statement(Arc<Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl Query<Account> for Statement {
    async fn dispatch(&self, id: &str, events: &[EventEnvelope<Account>]) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for e in events {
            lines.push(format!("{id} #{}: {:?}", e.sequence, e.payload));
        }
    }
}

fn open_store(path: &std::path::Path) -> Result<Storage, varvedb::Error> {
    Storage::open(StorageConfig {
        path: path.into(),
        ..Default::default()
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = open_store(dir.path())?;
    let store = PersistedEventStore::<_, Account>::new_event_store(VarveEventRepository::new(
        storage.clone(),
    ));
    let cqrs = Arc::new(CqrsFramework::new(store, vec![], ()));

    cqrs.execute(
        "acc-7",
        Command::Open {
            owner: "Ada".into(),
        },
    )
    .await?;
    cqrs.execute("acc-7", Command::Deposit { amount: 100 })
        .await?;
    match cqrs
        .execute("acc-7", Command::Withdraw { amount: 500 })
        .await
    {
        Err(e) => println!("withdraw 500: refused ({e})"),
        Ok(()) => return Err("a withdrawal past the balance went through".into()),
    }
    // Two handlers at once on one account: one of them may lose the race (a conflict, nothing
    // written) and retries.
    let (a, b) = tokio::join!(
        cqrs.execute("acc-7", Command::Deposit { amount: 10 }),
        cqrs.execute("acc-7", Command::Deposit { amount: 20 }),
    );
    for (amount, result) in [(10, a), (20, b)] {
        if let Err(cqrs_es::AggregateError::AggregateConflict) = result {
            println!("deposit {amount}: conflict, retried");
            cqrs.execute("acc-7", Command::Deposit { amount }).await?;
        } else {
            result?;
        }
    }
    cqrs.execute("acc-7", Command::Withdraw { amount: 30 })
        .await?;

    // A statement built from the log by a runner with a durable cursor.
    let statement = Statement::default();
    let runner = QueryRunner::<Account>::new(
        storage.clone(),
        "statement",
        vec![Box::new(statement.clone())],
    );
    let position = runner.run_once().await?;
    for line in statement.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {line}");
    }
    println!("statement cursor at event {position}");
    drop(cqrs);
    storage.close()?;

    // Reopened: the account is loaded from its events.
    let storage = open_store(dir.path())?;
    let store =
        PersistedEventStore::<_, Account>::new_event_store(VarveEventRepository::new(storage));
    let mut context = store.load_aggregate("acc-7").await?;
    let account = context.aggregate();
    println!(
        "after a reopen: open {}, balance {}",
        account.open, account.balance
    );
    if account.balance != 100 {
        return Err(format!("the balance is {}, not 100", account.balance).into());
    }
    Ok(())
}
