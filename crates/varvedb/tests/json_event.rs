//! The JSON event type: written through a `Writer<JsonEvent>` with any type name, read back
//! through the untyped view as the same text.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use varvedb::{ExpectedVersion, JSON_CONTAINER, JsonEvent, Writer};

#[test]
fn json_events_keep_their_type_name_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(&dir);
    let writer = Writer::<JsonEvent>::new(storage.clone());
    let opened = JsonEvent::new("AccountOpened", r#"{"owner":"ada"}"#);
    let deposited = JsonEvent::new("MoneyDeposited", r#"{"amount":10}"#);
    writer
        .append_batch(
            7,
            ExpectedVersion::NoStream,
            &[opened.clone(), deposited.clone()],
        )
        .unwrap();
    // One copy of each name, however many events carry it.
    let again = JsonEvent::new(&String::from("AccountOpened"), "{}");
    assert!(std::ptr::eq(again.name(), opened.name()));
    let txn = storage.read_txn().unwrap();
    let raw = storage.raw_reader();
    let read: Vec<(String, String, String, u16)> = raw
        .read_stream(&txn, 7, 1)
        .map(|e| {
            let e = e.unwrap();
            (
                e.event_container().to_owned(),
                e.event_type().to_owned(),
                JsonEvent::data_of(&e).unwrap(),
                e.event_version(),
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            (
                JSON_CONTAINER.to_owned(),
                "AccountOpened".to_owned(),
                opened.json().to_owned(),
                1
            ),
            (
                JSON_CONTAINER.to_owned(),
                "MoneyDeposited".to_owned(),
                deposited.json().to_owned(),
                1
            ),
        ]
    );
}
