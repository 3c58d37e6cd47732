//! Arbitrary bytes into the JSON and msgpack decoders. What decodes must encode again, and the
//! encoding must be stable: decode(encode(v)) encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rqueue_core::codec::{dumps, loads, Codec};
use rqueue_core::error::Error;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Json, Codec::Msgpack] {
        match loads(data, codec) {
            Ok(value) => {
                let once = dumps(&value, codec).expect("encoding a value its own codec decoded");
                let again = loads(&once, codec).expect("re-decoding our own encoding");
                let twice = dumps(&again, codec).expect("re-encoding a decoded value");
                assert_eq!(once, twice, "encoding is not stable");
            }
            Err(e) => assert!(
                matches!(e, Error::Decode(_) | Error::TooLarge { .. }),
                "{e:?}"
            ),
        }
    }
});
