//! `varvedb migrate --from-varvedb-0.4 OLD_PATH`: a store of the published varvedb 0.4.2 into a
//! new store at `--path` (see the `varvedb-migrate` crate).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use varvedb::{Storage, StorageConfig};
use varvedb_migrate::{EventType, MigrateOptions, StreamIds, migrate_from_v04};

/// What `migrate` takes.
#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// The varvedb 0.4.2 store to read (it is not written).
    #[arg(long = "from-varvedb-0.4", value_name = "OLD_PATH")]
    from: PathBuf,
    /// The event type of every event (a struct's name, as `#[derive(varvedb::Event)]` gives
    /// it), unless --stream-type names one for its stream.
    #[arg(long = "type", value_name = "NAME")]
    type_name: Option<String>,
    /// The type's schema version.
    #[arg(long, default_value_t = 1)]
    type_version: u16,
    /// The type of one 0.4.2 stream name's events: STREAM=TYPE (repeatable).
    #[arg(long, value_name = "STREAM=TYPE")]
    stream_type: Vec<String>,
    /// How a 0.4.2 stream (a name and an id) becomes a stream id: `name-and-id` (the first
    /// 8 bytes of the name's BLAKE3 hash, then the id) or `id` (the id alone).
    #[arg(long, default_value = "name-and-id")]
    stream_ids: String,
}

/// Runs `migrate` into `path`: an encrypted store when `master_key` is given (every event
/// sealed under its stream's key).
pub(crate) fn run(
    path: &Path,
    master_key: Option<[u8; 32]>,
    args: &MigrateArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut by_name: HashMap<String, EventType> = HashMap::new();
    for pair in &args.stream_type {
        let (stream, t) = pair
            .split_once('=')
            .ok_or_else(|| format!("--stream-type {pair:?}: STREAM=TYPE"))?;
        by_name.insert(
            stream.to_string(),
            EventType::named(t).version(args.type_version),
        );
    }
    let fallback = args
        .type_name
        .clone()
        .map(|n| EventType::named(n).version(args.type_version));
    if fallback.is_none() && by_name.is_empty() {
        return Err("give the events' type: --type NAME, or --stream-type STREAM=TYPE".into());
    }
    let ids = match args.stream_ids.as_str() {
        "name-and-id" => StreamIds::NameAndId,
        "id" => StreamIds::IdOnly,
        other => return Err(format!("--stream-ids {other:?}: name-and-id or id").into()),
    };
    if path.join("data.mdb").exists() {
        return Err(format!(
            "{} holds a store already: migrate into a new path (a migration that was \
             interrupted continues with `--path` of its target only if that store holds \
             nothing else)",
            path.display()
        )
        .into());
    }
    let options = MigrateOptions::per_event(move |e| {
        by_name
            .get(e.stream_name)
            .cloned()
            .or_else(|| fallback.clone())
    })
    .stream_ids(ids);
    let target = Storage::open(StorageConfig {
        path: path.into(),
        check_pages_on_open: true,
        encryption_enabled: master_key.is_some(),
        master_key,
        ..Default::default()
    })?;
    let report = migrate_from_v04(&args.from, &target, options)?;
    println!(
        "migrated {} events of {} streams ({} types, {} payloads to the blob store) from {} \
         into {} in {:.1?}: {:.0} events/s",
        report.events,
        report.streams,
        report.types,
        report.blobs,
        args.from.display(),
        path.display(),
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
