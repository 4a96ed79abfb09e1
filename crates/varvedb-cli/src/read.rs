//! `varvedb read`: events with their envelope, through the untyped view (no Rust types needed).

use std::io::Write;
use varvedb::{RawEvent, Storage};

/// What to read.
#[derive(clap::Args)]
pub(crate) struct ReadArgs {
    /// One event, by global sequence.
    #[arg(long, conflicts_with_all = ["stream", "from_seq"])]
    seq: Option<u64>,
    /// A stream (decimal, 0x hex, 32 hex digits or a UUID), from `--from-version`.
    #[arg(long, value_parser = crate::stream_id::parse)]
    stream: Option<u128>,
    /// With `--stream`: the first version to print.
    #[arg(long, default_value_t = 1, requires = "stream")]
    from_version: u32,
    /// The log from this global sequence on (the default: the whole log).
    #[arg(long)]
    from_seq: Option<u64>,
    /// Only events carrying this tag (repeatable: all of them), found through the tag index;
    /// with `--from-seq`, from there on.
    #[arg(long = "tag", conflicts_with_all = ["seq", "stream"])]
    tags: Vec<String>,
    /// Only events of this type name (repeatable: any of them); with `--tag`, through the index,
    /// otherwise a filter over the log.
    #[arg(long = "type", conflicts_with_all = ["seq", "stream"])]
    types: Vec<String>,
    /// Print at most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Only events committed at this time or later: a duration before now (1h, 15m) or a UTC
    /// time (2026-12-07T10:00:00Z). Found by a binary search over the log.
    #[arg(long, value_parser = crate::lifecycle::parse_time, conflicts_with_all = ["seq", "from_seq"])]
    since: Option<std::time::SystemTime>,
    /// Only events committed before this time (same forms as --since).
    #[arg(long, value_parser = crate::lifecycle::parse_time)]
    until: Option<std::time::SystemTime>,
    /// One JSON object a line instead of text.
    #[arg(long)]
    json: bool,
    /// Show each event's payload bytes as hex digits (`payload` in text, `payload_hex` in
    /// JSON), as `mdb_dump` does: the stored rkyv archive of a typed event, decrypted when the
    /// key is given.
    #[arg(long)]
    hex: bool,
}

/// Prints the events asked for; damaged ones are reported on stderr and skipped. Returns
/// whether every event could be read.
pub(crate) fn run(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    args: &ReadArgs,
) -> Result<bool, varvedb::Error> {
    let storage = open()?;
    let txn = storage.read_txn()?;
    let raw = storage.raw_reader();
    // --since: where the log reaches the time (a binary search); nothing at all past the end.
    let since_seq = match args.since {
        Some(time) => Some(storage.seq_at_time(&txn, time)?.unwrap_or(u64::MAX)),
        None => None,
    };
    let until_ns = args.until.map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let since_ns = args.since.map(|t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    });
    let from_seq = args.from_seq.or(since_seq);
    let query = (!args.tags.is_empty() || !args.types.is_empty())
        .then(|| varvedb::Query::new().types(&args.types).tags(&args.tags));
    let events: Box<dyn Iterator<Item = varvedb::Result<RawEvent<'_>>>> =
        match (args.seq, args.stream, &query) {
            (Some(seq), _, _) => Box::new(raw.get(&txn, seq).transpose().into_iter()),
            (None, Some(stream), _) => Box::new(raw.read_stream(&txn, stream, args.from_version)),
            (None, None, Some(query)) => {
                Box::new(raw.read_query(&txn, query, from_seq.unwrap_or(1)))
            }
            (None, None, None) => Box::new(raw.read_all(&txn, from_seq.unwrap_or(1))),
        };
    let mut out = std::io::stdout().lock();
    let mut clean = true;
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0;
    for event in events {
        if printed >= limit {
            break;
        }
        match event {
            // Commit times never decrease along the log: past --until, nothing more is in.
            Ok(e) if until_ns.is_some_and(|until| e.timestamp_ns() >= until) => {
                if args.stream.is_none() {
                    break;
                }
            }
            // A stream read is by version: --since filters it.
            Ok(e) if since_ns.is_some_and(|since| e.timestamp_ns() < since) => {}
            Ok(e) => {
                let mut line = if args.json { json(&e) } else { text(&e) };
                if args.hex {
                    with_hex(&mut line, e.payload_bytes(), args.json);
                }
                if writeln!(out, "{line}").is_err() {
                    // A closed pipe (`| head`): stop quietly.
                    return Ok(clean);
                }
                printed += 1;
            }
            Err(e) => {
                clean = false;
                eprintln!("varvedb: {e}");
            }
        }
    }
    if args.seq.is_some() && printed == 0 && clean {
        eprintln!("varvedb: no event at that sequence");
        return Ok(false);
    }
    if let (None, Some(stream)) = (args.seq, args.stream)
        && printed == 0
        && limit > 0
        && clean
    {
        let version = storage.stream_version(&txn, stream)?;
        if version == 0 {
            eprintln!(
                "varvedb: stream {} has no events",
                crate::stream_id::show(stream)
            );
        } else {
            eprintln!(
                "varvedb: stream {} ends at version {version}, before version {}",
                crate::stream_id::show(stream),
                args.from_version
            );
        }
        return Ok(false);
    }
    Ok(clean)
}

/// Adds `payload`'s bytes as hex digits to a printed event: ` payload 0a1b…` to text, a
/// `"payload_hex"` field to a JSON object.
fn with_hex(line: &mut String, payload: &[u8], json_line: bool) {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(payload.len() * 2);
    for b in payload {
        let _ = write!(hex, "{b:02x}");
    }
    if json_line {
        line.pop();
        line.push_str(&format!(",\"payload_hex\":\"{hex}\"}}"));
    } else {
        line.push_str(&format!(" payload {hex}"));
    }
}

pub(crate) fn type_name(e: &RawEvent<'_>) -> String {
    if e.event_container().is_empty() {
        e.event_type().to_string()
    } else {
        format!("{}::{}", e.event_container(), e.event_type())
    }
}

pub(crate) fn text(e: &RawEvent<'_>) -> String {
    let mut line = format!(
        "seq {} stream {} v{} {} v{} at {} ns, {} payload bytes{}",
        e.seq(),
        crate::stream_id::show(e.stream_id()),
        e.version(),
        type_name(e),
        e.event_version(),
        e.timestamp_ns(),
        e.payload_bytes().len(),
        if e.is_blob() { " (blob)" } else { "" }
    );
    if let Some(data) = varvedb::JsonEvent::data_of(e) {
        line.push_str(&format!(" data {data}"));
    }
    if e.is_shredded() {
        line.push_str(" shredded");
    } else if e.is_encrypted() && e.payload_bytes().is_empty() {
        line.push_str(" encrypted (no key given)");
    } else if e.is_encrypted() {
        line.push_str(" encrypted");
    }
    for (label, id) in [
        ("id", e.event_id()),
        ("correlation", e.correlation_id()),
        ("causation", e.causation_id()),
    ] {
        if let Some(id) = id {
            line.push_str(&format!(" {label} {id}"));
        }
    }
    for tag in e.tags() {
        line.push_str(&format!(" #{tag}"));
    }
    for (k, v) in e.metadata().iter() {
        line.push_str(&format!(" {k}={v:?}"));
    }
    line
}

/// A JSON string literal: the text, escaped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn json(e: &RawEvent<'_>) -> String {
    let id =
        |id: Option<varvedb::EventId>| id.map_or("null".to_string(), |i| quote(&i.to_string()));
    let metadata: Vec<String> = e
        .metadata()
        .iter()
        .map(|(k, v)| format!("[{},{}]", quote(k), quote(v)))
        .collect();
    let tags: Vec<String> = e.tags().map(quote).collect();
    // Stream ids are u128: a hex string, as JSON numbers lose precision past 2^53.
    format!(
        "{{\"seq\":{},\"stream\":\"{}\",\"version\":{},\"type\":{},\"container\":{},\"type_version\":{},\"timestamp_ns\":{},\"event_id\":{},\"correlation_id\":{},\"causation_id\":{},\"tags\":[{}],\"metadata\":[{}],\"payload_bytes\":{},\"blob\":{},\"encrypted\":{},\"shredded\":{}{}}}",
        e.seq(),
        crate::stream_id::show(e.stream_id()),
        e.version(),
        quote(e.event_type()),
        quote(e.event_container()),
        e.event_version(),
        e.timestamp_ns(),
        id(e.event_id()),
        id(e.correlation_id()),
        id(e.causation_id()),
        tags.join(","),
        metadata.join(","),
        e.payload_bytes().len(),
        e.is_blob(),
        e.is_encrypted(),
        e.is_shredded(),
        varvedb::JsonEvent::data_of(e).map_or(String::new(), |d| format!(",\"data\":{d}"))
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(
            super::quote("a\"b\\c\n\u{1}é"),
            "\"a\\\"b\\\\c\\n\\u0001é\""
        );
    }
}

/// What `tail` follows.
#[derive(clap::Args)]
pub(crate) struct TailArgs {
    /// Keep following: print new events as other processes append them, until stopped
    /// (Ctrl-C). Without it, print the last events and exit.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only this stream (decimal, 0x hex, 32 hex digits or a UUID).
    #[arg(long, value_parser = crate::stream_id::parse)]
    stream: Option<u128>,
    /// Only events of this type (the name `read` prints, with or without the enum's name).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// How many of the last events to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: u64,
    /// Print the events committed since this time first (a duration before now, 1h, or a UTC
    /// time), instead of the last -n.
    #[arg(long, value_parser = crate::lifecycle::parse_time)]
    since: Option<std::time::SystemTime>,
    /// One JSON object a line instead of text.
    #[arg(long)]
    json: bool,
    /// Pass over damaged events instead of stopping at the first: each is named on stderr,
    /// and the count is given at the end (exit 1).
    #[arg(long)]
    skip_damaged: bool,
    /// How often to look for new events, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    poll_ms: u64,
}

/// Prints the last `lines` matching events, then with `-f` follows the log. Returns when the
/// output is closed, or (without `-f`) after the last events.
pub(crate) fn tail(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    args: &TailArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let raw = storage.raw_reader();
    let matches = |e: &RawEvent<'_>| {
        args.stream.is_none_or(|s| s == e.stream_id())
            && args
                .event_type
                .as_deref()
                .is_none_or(|t| t == e.event_type() || t == type_name(e))
    };
    let mut out = std::io::stdout().lock();
    let mut skipped = crate::Skipped::default();
    // A damaged event: an error, or with --skip-damaged named on stderr and passed over.
    let mut pass_over = |at: u64, e: varvedb::Error| -> Result<u64, varvedb::Error> {
        if !args.skip_damaged || e.kind() != varvedb::ErrorKind::Corruption {
            return Err(e);
        }
        eprintln!("varvedb: skipped a damaged event at sequence {at}: {e}");
        Ok(skipped.pass(at, &e))
    };
    // The last `lines` matching events: walk back from the head. The lines are printed once
    // found; every event is read in a snapshot of its own only after damage (LMDB refuses the
    // rest of a snapshot in which it found its pages damaged).
    let mut next = {
        let head = storage.last_seq(&storage.read_txn()?)?;
        let mut found = Vec::new();
        let mut txn = storage.read_txn()?;
        // --since: every event from where the log reaches the time, not the last -n.
        let (stop, lines) = match args.since {
            Some(time) => match storage.seq_at_time(&txn, time)? {
                Some(from) => (from.saturating_sub(1), u64::MAX),
                None => (head, 0),
            },
            None => (0, args.lines),
        };
        let mut seq = head;
        while seq > stop && (found.len() as u64) < lines {
            match raw.get(&txn, seq) {
                Ok(Some(e)) if matches(&e) => found.push(text_or_json(&e, args.json)),
                Ok(_) => {}
                Err(e) => {
                    pass_over(seq, e)?;
                    txn = storage.read_txn()?;
                }
            }
            seq -= 1;
        }
        for line in found.iter().rev() {
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
        head + 1
    };
    if args.follow {
        let _ = out.flush();
        loop {
            std::thread::sleep(std::time::Duration::from_millis(args.poll_ms));
            let txn = storage.read_txn()?;
            for e in raw.read_all(&txn, next) {
                let e = match e {
                    Ok(e) => e,
                    Err(e) => {
                        next = pass_over(next, e)?;
                        break;
                    }
                };
                next = e.seq() + 1;
                if !matches(&e) {
                    continue;
                }
                if writeln!(out, "{}", text_or_json(&e, args.json)).is_err() {
                    return Ok(());
                }
            }
            if out.flush().is_err() {
                return Ok(());
            }
        }
    }
    skipped.into_result()
}

fn text_or_json(e: &RawEvent<'_>, json_lines: bool) -> String {
    if json_lines { json(e) } else { text(e) }
}
