//! The `tracing` spans an application's subscriber sees: open, commit (with the group size),
//! map growth, verify, and processor batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TracingEvent, Metadata, Subscriber};
use varvedb::{
    EventHandler, EventRef, ExpectedVersion, HandlerError, Processor, Reader, Storage,
    StorageConfig, Writer,
};

/// Records every span's name and its fields as text.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        let mut spans = self.0.lock().unwrap();
        spans.push((span.metadata().name().to_owned(), fields.0));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut fields = Fields(String::new());
        values.record(&mut fields);
        let mut spans = self.0.lock().unwrap();
        if let Some(span) = spans.get_mut(id.into_u64() as usize - 1) {
            span.1.push_str(&fields.0);
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &TracingEvent<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Spans {
    fn named(&self, name: &str) -> Vec<String> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

struct Nothing;

impl EventHandler<Deposited> for Nothing {
    fn handle(&mut self, _: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[test]
fn open_commit_growth_verify_and_processor_batches_have_spans() {
    let spans = Spans::default();
    // Global: processor batches run on the blocking pool's threads. The only test here.
    tracing::subscriber::set_global_default(spans.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageConfig {
        map_bytes_initial: 1 << 20,
        ..config(&dir)
    })
    .unwrap();
    let writer = Writer::<Deposited>::new(storage.clone());
    // Enough to grow a 1 MiB map.
    for i in 0..40u64 {
        let big = Deposited {
            account: i,
            amount: i,
            note: pattern(64 * 1024, i)
                .iter()
                .map(|b| char::from(b'a' + b % 26))
                .collect(),
        };
        writer.append(1, ExpectedVersion::Auto, &big).unwrap();
    }
    assert!(storage.verify().unwrap().is_clean());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let processor = Processor::new(
        Reader::<Deposited>::new(storage.clone()),
        Nothing,
        "spans",
        storage.subscribe(),
    );
    rt.block_on(async {
        processor
            .run_until(tokio::time::sleep(Duration::from_millis(200)))
            .await
    })
    .unwrap();

    let open = spans.named("varvedb.open");
    assert!(!open.is_empty(), "no open span");
    let commits = spans.named("varvedb.commit");
    assert!(!commits.is_empty(), "no commit span");
    assert!(
        commits.iter().all(|f| f.contains("group_size=")),
        "{commits:?}"
    );
    assert!(
        !spans.named("varvedb.map_growth").is_empty(),
        "no growth span"
    );
    let verify = spans.named("varvedb.verify");
    assert!(
        verify.iter().any(|f| f.contains("problems=0")),
        "{verify:?}"
    );
    let batches = spans.named("varvedb.processor_batch");
    assert!(
        batches.iter().any(|f| f.contains("consumer=spans")),
        "{batches:?}"
    );
}
