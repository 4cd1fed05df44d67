//! Stored events as the stores read them back: a JSON array of events (an
//! append of the embedded stores), one event (a SQL row) and a folded
//! state (snapshots and the L1). Any bytes decode or fail, never panic;
//! and what decodes encodes and decodes to the same value, or a store
//! could not read back what it wrote.
#![no_main]

use colloquy_core::{Event, State};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    let Ok(decoded) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&decoded).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&encoded).unwrap_or_else(|e| {
        panic!(
            "re-encoded value does not decode: {e}\n{}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(decoded, again, "{}", String::from_utf8_lossy(&encoded));
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Vec<Event>>(data);
    round_trip::<Event>(data);
    round_trip::<State>(data);
});
