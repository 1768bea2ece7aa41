//! Quantizing values into ggml blocks, for edits of a quantized tensor's values: the edited
//! blocks are quantized again from their values with candle's quantizers (ports of ggml's
//! reference `quantize_row_*`; its K-quants search their scales with `make_qkx1_quants`,
//! an earlier form of ggml's search, so a block may differ from what llama.cpp's quantizer
//! would make from the same values, and is read by it the same way).

use crate::error::{InferError, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use tensor_surgeon_core::gguf::GgmlType;

/// candle's name for a block type it can quantize into.
fn candle_type(ty: GgmlType) -> Option<GgmlDType> {
    Some(match ty {
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// Whether values can be quantized into blocks of `ty` (so value edits of such a tensor
/// work; the others take edits of their block bytes only).
pub fn can_encode(ty: GgmlType) -> bool {
    candle_type(ty).is_some()
}

/// Quantizes `values` (whole blocks' worth) into blocks of `ty`.
pub fn encode(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let Some(dt) = candle_type(ty) else {
        return Err(InferError::Request(format!(
            "values cannot be quantized into {ty} blocks here (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and \
             Q2_K to Q6_K can): edit the block's bytes instead"
        )));
    };
    let n = ty.block_elements();
    if values.is_empty() || !values.len().is_multiple_of(n) {
        return Err(InferError::Internal(
            "values to quantize are not whole blocks",
        ));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(InferError::Request(format!(
            "{bad} cannot be stored in a {ty} block: quantized blocks hold finite values"
        )));
    }
    let t = Tensor::from_slice(values, values.len(), &Device::Cpu)?;
    Ok(QTensor::quantize(&t, dt)?.data()?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor_surgeon_core::gguf::quant;

    /// Each type quantizes values it holds exactly back to the same values, and others to
    /// values near them.
    #[test]
    fn quantized_blocks_decode_back_to_their_values() {
        // candle quantizes into every type that has per-element codes.
        for ty in quant::CODED_TYPES {
            let n = ty.block_elements() * 2;
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
                .collect();
            let bytes = encode(ty, &values).unwrap();
            assert_eq!(bytes.len(), 2 * ty.block_bytes(), "{ty}");
            let back = quant::to_f32(ty, &bytes).unwrap();
            let worst = values
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // The range is 2.5: 2 bits leave steps of ~0.8, 8 bits ~0.01.
            assert!(worst < 0.6, "{ty}: worst error {worst}");
            // What a block decodes to, quantized again, decodes the same (Q8_0 and the
            // plain types exactly; the searched K-quant scales keep the values within a step).
            let again = quant::to_f32(ty, &encode(ty, &back).unwrap()).unwrap();
            let drift = back
                .iter()
                .zip(&again)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            if ty == GgmlType::Q8_0 {
                assert_eq!(drift, 0.0, "{ty}");
            }
            assert!(drift < 0.6, "{ty}: drift {drift}");
        }
        assert!(encode(GgmlType::IQ4_NL, &[0.0; 32]).is_err());
        assert!(encode(GgmlType::Q8_0, &[f32::NAN; 32]).is_err());
    }
}
