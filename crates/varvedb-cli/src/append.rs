//! `varvedb append`: events from scripts and non-Rust tooling, as JSON.
//!
//! They are stored as the JSON event type (`varvedb::JsonEvent`): container `varvedb.json`, the
//! name given with `--type`, schema version 1, and as payload the rkyv archive of the JSON
//! text, validated and made compact. `read` and `tail` print their data as JSON; a Rust
//! program reads them with `JsonEvent::data_of`.

use varvedb::{Append, AppendOptions, ExpectedVersion, JsonEvent, Storage, StorageConfig, Writer};

/// What to append.
#[derive(clap::Args)]
pub(crate) struct AppendArgs {
    /// The stream (decimal, 0x hex, 32 hex digits or a UUID).
    #[arg(long, value_parser = crate::stream_id::parse)]
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
    /// A tag (a domain identifier such as `account:42`), repeatable: indexed, for queries.
    #[arg(long = "tag")]
    tags: Vec<String>,
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
        check_pages_on_open: true,
        master_key,
        encryption_enabled: master_key.is_some(),
        ..Default::default()
    })?;
    let event = JsonEvent::new(&args.event_type, value.to_string());
    let name = event.name();
    let options = AppendOptions::new().tags(args.tags);
    let appended = Writer::<JsonEvent>::new(storage)
        .commit(Append::event(args.stream, args.expect, &event).options(options))
        .map(|v| v[0])?;
    println!(
        "appended {name} to stream {}: version {}, seq {}",
        crate::stream_id::show(args.stream),
        appended.version,
        appended.seq
    );
    Ok(())
}
