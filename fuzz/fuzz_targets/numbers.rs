//! The number parser of the NLU, on any text a user may type: it never
//! panics, and every number it finds is finite, because a non-finite one
//! cannot be stored in an event (issue 14, item 2).
#![no_main]

use colloquy_nlu::numbers::{find_numbers, parse_number};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(n) = parse_number(&text) {
        assert!(n.is_finite(), "parse_number({text:?}) = {n}");
    }
    let chars = text.chars().count();
    let mut previous_end = 0;
    for (start, end, n) in find_numbers(&text) {
        assert!(n.is_finite(), "find_numbers({text:?}) found {n}");
        // Entities are cut out of the text by these offsets.
        assert!(
            previous_end <= start && start < end && end <= chars,
            "find_numbers({text:?}): span {start}..{end} after {previous_end}, {chars} chars"
        );
        previous_end = end;
    }
});
