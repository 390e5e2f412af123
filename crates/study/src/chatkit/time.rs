//! Timestamps: stored as microseconds since the Unix epoch (UTC), sent as ISO-8601 with a `Z`.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

static LAST: AtomicI64 = AtomicI64::new(0);

impl Timestamp {
    /// From microseconds since the epoch.
    pub fn from_micros(us: i64) -> Timestamp {
        Timestamp(us)
    }

    /// Microseconds since the epoch.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// The current time, strictly increasing within this process so that items created one after
    /// another in a turn keep their order even within one microsecond.
    pub fn now() -> Timestamp {
        let wall = Utc::now().timestamp_micros();
        let mut prev = LAST.load(Ordering::Relaxed);
        loop {
            let next = if wall > prev { wall } else { prev + 1 };
            match LAST.compare_exchange_weak(prev, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Timestamp(next),
                Err(p) => prev = p,
            }
        }
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::<Utc>::from_timestamp_micros(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(dt) => write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
            None => write!(f, "1970-01-01T00:00:00.000000Z"),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

/// Parse RFC 3339 (`…Z`, `…+02:00`) or a naive ISO datetime (taken as UTC, as the Python SDK writes).
fn parse(s: &str) -> Option<Timestamp> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(Timestamp(dt.with_timezone(&Utc).timestamp_micros()));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| Timestamp(n.and_utc().timestamp_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = Timestamp::from_micros(1_795_824_878_897_667);
        let s = t.to_string();
        assert_eq!(s, "2026-11-28T00:14:38.897667Z");
        assert_eq!(parse(&s), Some(t));
        assert_eq!(parse("2026-11-28T00:14:38.897667"), Some(t));
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn now_is_strictly_increasing() {
        let a = Timestamp::now();
        let b = Timestamp::now();
        assert!(b > a);
    }
}
