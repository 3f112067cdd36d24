//! Numbers for people: byte sizes in decimal units (`4.7 GB`), relative times
//! (`3 weeks ago`, `4 minutes from now`, `Forever`), Go-style durations (`325.953ms`) for the
//! `--verbose` timings, and the `ps` PROCESSOR column — all spelled as Ollama spells them, so
//! scripts and habits carry over.

use std::time::Duration;

const KB: u64 = 1000;
const MB: u64 = KB * 1000;
const GB: u64 = MB * 1000;
const TB: u64 = GB * 1000;

/// A byte count in decimal units: whole numbers from 10 up, one decimal below 10 when there is
/// a fraction (`1.1 GB`, `4 GB`, `586 MB`, `512 B`).
pub fn bytes(count: u64) -> String {
    let (unit, size) = match count {
        n if n >= TB => ("TB", TB),
        n if n >= GB => ("GB", GB),
        n if n >= MB => ("MB", MB),
        n if n >= KB => ("KB", KB),
        n => return format!("{n} B"),
    };
    let value = count as f64 / size as f64;
    let tenths = (value * 10.0).round() / 10.0;
    if value >= 10.0 {
        format!("{} {unit}", value.trunc() as u64)
    } else if tenths.fract() == 0.0 {
        format!("{} {unit}", tenths as u64)
    } else {
        format!("{tenths:.1} {unit}")
    }
}

/// An approximate span: `Less than a second`, `5 seconds`, `About a minute`, `3 hours`,
/// `2 weeks`, `5 months`, `2 years`.
pub fn span(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => return "Less than a second".into(),
        1 => return "1 second".into(),
        2..60 => return format!("{seconds} seconds"),
        _ => {}
    }
    let minutes = seconds / 60;
    match minutes {
        1 => return "About a minute".into(),
        2..60 => return format!("{minutes} minutes"),
        _ => {}
    }
    let hours = (duration.as_secs_f64() / 3600.0).round() as u64;
    match hours {
        1 => "About an hour".into(),
        2..48 => format!("{hours} hours"),
        h if h < 24 * 7 * 2 => format!("{} days", h / 24),
        h if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        h if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        h => format!("{} years", h / 24 / 365),
    }
}

/// `then` relative to `now`: `2 hours ago`, `4 minutes from now`, or `Forever` for a time more
/// than 20 years ahead (how the server reports a model kept loaded with a negative keep-alive).
pub fn relative(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    const TWENTY_YEARS: i64 = 20 * 365 * 24 * 3600;
    let delta = now.as_second() - then.as_second();
    if delta < -TWENTY_YEARS {
        return "Forever".into();
    }
    let nanos = (now.as_nanosecond() - then.as_nanosecond()).unsigned_abs();
    let duration = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    if now < then {
        format!("{} from now", span(duration))
    } else {
        format!("{} ago", span(duration))
    }
}

/// A duration as Go prints `time.Duration` (`5.043500667s`, `325.953ms`, `1m2.5s`, `812µs`),
/// which is how `--verbose` timings look in Ollama.
pub fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = decimal(nanos % 60_000_000_000, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / unit` with the fraction's trailing zeros dropped (`325953000 / 1e6` → `325.953`).
fn decimal(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Where a loaded model lives, from its total size and the part in GPU memory:
/// `100% CPU`, `100% GPU`, or `48%/52% CPU/GPU`.
pub fn processor(size: u64, size_vram: u64) -> String {
    if size_vram == 0 {
        return "100% CPU".into();
    }
    if size_vram == size {
        return "100% GPU".into();
    }
    if size_vram > size || size == 0 {
        return "Unknown".into();
    }
    let cpu = ((size - size_vram) as f64 / size as f64 * 100.0).round() as u64;
    format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
}

/// An estimated time left for a progress bar: `45s`, `3m56s`, `1h12m`, capped at `99h+`.
pub fn eta(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 100 * 3600 {
        return "99h+".into();
    }
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        let table = [
            (0, "0 B"),
            (512, "512 B"),
            (1_000, "1 KB"),
            (1_500, "1.5 KB"),
            (586_000_000, "586 MB"),
            (1_117_320_032, "1.1 GB"),
            (4_683_075_271, "4.7 GB"),
            (4_000_000_000, "4 GB"),
            (9_990_000_000, "10 GB"),
            (10_500_000_000, "10 GB"),
            (404_000_000_000, "404 GB"),
            (1_300_000_000_000, "1.3 TB"),
        ];
        for (count, want) in table {
            assert_eq!(bytes(count), want, "{count}");
        }
    }

    #[test]
    fn spans() {
        let table = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (59 * 60, "59 minutes"),
            (3600, "About an hour"),
            (2 * 3600, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (13 * 86_400, "13 days"),
            (14 * 86_400, "2 weeks"),
            (60 * 86_400, "2 months"),
            (800 * 86_400, "2 years"),
        ];
        for (seconds, want) in table {
            assert_eq!(span(Duration::from_secs(seconds)), want, "{seconds}s");
        }
    }

    #[test]
    fn relative_times() {
        let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(relative(at("2026-11-28T10:00:00Z"), now), "2 hours ago");
        // Offsets other than Z, as Ollama's list uses, are the same instant.
        assert_eq!(
            relative(at("2026-11-28T04:00:00-07:00"), now),
            "About an hour ago"
        );
        assert_eq!(
            relative(at("2026-11-28T12:04:30Z"), now),
            "4 minutes from now"
        );
        assert_eq!(relative(at("2318-08-02T00:00:00Z"), now), "Forever");
        assert_eq!(relative(at("2026-11-07T12:00:00Z"), now), "3 weeks ago");
    }

    #[test]
    fn go_durations() {
        let table = [
            (0, "0s"),
            (812, "812ns"),
            (1_500, "1.5µs"),
            (5_025_959, "5.025959ms"),
            (325_953_000, "325.953ms"),
            (4_709_213_000, "4.709213s"),
            (5_043_500_667, "5.043500667s"),
            (62_500_000_000, "1m2.5s"),
            (3_600_000_000_000, "1h0m0s"),
        ];
        for (nanos, want) in table {
            assert_eq!(go_duration(Duration::from_nanos(nanos)), want, "{nanos}");
        }
    }

    #[test]
    fn processor_column() {
        assert_eq!(processor(5_000, 0), "100% CPU");
        assert_eq!(processor(5_000, 5_000), "100% GPU");
        assert_eq!(processor(100, 52), "48%/52% CPU/GPU");
        assert_eq!(processor(3, 1), "67%/33% CPU/GPU");
        assert_eq!(processor(10, 20), "Unknown");
    }

    #[test]
    fn etas() {
        assert_eq!(eta(Duration::from_secs(45)), "45s");
        assert_eq!(eta(Duration::from_secs(236)), "3m56s");
        assert_eq!(eta(Duration::from_mins(72)), "1h12m");
        assert_eq!(eta(Duration::from_hours(400)), "99h+");
    }
}
