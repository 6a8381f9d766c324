//! Numbers and times as the pages show them.

/// "12.345 ms" (µs resolution; negative values stay visible).
pub fn ms(ns: i64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

pub fn opt_ms(ns: Option<i64>) -> String {
    ns.map_or_else(|| "—".into(), ms)
}

/// "± 0.032 ms", or "exact" for a zero bound.
pub fn bound(ns: Option<i64>) -> String {
    match ns {
        Some(0) => "exact".into(),
        Some(e) => format!("± {}", ms(e)),
        None => "—".into(),
    }
}

/// "2026-11-25 10:47:33 UTC".
pub fn utc(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// "42 s ago", "3 min ago", "2 h ago".
pub fn age(ns: i64, now_ns: i64) -> String {
    let s = (now_ns - ns).max(0) / 1_000_000_000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7_200 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ms(20_150_000), "20.150 ms");
        assert_eq!(ms(-1_000), "-0.001 ms");
        assert_eq!(bound(Some(0)), "exact");
        assert_eq!(bound(Some(32_000)), "± 0.032 ms");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(age(0, 150_000_000_000), "2 min ago");
    }
}
