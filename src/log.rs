//! Logging to stderr at the level `LOG_LEVEL` sets (error, warn, info,
//! debug), as text or, with `LOG_FORMAT=json`, one JSON object a line
//! (`{"time": ..., "level": ..., "message": ...}`) for log pipelines.

use crate::event::clock::{Nanos, SECOND};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the level from `LOG_LEVEL` and the format from `LOG_FORMAT`; an
/// unknown value is an error naming it.
pub fn init_from_env() -> Result<(), String> {
    if let Ok(format) = std::env::var("LOG_FORMAT") {
        let json = match format.to_ascii_lowercase().as_str() {
            "json" => true,
            "text" | "" => false,
            _ => return Err(format!("LOG_FORMAT '{format}' is not one of text, json")),
        };
        JSON.store(json, Ordering::Relaxed);
    }
    let Ok(value) = std::env::var("LOG_LEVEL") else {
        return Ok(());
    };
    let level = match value.to_ascii_lowercase().as_str() {
        "error" => Level::Error,
        "warn" | "warning" => Level::Warn,
        "info" | "" => Level::Info,
        "debug" | "trace" => Level::Debug,
        _ => {
            return Err(format!(
                "LOG_LEVEL '{value}' is not one of error, warn, info, debug"
            ))
        }
    };
    LEVEL.store(level as u8, Ordering::Relaxed);
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    let now = crate::time::rfc3339(crate::event::clock::wall_now());
    eprintln!("{}", line(JSON.load(Ordering::Relaxed), level, &now, args));
}

/// One log line, without its newline.
fn line(json: bool, level: Level, time: &str, args: std::fmt::Arguments<'_>) -> String {
    let tag = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
    };
    if !json {
        return format!("{time} {tag} {args}");
    }
    serde_json::json!({
        "time": time,
        "level": tag.to_ascii_lowercase(),
        "message": args.to_string(),
    })
    .to_string()
}

/// A warning that may come again and again (a failing accept retried every
/// 50 ms, say): the first is logged, later ones with the same text are
/// counted, and the count is logged with the next one a minute or more
/// later, before a different warning, and when the holder is dropped.
#[derive(Default)]
pub struct Repeated {
    last: Option<String>,
    /// Repeats of `last` not logged yet.
    count: u64,
    logged_at: Nanos,
}

/// How long repeats of one warning are only counted.
const REPEAT_WINDOW: Nanos = 60 * SECOND;

impl Repeated {
    /// Logs `message` at warn level at `now`, or counts it as a repeat.
    pub fn warn(&mut self, message: String, now: Nanos) {
        if self.last.as_deref() == Some(message.as_str()) {
            self.count += 1;
            if now.saturating_sub(self.logged_at) < REPEAT_WINDOW {
                return;
            }
            crate::warn!("{message} (repeated {} times since)", self.count);
        } else {
            self.flush();
            crate::warn!("{message}");
        }
        self.last = Some(message);
        self.count = 0;
        self.logged_at = now;
    }

    /// Logs how many repeats were held back, if any.
    fn flush(&mut self) {
        if let (Some(last), n @ 1..) = (&self.last, self.count) {
            crate::warn!("{last} (repeated {n} more times)");
        }
        self.count = 0;
    }
}

impl Drop for Repeated {
    fn drop(&mut self) {
        self.flush();
    }
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*));
        }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_text_and_as_json() {
        let time = "2026-11-25T09:00:00.000000000Z";
        let text = line(
            false,
            Level::Warn,
            time,
            format_args!("accept: {}", "EMFILE"),
        );
        assert_eq!(text, "2026-11-25T09:00:00.000000000Z WARN accept: EMFILE");
        let message = "a \"quoted\"\nline\twith \\ and \u{1}";
        let json = line(true, Level::Info, time, format_args!("{message}"));
        assert!(!json.contains('\n'), "one line: {json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["time"], time);
        assert_eq!(v["level"], "info");
        assert_eq!(v["message"], message);
    }
}
