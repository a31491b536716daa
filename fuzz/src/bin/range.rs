//! `Range` (shared::range) and the range-to-slice mapping (edge::cache::slices): any header against any
//! representation length is a full answer, a part inside the representation, or a refusal; the slices a part
//! touches cover it exactly.
//!
//! Input: 8 bytes of length, 1 byte choosing the slice size, then the header value.

use edge::cache::slices::{Slicing, first_slice_hint};
use fuzz::{take_u8, take_u64};
use shared::range::{ParsedRange, RangeOutcome, evaluate, parse, resolve};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (length, rest) = take_u64(data);
        let (shift, rest) = take_u8(rest);
        let Ok(header) = std::str::from_utf8(rest) else {
            return;
        };
        // The slice sizes a config allows (64 KiB to 64 MiB, powers of two here).
        let slice_bytes = 1u64 << (16 + u32::from(shift % 11));
        let parsed = parse(header);
        for length in [length, length % 100_000, length >> 1] {
            let outcome = evaluate(Some(header), length);
            match &outcome {
                RangeOutcome::Partial(range) => {
                    assert!(
                        range.start <= range.end && range.end < length,
                        "{range:?} of {length}"
                    );
                    assert_eq!(range.len(), range.end - range.start + 1);
                    assert!(matches!(parsed, Ok(ParsedRange::Single(_))));
                    let content_range = range.content_range(length);
                    assert!(content_range.starts_with("bytes "));
                    check_slices(*range, length, slice_bytes);
                }
                RangeOutcome::Full => {
                    assert!(
                        length == 0
                            || matches!(
                                parsed,
                                Ok(ParsedRange::Multiple(_) | ParsedRange::OtherUnit)
                            )
                    );
                }
                RangeOutcome::Refused(_) => assert!(length > 0),
            }
            if let Ok(ParsedRange::Multiple(specs)) = &parsed {
                for spec in specs {
                    if let Ok(range) = resolve(*spec, length) {
                        assert!(range.start <= range.end && range.end < length);
                    }
                }
            }
            if let Ok(ParsedRange::Single(spec)) = &parsed {
                let hint = first_slice_hint(Some(*spec), slice_bytes);
                if let RangeOutcome::Partial(range) = outcome
                    && !matches!(spec, shared::range::RangeSpec::Suffix { .. })
                {
                    assert_eq!(hint, range.start / slice_bytes);
                }
            }
        }
    });
}

/// The slices a range touches: the first and last hold its ends, and the cuts of each lie inside its slice.
fn check_slices(range: shared::range::ByteRange, total_len: u64, slice_bytes: u64) {
    let slicing = Slicing {
        slice_bytes,
        total_len,
    };
    let touched = slicing.touched(range);
    let (first, last) = (*touched.start(), *touched.end());
    assert!(first <= last);
    for index in [first, last] {
        let span = slicing.span(index);
        assert!(span.start <= span.end && span.end < total_len, "{span:?}");
        assert!(span.len() <= slice_bytes);
        let cut = slicing.cut(index, range);
        assert!(
            cut.start < cut.end && (cut.end as u64) <= span.len(),
            "{cut:?} of {span:?}"
        );
    }
    assert_eq!(
        slicing.span(first).start + slicing.cut(first, range).start as u64,
        range.start
    );
    assert_eq!(
        slicing.span(last).start + slicing.cut(last, range).end as u64 - 1,
        range.end
    );
}
