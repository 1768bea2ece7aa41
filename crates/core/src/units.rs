//! Human-readable quantities.

/// `1536` -> `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `[4, 8]` -> `"[4, 8]"`.
pub fn shape_text(shape: &[u64]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A number in `digits` significant digits: fixed notation for magnitudes 1e-3 to 1e5,
/// scientific otherwise.
pub fn significant(v: f64, digits: usize) -> String {
    let a = v.abs();
    if a == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if (1e-3..1e5).contains(&a) {
        let decimals = (digits as i32 - 1 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.prec$e}", prec = digits.saturating_sub(1))
    }
}

/// An axis tick label on an axis spanning `span`: 3 significant digits, and round-off
/// residue next to zero shown as 0.
pub fn tick_label(v: f64, span: f64) -> String {
    if v.abs() <= span.abs() * 1e-9 {
        "0".into()
    } else {
        significant(v, 3)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers() {
        assert_eq!(super::significant(0.030404407, 4), "0.03040");
        assert_eq!(super::significant(-3.4696e-5, 4), "-3.470e-5");
        assert_eq!(super::significant(262144.0, 4), "2.621e5");
        assert_eq!(super::significant(12.5, 3), "12.5");
        assert_eq!(super::tick_label(-1.11e-16, 1.0), "0");
        assert_eq!(super::tick_label(2e-14, 1e-13), "2.00e-14");
    }

    #[test]
    fn bytes() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
    }
}
