//! Mapping byte ranges to fixed-size slices: which slices a range touches, the byte span of each slice, and the
//! part of a slice a response needs. Pure arithmetic.

use shared::range::ByteRange;

/// The slice geometry of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    pub slice_bytes: u64,
    pub total_len: u64,
}

impl Slicing {
    /// How many slices the object has (the pipeline only ever asks which slices a range touches).
    #[cfg(test)]
    fn count(&self) -> u64 {
        self.total_len.div_ceil(self.slice_bytes)
    }

    /// The slice holding byte `offset`.
    pub fn index_of(&self, offset: u64) -> u64 {
        offset / self.slice_bytes
    }

    /// The bytes of slice `index` (inclusive end), clipped to the object.
    pub fn span(&self, index: u64) -> ByteRange {
        // An upstream's total can be near 2^64: no sum here may overflow.
        let start = index.saturating_mul(self.slice_bytes);
        ByteRange {
            start,
            end: start.saturating_add(self.slice_bytes).min(self.total_len) - 1,
        }
    }

    /// The slices a range touches, in order.
    pub fn touched(&self, range: ByteRange) -> std::ops::RangeInclusive<u64> {
        self.index_of(range.start)..=self.index_of(range.end)
    }

    /// The part of slice `index` that lies in `range`, as offsets within the slice (half-open).
    pub fn cut(&self, index: u64, range: ByteRange) -> std::ops::Range<usize> {
        let span = self.span(index);
        let from = range.start.max(span.start) - span.start;
        let to = range.end.min(span.end) - span.start + 1;
        from as usize..to as usize
    }
}

/// The slice a request should fill first when the object's length is not known yet: the one holding the first
/// byte it asks for (a suffix range or no range starts at slice 0, which also yields the length).
pub fn first_slice_hint(spec: Option<shared::range::RangeSpec>, slice_bytes: u64) -> u64 {
    use shared::range::RangeSpec;
    match spec {
        Some(RangeSpec::FromTo { first, .. } | RangeSpec::From { first }) => first / slice_bytes,
        _ => 0,
    }
}

/// The most slices a new object's first fill asks for in one request (8 MiB at the default 2 MiB slices): a cold
/// segment or manifest costs its upstream one request, as it would through a cache that does not slice, and a
/// herd on it waits on one upstream response. The later slices of a larger object are one request each.
pub const FIRST_FILL_SLICES: u64 = 4;

/// How many slices the first fill of a new object asks for, from the client's range: all it touches from its
/// first slice up to [`FIRST_FILL_SLICES`] (the whole object, or from a position to the end: the most); one for
/// a suffix (the object's length is not known yet) — so a client probing the start of a large file does not
/// cost the upstream more than a slice.
pub fn first_fill_slices(spec: Option<shared::range::RangeSpec>, slice_bytes: u64) -> u64 {
    use shared::range::RangeSpec;
    match spec {
        None | Some(RangeSpec::From { .. }) => FIRST_FILL_SLICES,
        Some(RangeSpec::FromTo { first, last }) if last >= first => {
            (last / slice_bytes - first / slice_bytes + 1).min(FIRST_FILL_SLICES)
        }
        Some(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_fill_asks_for_the_slices_the_client_needs_up_to_the_most() {
        use shared::range::RangeSpec;
        let s = 2 * MIB;
        let from_to = |first, last| Some(RangeSpec::FromTo { first, last });
        assert_eq!(first_fill_slices(None, s), FIRST_FILL_SLICES);
        assert_eq!(
            first_fill_slices(Some(RangeSpec::From { first: 0 }), s),
            FIRST_FILL_SLICES
        );
        assert_eq!(
            first_fill_slices(from_to(0, 1023), s),
            1,
            "a probe of the start"
        );
        assert_eq!(
            first_fill_slices(from_to(s - 1, s), s),
            2,
            "across one boundary"
        );
        assert_eq!(
            first_fill_slices(from_to(0, u64::MAX), s),
            FIRST_FILL_SLICES
        );
        assert_eq!(first_fill_slices(from_to(5, 4), s), 1);
        assert_eq!(
            first_fill_slices(Some(RangeSpec::Suffix { length: 10 }), s),
            1
        );
    }

    const MIB: u64 = 1 << 20;

    /// An upstream's total within a slice of 2^64: the last slice ends at the object's end, no overflow.
    #[test]
    fn a_total_near_two_to_the_64_has_its_last_slice() {
        let s = Slicing {
            slice_bytes: 2 * MIB,
            total_len: u64::MAX,
        };
        let last = s.index_of(u64::MAX - 1);
        assert_eq!(s.span(last).end, u64::MAX - 1);
        assert_eq!(s.span(u64::MAX).start, u64::MAX);
    }

    #[test]
    fn geometry() {
        let s = Slicing {
            slice_bytes: 2 * MIB,
            total_len: 5 * MIB,
        };
        assert_eq!(s.count(), 3);
        assert_eq!(
            s.span(0),
            ByteRange {
                start: 0,
                end: 2 * MIB - 1
            }
        );
        assert_eq!(
            s.span(2),
            ByteRange {
                start: 4 * MIB,
                end: 5 * MIB - 1
            }
        );
        let exact = Slicing {
            slice_bytes: 2 * MIB,
            total_len: 4 * MIB,
        };
        assert_eq!(exact.count(), 2);
        assert_eq!(
            Slicing {
                slice_bytes: 2 * MIB,
                total_len: 1
            }
            .count(),
            1
        );
    }

    #[test]
    fn ranges_touch_only_their_slices() {
        let s = Slicing {
            slice_bytes: 100,
            total_len: 1000,
        };
        let table = [
            (ByteRange { start: 0, end: 999 }, 0..=9),
            (ByteRange { start: 0, end: 99 }, 0..=0),
            (
                ByteRange {
                    start: 99,
                    end: 100,
                },
                0..=1,
            ), // across a boundary
            (
                ByteRange {
                    start: 150,
                    end: 160,
                },
                1..=1,
            ),
            (
                ByteRange {
                    start: 999,
                    end: 999,
                },
                9..=9,
            ),
        ];
        for (range, slices) in table {
            assert_eq!(s.touched(range), slices, "{range:?}");
        }
    }

    #[test]
    fn cuts_within_slices() {
        let s = Slicing {
            slice_bytes: 100,
            total_len: 250,
        };
        let r = ByteRange {
            start: 95,
            end: 204,
        };
        assert_eq!(s.cut(0, r), 95..100);
        assert_eq!(s.cut(1, r), 0..100);
        assert_eq!(s.cut(2, r), 0..5);
        assert_eq!(s.cut(2, ByteRange { start: 0, end: 249 }), 0..50);
    }

    #[test]
    fn four_gib_object() {
        let s = Slicing {
            slice_bytes: 2 * MIB,
            total_len: 4 << 30,
        };
        assert_eq!(s.count(), 2048);
        assert_eq!(
            s.touched(ByteRange {
                start: (4 << 30) - 1,
                end: (4 << 30) - 1
            }),
            2047..=2047
        );
    }

    #[test]
    fn first_slice_for_unknown_length() {
        use shared::range::RangeSpec;
        assert_eq!(first_slice_hint(None, 100), 0);
        assert_eq!(
            first_slice_hint(Some(RangeSpec::Suffix { length: 5 }), 100),
            0
        );
        assert_eq!(
            first_slice_hint(Some(RangeSpec::From { first: 250 }), 100),
            2
        );
        assert_eq!(
            first_slice_hint(
                Some(RangeSpec::FromTo {
                    first: 99,
                    last: 300
                }),
                100
            ),
            0
        );
    }
}
