//! Which words of a search dictionary are within a few typos of a query word, found by lookups instead of by
//! walking the dictionary with a Levenshtein automaton (tantivy's `FuzzyTermQuery` builds one per query word and
//! field, and building and walking them was over half of a search's CPU).
//!
//! A symmetric-deletion index (the idea of SymSpell): two words within k edits of each other share a string that
//! each reaches by at most k deletions, so every word's deletions are listed once, at build time, and a query
//! word's own deletions are looked up; every candidate is then checked with the exact distance, so the answer is
//! exactly the automaton's. The distance is the optimal string alignment distance over characters (a swap of
//! two neighbours counts as one edit), which is what tantivy's automaton with transpositions accepts. A prefix
//! match ("some prefix of the word is within k typos", the automaton's prefix mode, for the word being typed)
//! has its own list: the deletions of every prefix of every word.
//!
//! Pure: no I/O, no tantivy; `search.rs` builds one per field from its term dictionary.

use std::hash::{DefaultHasher, Hash, Hasher};

/// The most typos a lookup may ask for; more is answered by checking every word.
const MAX_TYPOS: usize = 2;
/// The most typos a prefix lookup may ask for.
const MAX_PREFIX_TYPOS: usize = 1;
/// Words longer than this (in characters) are not in the deletion lists (their deletions grow with the square
/// of the length); every lookup checks them one by one.
const MAX_INDEXED_CHARS: usize = 32;

pub struct TypoIndex {
    words: Vec<Box<[char]>>,
    /// (hash of one of a word's deletion strings, the word), sorted: a word under each of its deletion strings
    /// with at most [`MAX_TYPOS`] characters deleted (itself included).
    deletions: Vec<(u64, u32)>,
    /// (hash of a deletion string of a prefix, (the word, the prefix's length in characters)), sorted: every
    /// prefix of at least `shortest_prefix` characters, with at most [`MAX_PREFIX_TYPOS`] deleted.
    prefix_deletions: Vec<(u64, (u32, u16))>,
    shortest_prefix: usize,
    /// Words checked one by one (longer than [`MAX_INDEXED_CHARS`]).
    unlisted: Vec<u32>,
}

impl TypoIndex {
    /// The index over `words` (each once). `shortest_prefix`: the shortest prefix a prefix lookup compares (a
    /// query word of n characters with one typo compares prefixes of n − 1 characters or more); prefix lookups
    /// of shorter words check every word.
    pub fn build(words: impl IntoIterator<Item = String>, shortest_prefix: usize) -> TypoIndex {
        let shortest_prefix = shortest_prefix.max(1);
        let mut index = TypoIndex {
            words: Vec::new(),
            deletions: Vec::new(),
            prefix_deletions: Vec::new(),
            shortest_prefix,
            unlisted: Vec::new(),
        };
        let mut scratch = Vec::new();
        for word in words {
            let id = index.words.len() as u32;
            let chars: Box<[char]> = word.chars().collect();
            if chars.len() > MAX_INDEXED_CHARS {
                index.unlisted.push(id);
            } else {
                deletion_hashes(&chars, MAX_TYPOS, &mut scratch);
                index
                    .deletions
                    .extend(scratch.iter().map(|&hash| (hash, id)));
                for length in shortest_prefix..=chars.len() {
                    deletion_hashes(&chars[..length], MAX_PREFIX_TYPOS, &mut scratch);
                    index
                        .prefix_deletions
                        .extend(scratch.iter().map(|&hash| (hash, (id, length as u16))));
                }
            }
            index.words.push(chars);
        }
        index.deletions.sort_unstable();
        index.deletions.dedup();
        index.prefix_deletions.sort_unstable();
        index.prefix_deletions.dedup();
        index
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word `id` (as built).
    pub fn word(&self, id: u32) -> String {
        self.words[id as usize].iter().collect()
    }

    /// The words within `typos` edits of `query`, in id order.
    pub fn within(&self, query: &str, typos: usize) -> Vec<u32> {
        let query: Vec<char> = query.chars().collect();
        let close = |id: u32| distance_within(&query, &self.words[id as usize], typos).is_some();
        if typos > MAX_TYPOS {
            return self.every(close);
        }
        if query.len() > MAX_INDEXED_CHARS + typos {
            // Only a word too long to be listed can be this close (and a long query's deletion strings, as
            // many as the square of its length, are never made).
            return self
                .unlisted
                .iter()
                .copied()
                .filter(|&id| close(id))
                .collect();
        }
        let mut found: Vec<u32> = under(&self.deletions, &query, typos).copied().collect();
        found.extend_from_slice(&self.unlisted);
        found.sort_unstable();
        found.dedup();
        found.retain(|&id| close(id));
        found
    }

    /// The words that begin with a prefix within `typos` edits of `query` (the word itself counts as a prefix),
    /// in id order.
    pub fn with_prefix_within(&self, query: &str, typos: usize) -> Vec<u32> {
        let query: Vec<char> = query.chars().collect();
        let close = |id: u32| {
            let word = &self.words[id as usize];
            let longest = word.len().min(query.len() + typos);
            let shortest = query.len().saturating_sub(typos);
            (shortest..=longest)
                .any(|length| distance_within(&query, &word[..length], typos).is_some())
        };
        if typos > MAX_PREFIX_TYPOS || query.len() < self.shortest_prefix + typos {
            return self.every(close);
        }
        if query.len() > MAX_INDEXED_CHARS + typos {
            // As in `within`: no listed prefix is that long.
            return self
                .unlisted
                .iter()
                .copied()
                .filter(|&id| close(id))
                .collect();
        }
        let mut found: Vec<u32> = under(&self.prefix_deletions, &query, typos)
            .filter(|&&(id, length)| {
                let prefix = &self.words[id as usize][..length as usize];
                distance_within(&query, prefix, typos).is_some()
            })
            .map(|&(id, _)| id)
            .collect();
        found.extend(self.unlisted.iter().copied().filter(|&id| close(id)));
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Every word `close` accepts, checked one by one (for what the lists do not cover).
    fn every(&self, close: impl Fn(u32) -> bool) -> Vec<u32> {
        (0..self.words.len() as u32)
            .filter(|&id| close(id))
            .collect()
    }
}

/// The entries of `list` (sorted by hash) listed under any string made from `query` by deleting at most `typos`
/// characters.
fn under<'a, T>(list: &'a [(u64, T)], query: &[char], typos: usize) -> impl Iterator<Item = &'a T> {
    let mut hashes = Vec::new();
    deletion_hashes(query, typos, &mut hashes);
    hashes.into_iter().flat_map(move |hash| {
        let start = list.partition_point(|(h, _)| *h < hash);
        list[start..]
            .iter()
            .take_while(move |(h, _)| *h == hash)
            .map(|(_, entry)| entry)
    })
}

/// The hashes of every string made from `word` by deleting at most `most` characters (itself included), each
/// once, into `out`.
fn deletion_hashes(word: &[char], most: usize, out: &mut Vec<u64>) {
    out.clear();
    let mut current: Vec<Vec<char>> = vec![word.to_vec()];
    out.push(hash_of(word));
    for _ in 0..most {
        let mut next: Vec<Vec<char>> = Vec::new();
        for string in &current {
            for skip in 0..string.len() {
                let mut shorter = string.clone();
                shorter.remove(skip);
                next.push(shorter);
            }
        }
        next.sort_unstable();
        next.dedup();
        out.extend(next.iter().map(|string| hash_of(string)));
        current = next;
    }
    out.sort_unstable();
    out.dedup();
}

fn hash_of(chars: &[char]) -> u64 {
    let mut hasher = DefaultHasher::new();
    chars.hash(&mut hasher);
    hasher.finish()
}

/// The optimal string alignment distance between `a` and `b` (insertions, deletions, substitutions and swaps of
/// two neighbours, no substring edited twice), if it is at most `bound`.
pub fn distance_within(a: &[char], b: &[char], bound: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > bound {
        return None;
    }
    let distance = distance(a, b);
    (distance <= bound).then_some(distance)
}

/// The optimal string alignment distance between `a` and `b` (see [`distance_within`]).
pub fn distance(a: &[char], b: &[char]) -> usize {
    // Three rows of the dynamic programme: two back (for swaps), one back, and the one being filled.
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut row: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..width {
            let substitution = previous[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(previous[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut row);
    }
    previous[b.len()]
}

/// Seeded random words and edits for the tests here and in `search.rs`.
#[cfg(test)]
pub(crate) mod testing {
    /// A seeded xorshift: each call a number below its argument.
    pub fn numbers(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |below: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % below as u64) as usize
        }
    }

    /// `word` after zero to three random deletions, insertions (of `alphabet`'s characters) and swaps.
    pub fn edited(word: &str, alphabet: &[char], next: &mut dyn FnMut(usize) -> usize) -> String {
        let mut chars: Vec<char> = word.chars().collect();
        for _ in 0..next(4) {
            let at = next(chars.len() + 1);
            match next(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.insert(at, alphabet[next(alphabet.len())]),
                _ if at + 1 < chars.len() => chars.swap(at, at + 1),
                _ => {}
            }
        }
        chars.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{edited, numbers};
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    fn words(index: &TypoIndex, ids: Vec<u32>) -> Vec<String> {
        ids.into_iter().map(|id| index.word(id)).collect()
    }

    #[test]
    fn the_distance_counts_a_swap_of_neighbours_as_one_edit() {
        let d = |a: &str, b: &str| distance(&chars(a), &chars(b));
        assert_eq!(d("godfather", "godfather"), 0);
        assert_eq!(d("godfather", "godfathr"), 1, "a deletion");
        assert_eq!(d("godfather", "godfaather"), 1, "an insertion");
        assert_eq!(d("godfather", "godfathar"), 1, "a substitution");
        assert_eq!(d("godfather", "godfahter"), 1, "a swap");
        assert_eq!(
            d("ca", "abc"),
            3,
            "optimal string alignment: the swapped pair is not edited again"
        );
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("café", "cafe"), 1, "characters, not bytes");
        assert_eq!(
            distance_within(&chars("short"), &chars("shortest"), 2),
            None
        );
        assert_eq!(
            distance_within(&chars("short"), &chars("shorts"), 2),
            Some(1)
        );
    }

    #[test]
    fn lookups_find_every_word_within_the_typos_and_no_other() {
        let vocabulary = [
            "godfather",
            "godfathers",
            "grandfather",
            "father",
            "fathers",
            "feather",
            "stranger",
            "strangers",
            "strange",
            "danger",
            "ranger",
            "matrix",
            "mattress",
            "amelie",
            "amélie",
        ];
        let index = TypoIndex::build(vocabulary.iter().map(|w| w.to_string()), 4);
        assert_eq!(
            words(&index, index.within("godfahter", 2)),
            ["godfather", "godfathers"]
        );
        assert_eq!(words(&index, index.within("stranegr", 1)), ["stranger"]);
        assert_eq!(words(&index, index.within("fathr", 1)), ["father"]);
        assert_eq!(
            words(&index, index.within("amelie", 1)),
            ["amelie", "amélie"]
        );
        assert_eq!(
            words(&index, index.within("zzzzzz", 2)),
            Vec::<String>::new()
        );
        // Prefixes of the word being typed: "strang" begins "stranger", "strangers" and "strange"; "strnag"
        // (a swap) too; "godfat" begins the two godfathers; "fethe" is one typo from "feathe" and "fathe".
        assert_eq!(
            words(&index, index.with_prefix_within("strang", 1)),
            ["stranger", "strangers", "strange"]
        );
        assert_eq!(
            words(&index, index.with_prefix_within("strnag", 1)),
            ["stranger", "strangers", "strange"]
        );
        assert_eq!(
            words(&index, index.with_prefix_within("godfat", 1)),
            ["godfather", "godfathers"]
        );
        assert_eq!(
            words(&index, index.with_prefix_within("fethe", 1)),
            ["father", "fathers", "feather"]
        );
    }

    /// A query word as long as a search may send (256 bytes) is answered from the long words alone, exactly.
    #[test]
    fn a_query_word_longer_than_any_listed_word_is_checked_against_the_long_ones() {
        let long = "a".repeat(40);
        let vocabulary = vec![long.clone(), format!("{long}b"), "short".to_string()];
        let index = TypoIndex::build(vocabulary, 4);
        let query = format!("{long}bc");
        assert_eq!(
            words(&index, index.within(&query, 2)),
            [long.clone(), format!("{long}b")]
        );
        assert_eq!(
            words(&index, index.with_prefix_within(&query, 1)),
            [format!("{long}b")]
        );
        let huge = "x".repeat(256);
        assert!(index.within(&huge, 2).is_empty());
        assert!(index.with_prefix_within(&huge, 1).is_empty());
    }

    /// Every lookup against the brute-force answer (every word checked with the distance), over a vocabulary
    /// and queries made by random edits, long words and short queries included.
    #[test]
    fn lookups_agree_with_checking_every_word() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        let alphabet: Vec<char> = "abcdeé".chars().collect();
        let mut vocabulary: Vec<String> = (0..400)
            .map(|_| {
                let length = 1 + next(12) + if next(20) == 0 { 30 } else { 0 };
                (0..length)
                    .map(|_| alphabet[next(alphabet.len())])
                    .collect()
            })
            .collect();
        vocabulary.sort();
        vocabulary.dedup();
        let index = TypoIndex::build(vocabulary.clone(), 4);
        let brute = |query: &str, typos: usize, prefix: bool| -> Vec<u32> {
            let q = chars(query);
            (0..vocabulary.len() as u32)
                .filter(|&id| {
                    let word = chars(&vocabulary[id as usize]);
                    if prefix {
                        (0..=word.len()).any(|l| distance(&q, &word[..l]) <= typos)
                    } else {
                        distance(&q, &word) <= typos
                    }
                })
                .collect()
        };
        for round in 0..600 {
            let query = edited(&vocabulary[next(vocabulary.len())], &alphabet, &mut next);
            let typos = round % 3;
            assert_eq!(
                index.within(&query, typos),
                brute(&query, typos, false),
                "{query:?} within {typos}"
            );
            let prefix_typos = round % 2;
            assert_eq!(
                index.with_prefix_within(&query, prefix_typos),
                brute(&query, prefix_typos, true),
                "{query:?} prefix within {prefix_typos}"
            );
        }
    }
}
