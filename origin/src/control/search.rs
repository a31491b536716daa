//! Title search over a tantivy index held in memory, built from the catalog (and rebuilt when the catalog
//! changes): title, original title, cast, director, genres and description, case- and accent-folded.
//!
//! A query's words must all match. Each word matches exactly, or — in the titles, cast and genres — for the last
//! word, as the user types, as a prefix, or with typos by its length (Meilisearch's rule: none up to 4
//! characters, 1 for 5 to 8, 2 from 9); descriptions match exact words only. Boosts rank exact over prefix over
//! typo, and title over other fields; popularity breaks ties. Chinese, Japanese and Korean text is also indexed
//! as character bigrams, so a CJK title is found by any part of it. A hit is shown from a table in memory, not
//! from tantivy's document store; the words within a query word's typos are looked up (`typos.rs`), not found by
//! walking the dictionary with an automaton; and the index is one segment: a search costs about 0.1 ms (median)
//! at 100,000 titles (`benches/src/searchcost.rs`).

use std::sync::Arc;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::columnar::Column;
use tantivy::query::{
    BitSetDocSet, BooleanQuery, BoostQuery, ConstScorer, EnableScoring, Explanation, Occur, Query,
    Scorer, TermQuery, Weight,
};
use tantivy::schema::{FAST, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, SimpleTokenizer, TextAnalyzer, TokenStream,
};
use tantivy::{
    BitSet, DocId, DocSet, Index, IndexWriter, ReloadPolicy, Score, Searcher, SegmentReader,
    TantivyError, Term, doc,
};

use super::typos::TypoIndex;

/// One title as indexed.
#[derive(Debug, Clone, Default)]
pub struct SearchDoc {
    pub slug: String,
    pub title: String,
    pub original_title: String,
    /// Cast, director and genres.
    pub people_and_genres: String,
    pub description: String,
    pub popularity: i64,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub slug: String,
    pub title: String,
    /// The title with matched words in `<b>…</b>`.
    pub highlight: String,
    pub score: f32,
}

struct Fields {
    place: Field,
    title: Field,
    other: Field,
    description: Field,
    cjk: Field,
}

pub struct SearchIndex {
    index: Index,
    /// The one searcher of the index (built once, never written again).
    searcher: Searcher,
    fields: Fields,
    folded: TextAnalyzer,
    /// Every title in build order: what a hit shows and ranks by, read without the document store.
    entries: Vec<Entry>,
    /// Per segment of `searcher`, each document's place in `entries`.
    places: Vec<Column<u64>>,
    /// The words of the title and other fields, for their typos (see `typos.rs`).
    title_words: TypoIndex,
    other_words: TypoIndex,
}

/// A title as a hit shows it.
struct Entry {
    slug: String,
    title: String,
    popularity: i64,
}

/// How a query word is matched in a field: `prefix` for the last word as it is typed, `typos` by the word's
/// length. Only the titles take both: a typo or a prefix walks a field's whole dictionary, and the description's
/// (the largest) would cost the most to match words that rank least.
struct Matching {
    field: Field,
    weight: f32,
    prefix: bool,
    typos: bool,
    /// Whether stop words are looked for in it.
    stop_words: bool,
}

/// Completions of a prefix matched at most.
const COMPLETIONS: usize = 32;

/// Words too common to narrow a search (English articles, prepositions and the possessive `s`): beside other
/// words they only rank, and they are looked for in titles only.
fn is_stop_word(word: &str) -> bool {
    matches!(
        word,
        "a" | "an"
            | "and"
            | "at"
            | "by"
            | "for"
            | "from"
            | "in"
            | "into"
            | "of"
            | "on"
            | "or"
            | "s"
            | "the"
            | "to"
            | "with"
    )
}

const FOLDED: &str = "folded";
const BIGRAMS: &str = "bigrams";

fn folded() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The fewest characters of a word that may have a typo.
const SHORTEST_TYPO_WORD: usize = 5;

/// The typos a word may have: 0 up to 4 characters, 1 for 5 to 8, 2 from 9.
pub fn typos_for(word: &str) -> u8 {
    match word.chars().count() {
        0..SHORTEST_TYPO_WORD => 0,
        SHORTEST_TYPO_WORD..=8 => 1,
        _ => 2,
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x3040..=0x30FF | 0x3130..=0x318F | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// The CJK characters of `text` as overlapping bigrams (a lone character stays a unigram).
fn cjk_bigrams(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for run in text.split(|c: char| !is_cjk(c)).filter(|r| !r.is_empty()) {
        let chars: Vec<char> = run.chars().collect();
        if chars.len() == 1 {
            out.push(chars[0].to_string());
        }
        for pair in chars.windows(2) {
            out.push(pair.iter().collect());
        }
    }
    out
}

impl SearchIndex {
    /// Builds the index over `docs` in memory.
    pub fn build(docs: &[SearchDoc]) -> tantivy::Result<SearchIndex> {
        let mut schema = Schema::builder();
        let text = |tokenizer: &str| {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(tokenizer)
                    .set_index_option(IndexRecordOption::WithFreqs),
            )
        };
        let fields = Fields {
            place: schema.add_u64_field("place", FAST),
            title: schema.add_text_field("title", text(FOLDED)),
            other: schema.add_text_field("other", text(FOLDED)),
            description: schema.add_text_field("description", text(FOLDED)),
            cjk: schema.add_text_field("cjk", text(BIGRAMS)),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(FOLDED, folded());
        // The bigrams are made here (a CJK-only field); its tokenizer only has to keep each one whole.
        index.tokenizers().register(
            BIGRAMS,
            TextAnalyzer::builder(RawTokenizer::default()).build(),
        );
        let mut writer: IndexWriter = index.writer(50_000_000)?;
        for (place, d) in docs.iter().enumerate() {
            let mut document = doc!(
                fields.place => place as u64,
                fields.title => d.title.clone(),
                fields.other => d.people_and_genres.clone(),
                fields.description => d.description.clone(),
            );
            // The original title is a second value of the title field: one dictionary to walk for both.
            if !d.original_title.is_empty() {
                document.add_text(fields.title, &d.original_title);
            }
            for bigram in cjk_bigrams(&format!("{} {}", d.title, d.original_title)) {
                document.add_text(fields.cjk, bigram);
            }
            writer.add_document(document)?;
        }
        writer.commit()?;
        // One segment: every typo and prefix walks each segment's dictionaries, so fewer is cheaper.
        let segments = index.searchable_segment_ids()?;
        if segments.len() > 1 {
            writer.merge(&segments).wait()?;
        }
        writer.wait_merging_threads()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let searcher = reader.searcher();
        let places = searcher
            .segment_readers()
            .iter()
            .map(|segment| segment.fast_fields().u64("place"))
            .collect::<tantivy::Result<Vec<_>>>()?;
        let words = |field| -> tantivy::Result<TypoIndex> {
            let mut all = std::collections::BTreeSet::new();
            for segment in searcher.segment_readers() {
                let inverted = segment.inverted_index(field)?;
                let mut stream = inverted.terms().stream()?;
                while stream.advance() {
                    if let Ok(word) = std::str::from_utf8(stream.key()) {
                        all.insert(word.to_string());
                    }
                }
            }
            // A word of the fewest characters allowed a typo, with that typo, compares prefixes one shorter.
            Ok(TypoIndex::build(all, SHORTEST_TYPO_WORD - 1))
        };
        let title_words = words(fields.title)?;
        let other_words = words(fields.other)?;
        let entries = docs
            .iter()
            .map(|d| Entry {
                slug: d.slug.clone(),
                title: d.title.clone(),
                popularity: d.popularity,
            })
            .collect();
        Ok(SearchIndex {
            index,
            searcher,
            fields,
            folded: folded(),
            entries,
            places,
            title_words,
            other_words,
        })
    }

    /// The best `limit` titles for `q`.
    pub fn search(&self, q: &str, limit: usize) -> tantivy::Result<Vec<Hit>> {
        let mut words = Vec::new();
        let mut analyzer = self.folded.clone();
        let mut stream = analyzer.token_stream(q);
        while stream.advance() {
            let word = stream.token().text.clone();
            if !word.chars().any(is_cjk) {
                words.push(word);
            }
        }
        let f = &self.fields;
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !words.is_empty() {
            let mut all_words: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            // Beside other words, a stop word only ranks (it would match nearly every title otherwise).
            let significant = words.iter().any(|w| !is_stop_word(w));
            for (i, word) in words.iter().enumerate() {
                let last = i + 1 == words.len();
                let stop = is_stop_word(word);
                let typos = if stop { 0 } else { typos_for(word) };
                let mut ways: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                // A stop word is looked for in the titles only: nearly every description has it.
                for m in self
                    .matching()
                    .into_iter()
                    .filter(|m| m.stop_words || !stop)
                {
                    let term = Term::from_field_text(m.field, word);
                    let weight = m.weight;
                    let boosted = |q: Box<dyn Query>, b: f32| -> (Occur, Box<dyn Query>) {
                        (Occur::Should, Box::new(BoostQuery::new(q, b * weight)))
                    };
                    ways.push(boosted(
                        Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                        4.0,
                    ));
                    if last && m.prefix {
                        let completions = self.completions(m.field, word)?;
                        if !completions.is_empty() {
                            let any = AnyTerm {
                                field: m.field,
                                terms: completions,
                            };
                            ways.push(boosted(Box::new(any), 2.0));
                        }
                    }
                    if typos > 0 && m.typos {
                        // What tantivy's FuzzyTermQuery (with transpositions) matches, found by lookups.
                        let dictionary = self.typo_words(m.field);
                        let close = dictionary.within(word, typos as usize);
                        if let Some(any) = self.any_of(m.field, dictionary, close) {
                            ways.push(boosted(any, 1.0));
                        }
                        if last && m.prefix {
                            let begun = dictionary.with_prefix_within(word, typos.min(1) as usize);
                            if let Some(any) = self.any_of(m.field, dictionary, begun) {
                                ways.push(boosted(any, 0.5));
                            }
                        }
                    }
                }
                let occur = if stop && significant {
                    Occur::Should
                } else {
                    Occur::Must
                };
                all_words.push((occur, Box::new(BooleanQuery::new(ways))));
            }
            alternatives.push((Occur::Should, Box::new(BooleanQuery::new(all_words))));
        }
        let bigrams = cjk_bigrams(q);
        if !bigrams.is_empty() {
            let all: Vec<(Occur, Box<dyn Query>)> = bigrams
                .iter()
                .map(|b| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(f.cjk, b),
                        IndexRecordOption::Basic,
                    ));
                    (
                        Occur::Must,
                        Box::new(BoostQuery::new(q, 4.0)) as Box<dyn Query>,
                    )
                })
                .collect();
            alternatives.push((Occur::Should, Box::new(BooleanQuery::new(all))));
        }
        if alternatives.is_empty() {
            return Ok(Vec::new());
        }
        let query = BooleanQuery::new(alternatives);
        let top = self.searcher.search(
            &query,
            &TopDocs::with_limit(limit.max(1) * 4).order_by_score(),
        )?;
        let mut hits = Vec::new();
        for (score, address) in top {
            let Some(entry) = self.places[address.segment_ord as usize]
                .first(address.doc_id)
                .and_then(|place| self.entries.get(place as usize))
            else {
                continue;
            };
            hits.push((entry, score));
        }
        // Equal scores (to a thousandth) are ordered by popularity.
        hits.sort_by(|(a, sa), (b, sb)| {
            let (sa, sb) = ((sa * 1000.0).round() as i64, (sb * 1000.0).round() as i64);
            sb.cmp(&sa).then(b.popularity.cmp(&a.popularity))
        });
        // Only the hits shown are highlighted.
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|(entry, score)| Hit {
                slug: entry.slug.clone(),
                highlight: highlight(&entry.title, &words),
                title: entry.title.clone(),
                score,
            })
            .collect())
    }

    /// The dictionary of `field`'s words for typos (the title's, or the other field's).
    fn typo_words(&self, field: Field) -> &TypoIndex {
        if field == self.fields.title {
            &self.title_words
        } else {
            &self.other_words
        }
    }

    /// A query matching any of the words `ids` of `dictionary` in `field`, every match scoring 1 (as tantivy's
    /// fuzzy query scores); `None` for no word.
    fn any_of(
        &self,
        field: Field,
        dictionary: &TypoIndex,
        ids: Vec<u32>,
    ) -> Option<Box<dyn Query>> {
        if ids.is_empty() {
            return None;
        }
        let terms = ids
            .into_iter()
            .map(|id| Term::from_field_text(field, &dictionary.word(id)))
            .collect();
        Some(Box::new(AnyTerm { field, terms }))
    }

    pub fn len(&self) -> u64 {
        self.searcher.num_docs()
    }

    /// The words of `field` that begin with `prefix` (itself included), the [`COMPLETIONS`] found in the most
    /// titles: a short prefix would otherwise match thousands of words.
    fn completions(&self, field: Field, prefix: &str) -> tantivy::Result<Vec<Term>> {
        let mut words = Vec::new();
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let dictionary = inverted.terms();
            // (titles having it, its number in the dictionary), the most found first.
            let mut found: Vec<(u32, u64)> = Vec::new();
            let mut stream = dictionary.range().ge(prefix.as_bytes()).into_stream()?;
            while stream.advance() && stream.key().starts_with(prefix.as_bytes()) {
                found.push((stream.value().doc_freq, stream.term_ord()));
            }
            found.sort_unstable_by(|a, b| b.cmp(a));
            let mut bytes = Vec::new();
            for (_, ord) in found.into_iter().take(COMPLETIONS) {
                if dictionary.ord_to_term(ord, &mut bytes)?
                    && let Ok(word) = std::str::from_utf8(&bytes)
                {
                    words.push(Term::from_field_text(field, word));
                }
            }
        }
        Ok(words)
    }

    /// How each field matches a query word (see [`Matching`]).
    fn matching(&self) -> [Matching; 3] {
        let f = &self.fields;
        let field = |field, weight, titles| Matching {
            field,
            weight,
            prefix: weight > 1.0,
            typos: weight > 1.0,
            stop_words: titles,
        };
        [
            field(f.title, 3.0, true),
            field(f.other, 2.0, false),
            field(f.description, 1.0, false),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn index(&self) -> &Index {
        &self.index
    }
}

/// The title with each word that matches a query word (exactly, as a prefix, or within its typos) in `<b>…</b>`.
fn highlight(title: &str, words: &[String]) -> String {
    let mut out = String::new();
    let mut analyzer = folded();
    for (i, piece) in title.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut stream = analyzer.token_stream(piece);
        let folded = if stream.advance() {
            stream.token().text.clone()
        } else {
            String::new()
        };
        let matched = !folded.is_empty()
            && words.iter().any(|w| {
                folded.starts_with(w.as_str()) || {
                    let (a, b): (Vec<char>, Vec<char>) =
                        (folded.chars().collect(), w.chars().collect());
                    super::typos::distance_within(&a, &b, typos_for(w) as usize).is_some()
                }
            });
        if matched {
            out.push_str("<b>");
            out.push_str(piece);
            out.push_str("</b>");
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// The documents having any of `terms` (of one field), each scoring its boost: how tantivy's fuzzy query
/// matches and scores once its automaton has found the words, here for words already found (`TypoIndex`), with
/// no automaton built or walked (tantivy's `TermSetQuery` builds an FST per query, which cost more).
#[derive(Clone, Debug)]
struct AnyTerm {
    field: Field,
    terms: Vec<Term>,
}

impl Query for AnyTerm {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for AnyTerm {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inverted = reader.inverted_index(self.field)?;
        let mut docs = BitSet::with_max_value(reader.max_doc());
        for term in &self.terms {
            let Some(info) = inverted.get_term_info(term)? else {
                continue;
            };
            let mut postings =
                inverted.read_block_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
            while !postings.docs().is_empty() {
                for &doc in postings.docs() {
                    docs.insert(doc);
                }
                postings.advance();
            }
        }
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) == doc {
            Ok(Explanation::new("any of the words", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!(
                "document {doc} has none of the words"
            )))
        }
    }
}

/// A shared, swappable index.
pub type SharedIndex = Arc<std::sync::RwLock<Arc<SearchIndex>>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(slug: &str, title: &str, popularity: i64) -> SearchDoc {
        SearchDoc {
            slug: slug.into(),
            title: title.into(),
            popularity,
            ..SearchDoc::default()
        }
    }

    fn index() -> SearchIndex {
        SearchIndex::build(&[
            doc("stranger-things", "Stranger Things", 90),
            doc("strange-days", "Strange Days", 40),
            doc("amelie", "Le Fabuleux Destin d'Amélie Poulain", 70),
            doc("parasite", "기생충", 80),
            doc("spirited-away", "千と千尋の神隠し", 85),
            doc("the-thing", "The Thing", 30),
            doc("things-we-lost", "Things We Lost in the Fire", 10),
            SearchDoc {
                people_and_genres: "Bong Joon-ho Song Kang-ho Thriller".into(),
                ..doc("memories-of-murder", "Memories of Murder", 60)
            },
        ])
        .unwrap()
    }

    fn slugs(index: &SearchIndex, q: &str) -> Vec<String> {
        index
            .search(q, 5)
            .unwrap()
            .into_iter()
            .map(|h| h.slug)
            .collect()
    }

    #[test]
    fn typo_tolerance_by_word_length() {
        assert_eq!(typos_for("thin"), 0);
        assert_eq!(typos_for("thngs"), 1);
        assert_eq!(typos_for("stranger"), 1);
        assert_eq!(typos_for("strangers"), 2);
        let index = index();
        assert_eq!(slugs(&index, "strnger thngs")[0], "stranger-things");
        assert_eq!(slugs(&index, "memorise murdr")[0], "memories-of-murder");
        assert!(
            slugs(&index, "thng").is_empty() || slugs(&index, "thng")[0] != "the-thing",
            "4 letters: no typo"
        );
    }

    #[test]
    fn prefix_of_the_last_word_and_ranking() {
        let index = index();
        // Exact "strange" outranks the prefix match of "stranger".
        assert_eq!(
            slugs(&index, "strange")[..2],
            ["strange-days", "stranger-things"]
        );
        assert_eq!(slugs(&index, "stranger th")[0], "stranger-things");
        // Popularity breaks a tie.
        let things = slugs(&index, "things");
        assert!(
            things.contains(&"stranger-things".to_string())
                && things.contains(&"things-we-lost".to_string())
        );
    }

    #[test]
    fn stop_words_rank_original_titles_match_and_short_prefixes_are_capped() {
        let mut docs = vec![
            SearchDoc {
                original_title: "La Grande Vadrouille".into(),
                ..doc("don-t-look-now-we-re-being-shot-at", "Don't Look Now", 50)
            },
            doc("the-godfather", "The Godfather", 90),
            doc("godfather-s-return", "Godfather's Return", 95),
            SearchDoc {
                description: "The one about the heist.".into(),
                ..doc("quiet-night", "Quiet Night", 10)
            },
        ];
        // More words beginning with "q" than a prefix completes to; the most common comes first.
        for i in 0..COMPLETIONS + 20 {
            docs.push(doc(&format!("q{i}"), &format!("Q{i:03}x Stories"), 1));
        }
        let index = SearchIndex::build(&docs).unwrap();
        assert_eq!(
            slugs(&index, "vadrouille")[0],
            "don-t-look-now-we-re-being-shot-at"
        );
        assert_eq!(
            slugs(&index, "grande vadr")[0],
            "don-t-look-now-we-re-being-shot-at"
        );
        // Beside another word a stop word ranks (the title having it first) but is not required.
        assert_eq!(
            slugs(&index, "the godfather")[..2],
            ["the-godfather", "godfather-s-return"]
        );
        assert_eq!(slugs(&index, "godfather of the")[0], "the-godfather");
        // Alone, it is looked for in titles, not descriptions.
        assert!(!slugs(&index, "the").contains(&"quiet-night".to_string()));
        assert_eq!(slugs(&index, "heist"), ["quiet-night"]);
        // "q" completes to its 32 most common words, "quiet" among them (in 1 title, like every Q…x).
        let q = index.completions(index.fields.title, "q").unwrap();
        assert_eq!(q.len(), COMPLETIONS);
        assert!(!index.search("q", 100).unwrap().is_empty());
        assert_eq!(slugs(&index, "quie")[0], "quiet-night");
    }

    #[test]
    fn accents_cjk_people_and_highlights() {
        let index = index();
        assert_eq!(slugs(&index, "amelie")[0], "amelie");
        assert_eq!(slugs(&index, "AMÉLIE poulain")[0], "amelie");
        assert_eq!(slugs(&index, "기생충")[0], "parasite");
        assert_eq!(slugs(&index, "기생")[0], "parasite");
        assert_eq!(slugs(&index, "千尋")[0], "spirited-away");
        assert_eq!(slugs(&index, "bong joon")[0], "memories-of-murder");
        let hit = &index.search("strnger", 1).unwrap()[0];
        assert_eq!(hit.highlight, "<b>Stranger</b> Things");
        assert!(index.search("", 5).unwrap().is_empty());
        assert!(index.search("zzzzzzzzzz", 5).unwrap().is_empty());
    }

    /// The typo lookups match the documents tantivy's fuzzy queries (with transpositions) match, word for word,
    /// in full and as a prefix, in the titles and the other field, over titles of made-up words and query words
    /// made from them by random edits (accents and CJK titles among them).
    #[test]
    fn typo_lookups_match_what_tantivys_fuzzy_queries_match() {
        use crate::control::typos::testing::{edited, numbers};
        use tantivy::collector::DocSetCollector;
        use tantivy::query::FuzzyTermQuery;
        let mut next = numbers(0x2545_f491_4f6c_dd1d);
        let letters: Vec<char> = "aeinorstgdhé".chars().collect();
        let word = |next: &mut dyn FnMut(usize) -> usize| -> String {
            (0..3 + next(9))
                .map(|_| letters[next(letters.len())])
                .collect()
        };
        let docs: Vec<SearchDoc> = (0..300)
            .map(|i| {
                let title: Vec<String> = (0..1 + next(4)).map(|_| word(&mut next)).collect();
                let people: Vec<String> = (0..next(3)).map(|_| word(&mut next)).collect();
                SearchDoc {
                    people_and_genres: people.join(" "),
                    ..doc(&format!("t{i}"), &title.join(" "), i)
                }
            })
            .chain([doc("cjk", "千と千尋の神隠し", 1)])
            .collect();
        let index = SearchIndex::build(&docs).unwrap();
        let found = |query: &dyn Query| index.searcher.search(query, &DocSetCollector).unwrap();
        let mut compared = 0;
        for round in 0..400 {
            let source = &docs[next(docs.len() - 1)];
            let text = if round % 2 == 0 {
                &source.title
            } else {
                &source.people_and_genres
            };
            let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
            if words.is_empty() {
                continue;
            }
            let query = edited(words[next(words.len())], &letters, &mut next);
            for field in [index.fields.title, index.fields.other] {
                let dictionary = index.typo_words(field);
                let term = Term::from_field_text(field, &query);
                for typos in 1..=2u8 {
                    let ours = index
                        .any_of(field, dictionary, dictionary.within(&query, typos as usize))
                        .map_or_else(Default::default, |q| found(q.as_ref()));
                    let theirs = found(&FuzzyTermQuery::new(term.clone(), typos, true));
                    assert_eq!(ours, theirs, "{query:?} within {typos}");
                    compared += 1;
                }
                let ours = index
                    .any_of(field, dictionary, dictionary.with_prefix_within(&query, 1))
                    .map_or_else(Default::default, |q| found(q.as_ref()));
                let theirs = found(&FuzzyTermQuery::new_prefix(term, 1, true));
                assert_eq!(ours, theirs, "{query:?} as a prefix within 1");
            }
        }
        assert!(compared > 1000, "{compared} comparisons");
    }
}
