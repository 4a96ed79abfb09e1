//! `varvedb delete`, `truncate` and `retention`: the life of a stream, and times given on the
//! command line (`--since`, `--until`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use varvedb::{RetentionPolicy, Storage};

use crate::stream_id;

/// What `retention` does.
#[derive(clap::Subcommand)]
pub(crate) enum RetentionCommand {
    /// Lists the policies: the store's default, then each stream's (the default).
    Show {
        /// One JSON object a line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sets a stream's policy, or with --default the store's; neither limit given clears it.
    Set {
        /// The stream (decimal, 0x hex, 32 hex digits or a UUID).
        #[arg(long, value_parser = stream_id::parse, required_unless_present = "default", conflicts_with = "default")]
        stream: Option<u128>,
        /// The policy of every stream without one of its own.
        #[arg(long)]
        default: bool,
        /// Keep at most this many of the newest events.
        #[arg(long)]
        max_count: Option<u64>,
        /// Keep only events younger than this: 90s, 15m, 1h, 7d.
        #[arg(long, value_parser = parse_duration)]
        max_age: Option<Duration>,
    },
    /// Applies every policy now, and says what it removed.
    Enforce,
}

/// Removes a stream's events (`delete`, with `hard` a tombstone) or those before a version.
pub(crate) fn remove(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    stream: u128,
    before: Option<u32>,
    hard: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    let report = match (before, hard) {
        (Some(before), _) => storage.truncate_stream(stream, before)?,
        (None, true) => storage.tombstone_stream(stream)?,
        (None, false) => storage.delete_stream(stream)?,
    };
    let what = match (before, hard) {
        (Some(before), _) => format!("the events before version {before}"),
        (None, true) => "all its events, for good: it is tombstoned, and takes no append".into(),
        (None, false) => "all its events: it goes on at its next version".into(),
    };
    println!(
        "stream {}: {} events removed ({what}); {} bytes given back; first kept version {}",
        stream_id::show(stream),
        report.events_removed,
        report.bytes_reclaimed,
        report.first_kept
    );
    Ok(())
}

fn describe(policy: &RetentionPolicy) -> String {
    let mut parts = Vec::new();
    if let Some(n) = policy.max_count {
        parts.push(format!("max count {n}"));
    }
    if let Some(age) = policy.max_age {
        parts.push(format!("max age {}", show_duration(age)));
    }
    parts.join(", ")
}

/// Runs a `retention` command.
pub(crate) fn retention(
    open: impl FnOnce() -> Result<Storage, varvedb::Error>,
    command: &RetentionCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let storage = open()?;
    match command {
        RetentionCommand::Show { json } => {
            let policies = storage.retention_policies()?;
            if policies.is_empty() && !json {
                println!("no retention policy: every event is kept");
            }
            for (stream, policy) in policies {
                let target = stream.map_or("default".to_string(), stream_id::show);
                if *json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "stream": stream.map(stream_id::show),
                            "default": stream.is_none(),
                            "max_count": policy.max_count,
                            "max_age_seconds": policy.max_age.map(|a| a.as_secs_f64()),
                        })
                    );
                } else {
                    println!("{target:<36} {}", describe(&policy));
                }
            }
        }
        RetentionCommand::Set {
            stream,
            default,
            max_count,
            max_age,
        } => {
            let policy = RetentionPolicy {
                max_count: *max_count,
                max_age: *max_age,
            };
            let target = match stream {
                Some(stream) if !default => {
                    storage.set_stream_retention(*stream, policy)?;
                    format!("stream {}", stream_id::show(*stream))
                }
                _ => {
                    storage.set_default_retention(policy)?;
                    "the store's default".into()
                }
            };
            if policy.keeps_all() {
                println!("{target}: policy cleared (every event is kept)");
            } else {
                println!(
                    "{target}: {}; `varvedb retention enforce` applies it now, and stores \
                     holding a policy apply it in the background",
                    describe(&policy)
                );
            }
        }
        RetentionCommand::Enforce => {
            let report = storage.enforce_retention()?;
            println!(
                "removed {} events from {} streams; {} bytes given back",
                report.events_removed, report.streams, report.bytes_reclaimed
            );
        }
    }
    Ok(())
}

/// A duration: a number and a unit, `s`, `m`, `h` or `d` (`90s`, `15m`, `1h`, `7d`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let refused = || format!("not a duration: {s:?} (give a number and s, m, h or d: 90s, 1h)");
    let unit = s.chars().last().ok_or_else(refused)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(refused()),
    };
    let n: u64 = s[..s.len() - 1].parse().map_err(|_| refused())?;
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(refused)
}

fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{:.3}s", d.as_secs_f64()),
    }
}

/// A time on the command line: a duration before now (`1h`: an hour ago), or a UTC time
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = parse_duration(s) {
        return SystemTime::now()
            .checked_sub(ago)
            .ok_or_else(|| format!("{s:?} is before 1970"));
    }
    let refused = || {
        format!(
            "not a time: {s:?} (give a duration before now, 1h, or a UTC time \
             2026-12-07T10:00:00Z)"
        )
    };
    let t = s.strip_suffix('Z').ok_or_else(refused)?;
    let (date, clock) = t.split_once('T').ok_or_else(refused)?;
    let num = |p: &str| p.parse::<i64>().map_err(|_| refused());
    let d: Vec<&str> = date.split('-').collect();
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let c: Vec<&str> = clock.split(':').collect();
    if d.len() != 3 || c.len() != 3 || !fraction.chars().all(|ch| ch.is_ascii_digit()) {
        return Err(refused());
    }
    let (year, month, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hour, minute, second) = (num(c[0])?, num(c[1])?, num(c[2])?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || year < 1970
    {
        return Err(refused());
    }
    // Days from the civil date (proleptic Gregorian).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    let nanos: u32 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}")[..9]
            .parse()
            .map_err(|_| refused())?
    };
    let secs = u64::try_from(secs).map_err(|_| refused())?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_parse_or_are_refused() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "1", "1y", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("2026-11-26T08:00:00Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_795_680_000))
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00.5Z"),
            Ok(UNIX_EPOCH + Duration::new(951_782_400, 500_000_000))
        );
        let hour_ago = parse_time("1h").unwrap();
        let age = SystemTime::now().duration_since(hour_ago).unwrap();
        assert!(age >= Duration::from_secs(3600) && age < Duration::from_secs(3700));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-26 08:00:00",
            "2026-11-26T08:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
