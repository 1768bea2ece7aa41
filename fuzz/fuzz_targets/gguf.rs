//! Feeds arbitrary bytes to the GGUF header parser: it must return Ok or Err, never panic nor
//! allocate beyond the input's size, and every tensor it accepts must lie inside the file,
//! aligned, its size whole blocks; decoding the accepted tensors' bytes must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensor_surgeon_core::gguf::{self, quant};

fuzz_target!(|data: &[u8]| {
    let file_len = data.len() as u64;
    if let Ok(h) = gguf::parse(data, file_len) {
        for t in &h.tensors {
            let start = h.data_start + t.offset;
            assert!(start + t.size <= file_len);
            assert_eq!(t.offset % h.alignment, 0);
            assert_eq!(t.size % t.ggml_type.block_bytes() as u64, 0);
            let bytes = &data[start as usize..(start + t.size) as usize];
            if let Ok(values) = quant::to_f32(t.ggml_type, bytes) {
                assert_eq!(values.len() as u64, t.elements());
            }
        }
    }
});
