//! Elements narrower than a byte (F4: two per byte, low nibble first; F6: a little-endian bit
//! stream): where each lives, and reading or writing its code without touching neighbours.

use crate::dtype::{self, Dtype};

/// Where one element lives in a tensor's bytes: whole bytes, or bits inside a byte group for
/// the packed dtypes (F4 two per byte, low nibble first; F6 as a little-endian bit stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementLocation {
    /// First byte, relative to the tensor's data.
    pub offset: u64,
    /// Bytes to read to hold the element.
    pub len: usize,
    /// For packed dtypes: bit shift of the code inside the (little-endian) bytes read.
    pub shift: u32,
}

/// Locates element `flat` of a `dtype` tensor.
pub fn locate(dtype: Dtype, flat: u64) -> ElementLocation {
    let bits = dtype::bits(dtype) as u64;
    if bits.is_multiple_of(8) {
        let size = bits / 8;
        return ElementLocation {
            offset: flat * size,
            len: size as usize,
            shift: 0,
        };
    }
    let bit = flat * bits;
    let offset = bit / 8;
    let shift = (bit % 8) as u32;
    let len = (shift as u64 + bits).div_ceil(8) as usize;
    ElementLocation { offset, len, shift }
}

/// Reads the code of a packed element from the bytes at its location.
pub fn unpack(dtype: Dtype, loc: ElementLocation, bytes: &[u8]) -> u8 {
    let mut word = 0u16;
    for (i, b) in bytes.iter().take(2).enumerate() {
        word |= u16::from(*b) << (8 * i);
    }
    ((word >> loc.shift) & ((1u16 << dtype::bits(dtype)) - 1)) as u8
}

/// Writes `code` into the bytes at a packed element's location, leaving neighbours intact.
pub fn repack(dtype: Dtype, loc: ElementLocation, bytes: &mut [u8], code: u8) {
    let mask = ((1u16 << dtype::bits(dtype)) - 1) << loc.shift;
    let mut word = 0u16;
    for (i, b) in bytes.iter().take(2).enumerate() {
        word |= u16::from(*b) << (8 * i);
    }
    word = (word & !mask) | ((u16::from(code) << loc.shift) & mask);
    for (i, b) in bytes.iter_mut().take(2).enumerate() {
        *b = (word >> (8 * i)) as u8;
    }
}
