//! Arbitrary bytes into the envelope decoder: it returns a message or an input error, never panics,
//! and never fails with an error that is not about the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rqueue_core::error::Error;
use rqueue_core::protocol::{decode_envelope, decode_task_message, Accept, DEFAULT_MAX_SIZE};

fn check<T>(result: Result<T, Error>) {
    if let Err(e) = result {
        assert!(
            matches!(
                e,
                Error::Decode(_) | Error::TooLarge { .. } | Error::ContentDisallowed { .. }
            ),
            "bad input produced a non-input error: {e:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let accept = Accept::new(["json", "msgpack"]);
    check(decode_task_message(data, &accept, DEFAULT_MAX_SIZE));
    check(decode_envelope(data, &accept, DEFAULT_MAX_SIZE));
    check(decode_task_message(data, &Accept::default(), 512));
});
