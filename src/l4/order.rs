//! What a sequence of arrivals says about the path: which arrivals came
//! out of order (RFC 4737) and the interarrival jitter (RFC 3550). Pure
//! functions of the times and positions the caller hands in.

/// The reordered arrivals of `sent`, which holds each arrival's position
/// in the send order, in arrival order: an arrival is reordered when one
/// sent after it arrived before it (RFC 4737's definition, as a sequence
/// number below the next expected). Each is given as `(arrival index,
/// extent)`, the extent being how many arrivals earlier the first one sent
/// after it arrived (RFC 4737's reordering extent): a swap of neighbours
/// is 1.
pub fn reordered(sent: &[u64]) -> Vec<(usize, usize)> {
    // The running maximum never decreases: the first arrival sent after
    // `s` is the first whose running maximum passes `s`.
    let mut running = Vec::with_capacity(sent.len());
    let mut max = None;
    let mut out = Vec::new();
    for (i, &s) in sent.iter().enumerate() {
        if max.is_some_and(|m| s < m) {
            let first = running.partition_point(|&m| m <= s);
            out.push((i, i - first));
        }
        max = Some(max.map_or(s, |m: u64| m.max(s)));
        running.push(max.unwrap_or(s));
    }
    out
}

/// RFC 3550's interarrival jitter (6.4.1), in nanoseconds, of `(sent,
/// received)` times in arrival order: the smoothed mean deviation of the
/// transit time, J += (|D| - J) / 16. The two clocks may differ by any
/// constant offset: only differences of transit times count, as iperf3
/// computes it on its server from the client's send times.
pub fn jitter(times: impl IntoIterator<Item = (i128, i128)>) -> f64 {
    let mut j = 0.0f64;
    let mut last: Option<i128> = None;
    for (sent, received) in times {
        let transit = received - sent;
        if let Some(prev) = last {
            let d = (transit - prev).abs() as f64;
            j += (d - j) / 16.0;
        }
        last = Some(transit);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_not_reordered() {
        assert!(reordered(&[]).is_empty());
        assert!(reordered(&[0, 1, 2, 5, 9]).is_empty());
    }

    #[test]
    fn swaps_and_late_arrivals() {
        // 1 and 2 swapped: 1 is late by one arrival.
        assert_eq!(reordered(&[0, 2, 1, 3]), vec![(2, 1)]);
        // 0 arrives last of five: 4 arrivals after the first sent after it.
        assert_eq!(reordered(&[1, 2, 3, 4, 0]), vec![(4, 4)]);
        // Two late ones.
        assert_eq!(reordered(&[3, 0, 1, 2, 4]), vec![(1, 1), (2, 2), (3, 3)]);
        // A duplicate of the last one is not reordered; an old one is.
        assert_eq!(reordered(&[0, 1, 1, 0]), vec![(3, 2)]);
    }

    #[test]
    fn jitter_follows_rfc_3550() {
        assert_eq!(jitter([]), 0.0);
        // A constant transit (any clock offset): no jitter.
        assert_eq!(jitter([(0, 1000), (10, 1010), (20, 1020)]), 0.0);
        // One transit 160 ns longer: J = 160/16 = 10, then back: 10 + (160-10)/16.
        let j = jitter([(0, 100), (10, 270), (20, 120)]);
        assert!((j - (10.0 + 150.0 / 16.0)).abs() < 1e-9, "{j}");
    }
}
