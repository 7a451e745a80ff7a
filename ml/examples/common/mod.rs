//! What the speed examples share.

/// This process's CPU time so far (user + system, all threads), in seconds, from
/// `/proc/self/stat` (10 ms ticks); NaN where it cannot be read.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse::<f64>().unwrap_or(f64::NAN))
        .sum::<f64>()
        / 100.0
}
