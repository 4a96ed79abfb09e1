//! `varvedb append`: events from scripts and non-Rust tooling, as JSON.
//!
//! They are stored as the tool's JSON event type: container [`JSON_CONTAINER`], the name given
//! with `--type`, schema version 1, and as payload the rkyv archive of [`JsonEvent`] (the JSON
//! text, validated and made compact). `read` and `tail` print their data as JSON; a Rust
//! program reads them with `RawReader` and `rkyv::access::<ArchivedJsonEvent, _>`.

use rkyv::{Archive, Deserialize, Serialize};
use varvedb::{EventType, ExpectedVersion, RawEvent, Storage, StorageConfig, Writer};

/// The container name of the tool's JSON events.
pub(crate) const JSON_CONTAINER: &str = "varvedb.json";

/// A JSON event: its data as compact JSON text.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub(crate) struct JsonEvent {
    /// The type name, from `--type` (not stored in the payload: the record's type is).
    #[rkyv(with = rkyv::with::Skip)]
    name: &'static str,
    /// The event's data, compact JSON.
    json: String,
}

impl varvedb::Event for JsonEvent {
    const CONTAINER: &'static str = JSON_CONTAINER;
    // Written only by this tool; read through the untyped view.
    const TYPES: &'static [EventType] = &[];
    fn event_type(&self) -> &'static str {
        self.name
    }
    fn event_version(&self) -> u16 {
        1
    }
}

/// What to append.
#[derive(clap::Args)]
pub(crate) struct AppendArgs {
    /// The stream (decimal, or hex with 0x).
    #[arg(long, value_parser = crate::read::parse_stream)]
    stream: u128,
    /// The version the stream must be at: a number, `none` (the stream must not exist),
    /// `exists`, or `any`.
    #[arg(long, value_parser = parse_expected)]
    expect: ExpectedVersion,
    /// The event's type name.
    #[arg(long = "type")]
    event_type: String,
    /// The event's data: one JSON value.
    #[arg(long)]
    json: String,
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Auto),
        "none" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("{s:?} is not a version, none, exists or any")),
    }
}

/// Appends one JSON event; creates the store if there is none (this command writes).
pub(crate) fn run(
    path: &std::path::Path,
    master_key: Option<[u8; 32]>,
    args: AppendArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let value: serde_json::Value = serde_json::from_str(&args.json)
        .map_err(|e| format!("--json is not one JSON value: {e}"))?;
    let storage = Storage::open(StorageConfig {
        path: path.into(),
        master_key,
        encryption_enabled: master_key.is_some(),
        ..Default::default()
    })?;
    // One name for the life of this short process.
    let name: &'static str = Box::leak(args.event_type.into_boxed_str());
    let event = JsonEvent {
        name,
        json: value.to_string(),
    };
    let appended = Writer::<JsonEvent>::new(storage).append(args.stream, args.expect, &event)?;
    println!(
        "appended {name} to stream {:#x}: version {}, seq {}",
        args.stream, appended.version, appended.seq
    );
    Ok(())
}

/// The JSON data of an event of the tool's JSON type, if it is one and can be read.
pub(crate) fn json_data(e: &RawEvent<'_>) -> Option<String> {
    if e.event_container() != JSON_CONTAINER || e.payload_bytes().is_empty() {
        return None;
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(e.payload_bytes());
    let archived = rkyv::access::<ArchivedJsonEvent, rkyv::rancor::Error>(&aligned).ok()?;
    Some(archived.json.as_str().to_owned())
}
