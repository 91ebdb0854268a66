//! Medians and spreads of repeated measurements.

/// Sorted copy of `xs`.
fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

/// The `p` quantile (0..=1) by nearest rank.
pub fn quantile(xs: &[f64], p: f64) -> f64 {
    let v = sorted(xs);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

pub fn median(xs: &[f64]) -> f64 {
    quantile(xs, 0.5)
}

/// `median [p10 – p90]`, each formatted with `digits` decimals.
pub fn spread(xs: &[f64], digits: usize) -> String {
    format!(
        "{:.d$} [{:.d$}–{:.d$}]",
        median(xs),
        quantile(xs, 0.1),
        quantile(xs, 0.9),
        d = digits
    )
}

/// Median of the pairwise ratios `a[i] / b[i]`: pairs taken in the same round share the
/// machine's state, so drift between rounds cancels.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}
