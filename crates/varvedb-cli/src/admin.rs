//! `varvedb streams` and `varvedb consumers`: what a store holds and who reads it.

use std::collections::HashSet;

use varvedb::Storage;

/// What `streams` lists.
#[derive(clap::Args)]
pub(crate) struct StreamsArgs {
    /// List at most this many streams.
    #[arg(long)]
    limit: Option<u64>,
    /// Only streams holding at least one event of this type (its name, as `read` prints it,
    /// with or without `@version`). Reads the whole log.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// One JSON object a line instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints one line per stream: id, version, last sequence, last timestamp, last type.
pub(crate) fn streams(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    args: &StreamsArgs,
) -> Result<(), varvedb::Error> {
    let storage = open()?;
    let txn = storage.read_txn()?;
    let raw = storage.raw_reader();
    let wanted: Option<HashSet<u128>> = match &args.event_type {
        None => None,
        Some(name) => {
            let (name, version) = match name.split_once('@') {
                Some((n, v)) => (n, v.parse::<u16>().ok()),
                None => (name.as_str(), None),
            };
            let mut ids = HashSet::new();
            for event in raw.read_all(&txn, 1) {
                let event = event?;
                if event.event_type() == name && version.is_none_or(|v| v == event.event_version())
                {
                    ids.insert(event.stream_id());
                }
            }
            Some(ids)
        }
    };
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0;
    if !args.json {
        println!(
            "{:<34} {:>10} {:>12}  {:<30}  last type",
            "stream", "version", "last seq", "last event (UTC)"
        );
    }
    for stream in raw.streams(&txn) {
        if printed >= limit {
            break;
        }
        let stream = stream?;
        if wanted
            .as_ref()
            .is_some_and(|ids| !ids.contains(&stream.stream_id))
        {
            continue;
        }
        printed += 1;
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "stream": crate::stream_id::show(stream.stream_id),
                    "version": stream.version,
                    "last_seq": stream.last_seq,
                    "last_timestamp_ns": stream.last_timestamp_ns,
                    "last_event_utc": utc(stream.last_timestamp_ns),
                    "last_type": stream.last_event_type,
                })
            );
            continue;
        }
        println!(
            "{:<34} {:>10} {:>12}  {:<30}  {}",
            crate::stream_id::show(stream.stream_id),
            stream.version,
            stream.last_seq,
            utc(stream.last_timestamp_ns),
            stream.last_event_type
        );
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` from nanoseconds since the Unix epoch (civil-from-days,
/// proleptic Gregorian).
pub(crate) fn utc(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What `consumers` does.
#[derive(clap::Subcommand)]
pub(crate) enum ConsumersCommand {
    /// Lists the consumers with their position, lag and parked events (the default).
    List {
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Moves a consumer's cursor (a consumer group's: every partition's): its processor
    /// handles the events after POSITION next (0: from the start). Stop the processor (the
    /// group's members) first.
    Reset {
        /// The consumer.
        name: String,
        /// The global sequence of the last event it is to count as handled.
        #[arg(long)]
        to: u64,
        /// Move it past the log's last event (it then skips events appended up to that
        /// sequence); refused without this flag.
        #[arg(long)]
        force: bool,
    },
    /// Deletes a consumer's cursor and its parked events (a consumer group: its members,
    /// leases and cursors too).
    Delete {
        /// The consumer.
        name: String,
    },
    /// Lists the events a consumer parked, with the handler's error.
    Parked {
        /// The consumer.
        name: String,
    },
    /// Asks a consumer's processor to hand its parked events to its handler again (after a
    /// fix): a running processor does it within its poll interval, a stopped one when it next
    /// starts. Those its handler takes leave the parked list; the cursor does not move.
    Replay {
        /// The consumer.
        name: String,
    },
}

/// A consumer as JSON: name, position, head, lag in events and seconds, parked events.
pub(crate) fn consumer_json(c: &varvedb::Consumer) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "position": c.position,
        "head": c.head,
        "lag_events": c.lag_events,
        "lag_seconds": c.lag_seconds,
        "parked": c.parked,
    })
}

/// A consumer group as JSON: its settings, members and partitions.
pub(crate) fn group_json(g: &varvedb::ConsumerGroup) -> serde_json::Value {
    serde_json::json!({
        "group": g.name,
        "partitions": g.partitions,
        "lease_ms": g.lease_ms,
        "members": g.members.iter().map(|m| serde_json::json!({
            "name": m.name,
            "partitions": m.partitions,
            "lease_expires_ms": m.lease_expires_ms,
            "alive": m.alive,
        })).collect::<Vec<_>>(),
        "partition_states": g.partition_states.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "member": p.member,
            "generation": p.generation,
            "lease_expires_ms": p.lease_expires_ms,
            "position": p.position,
            "lag_events": p.lag_events,
        })).collect::<Vec<_>>(),
    })
}

/// A consumer group as text: its members with their partitions and leases, then each
/// partition's holder, cursor and lag.
fn print_group(g: &varvedb::ConsumerGroup) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let lease = |expires: u64| {
        if expires > now {
            format!("{:.1} s left", (expires - now) as f64 / 1000.0)
        } else {
            "expired".to_string()
        }
    };
    println!();
    println!(
        "group {}: {} partitions, leases of {} ms, {} members",
        g.name,
        g.partitions,
        g.lease_ms,
        g.members.iter().filter(|m| m.alive).count()
    );
    println!("  {:<24} {:<40} {:>14}", "member", "partitions", "lease");
    for m in &g.members {
        let parts: Vec<String> = m.partitions.iter().map(u32::to_string).collect();
        println!(
            "  {:<24} {:<40} {:>14}",
            m.name,
            parts.join(","),
            lease(m.lease_expires_ms)
        );
    }
    println!(
        "  {:>9} {:<24} {:>10} {:>12} {:>10}",
        "partition", "member", "generation", "position", "lag"
    );
    for p in &g.partition_states {
        println!(
            "  {:>9} {:<24} {:>10} {:>12} {:>10}",
            p.partition,
            p.member.as_deref().unwrap_or("-"),
            p.generation,
            p.position,
            p.lag_events
        );
    }
}

/// How a `consumers` command ended, short of an error.
pub(crate) enum Outcome {
    Done,
    /// The consumer named does not exist (exit 1).
    Missing,
    /// The command was refused as given, and nothing changed (exit 2).
    Refused,
}

/// Runs a `consumers` command.
pub(crate) fn consumers(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    command: &ConsumersCommand,
) -> Result<Outcome, varvedb::Error> {
    let storage = open()?;
    let known = |storage: &Storage, name: &str| -> Result<bool, varvedb::Error> {
        Ok(storage.consumer_position(name)?.is_some()
            || storage.consumer_groups()?.iter().any(|g| g.name == name))
    };
    match command {
        ConsumersCommand::List { json: true } => {
            for c in storage.consumers()? {
                println!("{}", consumer_json(&c));
            }
            for g in storage.consumer_groups()? {
                println!("{}", group_json(&g));
            }
        }
        ConsumersCommand::List { json: false } => {
            println!(
                "{:<32} {:>12} {:>12} {:>10} {:>10} {:>8}",
                "consumer", "position", "head", "lag", "lag (s)", "parked"
            );
            for c in storage.consumers()? {
                println!(
                    "{:<32} {:>12} {:>12} {:>10} {:>10.1} {:>8}",
                    c.name, c.position, c.head, c.lag_events, c.lag_seconds, c.parked
                );
            }
            for g in storage.consumer_groups()? {
                print_group(&g);
            }
        }
        ConsumersCommand::Reset { name, to, force } => {
            if !known(&storage, name)? {
                eprintln!("varvedb: no consumer named {name:?}");
                return Ok(Outcome::Missing);
            }
            let head = storage.last_seq(&storage.read_txn()?)?;
            if *to > head && !force {
                eprintln!(
                    "varvedb: the log ends at sequence {head}, so consumer {name} cannot be put \
                     at {to}: it would skip the next {} events appended; nothing changed (give \
                     --force to do it anyway)",
                    to - head
                );
                return Ok(Outcome::Refused);
            }
            storage.reset_consumer(name, *to)?;
            println!("consumer {name} now at {to}");
        }
        ConsumersCommand::Delete { name } => {
            if !storage.delete_consumer(name)? {
                eprintln!("varvedb: no consumer named {name:?}");
                return Ok(Outcome::Missing);
            }
            println!("consumer {name} deleted");
        }
        ConsumersCommand::Parked { name } => {
            if !known(&storage, name)? {
                eprintln!("varvedb: no consumer named {name:?}");
                return Ok(Outcome::Missing);
            }
            for p in storage.parked_events(name)? {
                println!("{:>12}  {}", p.seq, p.reason);
            }
        }
        ConsumersCommand::Replay { name } => {
            if !known(&storage, name)? {
                eprintln!("varvedb: no consumer named {name:?}");
                return Ok(Outcome::Missing);
            }
            match storage.request_parked_replay(name)? {
                0 => println!("consumer {name} has no parked events"),
                n => println!(
                    "replay of {n} parked events asked of consumer {name}: its processor hands \
                     them to its handler again (at once if it runs, else when it starts)"
                ),
            }
        }
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-26T08:00:00Z
        assert_eq!(
            utc(1_795_680_000 * 1_000_000_000 + 5),
            "2026-11-26T08:00:00.000000005Z"
        );
        // A leap day.
        assert_eq!(
            utc(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
