//! Sub-16-bit float formats (the F8, F6 and F4 families) as one parameterised codec.
//!
//! Every format here has at most 256 codes, so decoding is arithmetic and encoding is a
//! nearest-value search in a table of the format's finite values, built once. That makes
//! encode the exact inverse of decode by construction (round to nearest, ties to the even
//! code), and the decode side is checked code by code against `ml_dtypes` in the tests.

use std::sync::OnceLock;

/// How a format spends its special codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Specials {
    /// IEEE-like: all-ones exponent is ±Inf (mantissa 0) or NaN (`F8_E5M2`).
    Ieee,
    /// No Inf; only the all-ones exponent *and* mantissa is NaN (`F8_E4M3`, "fn").
    AllOnesNan,
    /// No Inf, no negative zero; the lone sign bit (0x80) is NaN (`*FNUZ`).
    Fnuz,
    /// Every code is a finite number (`F6_*`, `F4`).
    FiniteOnly,
    /// Unsigned power of two, 0xFF is NaN (`F8_E8M0`).
    E8M0,
}

/// A small float format: field widths, exponent bias and special-value layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minifloat {
    pub exp_bits: u32,
    pub man_bits: u32,
    pub bias: i32,
    pub specials: Specials,
}

pub const F8_E4M3: Minifloat = Minifloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    specials: Specials::AllOnesNan,
};
pub const F8_E5M2: Minifloat = Minifloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    specials: Specials::Ieee,
};
pub const F8_E4M3FNUZ: Minifloat = Minifloat {
    exp_bits: 4,
    man_bits: 3,
    bias: 8,
    specials: Specials::Fnuz,
};
pub const F8_E5M2FNUZ: Minifloat = Minifloat {
    exp_bits: 5,
    man_bits: 2,
    bias: 16,
    specials: Specials::Fnuz,
};
pub const F8_E8M0: Minifloat = Minifloat {
    exp_bits: 8,
    man_bits: 0,
    bias: 127,
    specials: Specials::E8M0,
};
pub const F6_E2M3: Minifloat = Minifloat {
    exp_bits: 2,
    man_bits: 3,
    bias: 1,
    specials: Specials::FiniteOnly,
};
pub const F6_E3M2: Minifloat = Minifloat {
    exp_bits: 3,
    man_bits: 2,
    bias: 3,
    specials: Specials::FiniteOnly,
};
pub const F4_E2M1: Minifloat = Minifloat {
    exp_bits: 2,
    man_bits: 1,
    bias: 1,
    specials: Specials::FiniteOnly,
};

/// Why a value has no code in a format.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unrepresentable {
    /// Beyond the largest finite value (and the format has no Inf to round to).
    Overflow { max: f64 },
    /// NaN or Inf in a format without it, or a negative/zero value in an unsigned format.
    Special,
}

/// A table of the non-negative finite values, ascending, with their codes.
struct Table {
    values: Vec<(f64, u8)>,
}

impl Minifloat {
    /// Width of a code in bits.
    pub fn bits(&self) -> u32 {
        let sign = u32::from(self.specials != Specials::E8M0);
        sign + self.exp_bits + self.man_bits
    }

    fn sign_bit(&self) -> u8 {
        if self.specials == Specials::E8M0 {
            0
        } else {
            1u8 << (self.exp_bits + self.man_bits)
        }
    }

    /// The value of a code (only the low `bits()` bits are read).
    pub fn decode(&self, code: u8) -> f64 {
        let mask = ((1u16 << self.bits()) - 1) as u8;
        let code = code & mask;
        if self.specials == Specials::E8M0 {
            return if code == 0xFF {
                f64::NAN
            } else {
                2f64.powi(i32::from(code) - self.bias)
            };
        }
        let sign_bit = self.sign_bit();
        let negative = code & sign_bit != 0;
        let exp_max = (1u32 << self.exp_bits) - 1;
        let man_max = (1u32 << self.man_bits) - 1;
        let exp = (u32::from(code) >> self.man_bits) & exp_max;
        let man = u32::from(code) & man_max;
        match self.specials {
            Specials::Ieee if exp == exp_max => {
                return match (man, negative) {
                    (0, false) => f64::INFINITY,
                    (0, true) => f64::NEG_INFINITY,
                    _ => f64::NAN,
                }
            }
            Specials::AllOnesNan if exp == exp_max && man == man_max => return f64::NAN,
            Specials::Fnuz if code == sign_bit => return f64::NAN,
            _ => {}
        }
        let frac = f64::from(man) / f64::from(1u32 << self.man_bits);
        let magnitude = if exp == 0 {
            frac * 2f64.powi(1 - self.bias)
        } else {
            (1.0 + frac) * 2f64.powi(exp as i32 - self.bias)
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    fn table(&self) -> &'static Table {
        static TABLES: [OnceLock<Table>; 8] = [const { OnceLock::new() }; 8];
        let slot = match *self {
            F8_E4M3 => 0,
            F8_E5M2 => 1,
            F8_E4M3FNUZ => 2,
            F8_E5M2FNUZ => 3,
            F8_E8M0 => 4,
            F6_E2M3 => 5,
            F6_E3M2 => 6,
            _ => 7,
        };
        debug_assert!(slot != 7 || *self == F4_E2M1, "unknown minifloat format");
        TABLES[slot].get_or_init(|| {
            let codes = 1u16 << self.bits();
            let mut values: Vec<(f64, u8)> = (0..codes)
                .map(|c| c as u8)
                .filter(|&c| c & self.sign_bit() == 0)
                .map(|c| (self.decode(c), c))
                .filter(|(v, _)| v.is_finite())
                .collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            Table { values }
        })
    }

    /// The largest finite value.
    pub fn max_finite(&self) -> f64 {
        self.table().values.last().map_or(0.0, |v| v.0)
    }

    /// The code nearest to `value` (ties to the even code). With `saturate`, values beyond the
    /// finite range (and Inf where the format has none) become ±max instead of an error.
    pub fn encode(&self, value: f64, saturate: bool) -> Result<u8, Unrepresentable> {
        let sign = self.sign_bit();
        if value.is_nan() {
            return match self.specials {
                Specials::Ieee => Ok(((1u8 << self.exp_bits) - 1) << self.man_bits | 0b10),
                Specials::AllOnesNan => Ok(((1u16 << (self.exp_bits + self.man_bits)) - 1) as u8),
                Specials::Fnuz => Ok(sign),
                Specials::E8M0 => Ok(0xFF),
                Specials::FiniteOnly => Err(Unrepresentable::Special),
            };
        }
        let table = &self.table().values;
        let negative = value.is_sign_negative();
        if self.specials == Specials::E8M0 && (negative || value == 0.0) {
            return if saturate {
                Ok(table[0].1)
            } else {
                Err(Unrepresentable::Special)
            };
        }
        let magnitude = value.abs();
        let max = self.max_finite();
        let code = if magnitude > max {
            let below = table.len().checked_sub(2).map_or(0.0, |i| table[i].0);
            let overflow = magnitude.is_infinite() || magnitude - max >= (max - below) / 2.0;
            if !overflow {
                table[table.len() - 1].1
            } else if value.is_infinite() && self.specials == Specials::Ieee {
                ((1u8 << self.exp_bits) - 1) << self.man_bits
            } else if saturate {
                table[table.len() - 1].1
            } else if value.is_infinite() {
                return Err(Unrepresentable::Special);
            } else {
                return Err(Unrepresentable::Overflow { max });
            }
        } else {
            // First entry >= magnitude.
            let hi = table.partition_point(|e| e.0 < magnitude);
            let (hv, hc) = table[hi];
            if hv == magnitude || hi == 0 {
                hc
            } else {
                let (lv, lc) = table[hi - 1];
                let (dl, dh) = (magnitude - lv, hv - magnitude);
                if dl < dh || (dl == dh && lc & 1 == 0) {
                    lc
                } else {
                    hc
                }
            }
        };
        let is_zero = code == 0;
        if negative
            && self.specials != Specials::E8M0
            && !(is_zero && self.specials == Specials::Fnuz)
        {
            Ok(code | sign)
        } else {
            Ok(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let rows: &[(&str, Minifloat, u8, f64)] = &[
            ("e4m3 one", F8_E4M3, 0x38, 1.0),
            ("e4m3 max", F8_E4M3, 0x7E, 448.0),
            ("e4m3 min subnormal", F8_E4M3, 0x01, 2f64.powi(-9)),
            ("e5m2 one", F8_E5M2, 0x3C, 1.0),
            ("e5m2 max", F8_E5M2, 0x7B, 57344.0),
            ("e5m2 inf", F8_E5M2, 0x7C, f64::INFINITY),
            ("e4m3fnuz one", F8_E4M3FNUZ, 0x40, 1.0),
            ("e4m3fnuz max", F8_E4M3FNUZ, 0x7F, 240.0),
            ("e5m2fnuz max", F8_E5M2FNUZ, 0x7F, 57344.0),
            ("e8m0 one", F8_E8M0, 127, 1.0),
            ("e8m0 min", F8_E8M0, 0, 2f64.powi(-127)),
            ("f6 e2m3 max", F6_E2M3, 0x1F, 7.5),
            ("f6 e3m2 max", F6_E3M2, 0x1F, 28.0),
            ("f4 max", F4_E2M1, 0x7, 6.0),
            ("f4 -0.5", F4_E2M1, 0x9, -0.5),
        ];
        for &(label, f, code, value) in rows {
            assert_eq!(f.decode(code), value, "{label}");
            assert_eq!(f.encode(value, false), Ok(code), "{label}");
        }
    }

    #[test]
    fn nan_codes() {
        assert!(F8_E4M3.decode(0x7F).is_nan());
        assert!(F8_E4M3.decode(0xFF).is_nan());
        assert!(F8_E4M3FNUZ.decode(0x80).is_nan());
        assert!(F8_E8M0.decode(0xFF).is_nan());
        assert_eq!(
            F4_E2M1.encode(f64::NAN, false),
            Err(Unrepresentable::Special)
        );
    }

    #[test]
    fn every_code_round_trips() {
        for f in [
            F8_E4M3,
            F8_E5M2,
            F8_E4M3FNUZ,
            F8_E5M2FNUZ,
            F8_E8M0,
            F6_E2M3,
            F6_E3M2,
            F4_E2M1,
        ] {
            for code in 0..(1u16 << f.bits()) {
                let code = code as u8;
                let v = f.decode(code);
                let back = f.encode(v, false).expect("decoded values encode");
                if v.is_nan() {
                    assert!(f.decode(back).is_nan(), "{f:?} {code:#x}");
                } else {
                    assert_eq!(f.decode(back).to_bits(), v.to_bits(), "{f:?} {code:#x}");
                }
            }
        }
    }

    #[test]
    fn rounding_and_overflow() {
        // 1.0 and 1.125 are neighbours in E4M3; halfway ties to the even code (1.0 = 0x38).
        assert_eq!(F8_E4M3.encode(1.0625, false), Ok(0x38));
        assert_eq!(F8_E4M3.encode(1.07, false), Ok(0x39));
        assert_eq!(
            F8_E4M3.encode(1000.0, false),
            Err(Unrepresentable::Overflow { max: 448.0 })
        );
        assert_eq!(F8_E4M3.encode(1000.0, true), Ok(0x7E));
        assert_eq!(F8_E4M3.encode(-1000.0, true), Ok(0xFE));
        assert_eq!(
            F8_E5M2.encode(1e6, false),
            Err(Unrepresentable::Overflow { max: 57344.0 })
        );
        assert_eq!(
            F8_E4M3FNUZ.encode(-0.0, false),
            Ok(0x00),
            "fnuz has no negative zero"
        );
        assert_eq!(F8_E8M0.encode(-1.0, false), Err(Unrepresentable::Special));
    }
}
