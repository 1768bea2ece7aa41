//! Feeds arbitrary bytes to the header parser: it must return Ok or Err, never panic, and
//! every tensor it accepts must lie inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensor_surgeon_core::header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = header::parse(data, data.len() as u64) {
        let file_len = data.len() as u64;
        for t in &h.tensors {
            assert!(h.data_start() + t.data_offsets.1 <= file_len);
            assert_eq!(t.byte_len() * 8, t.elements() * tensor_surgeon_core::dtype::bits(t.dtype) as u64);
        }
    }
});
