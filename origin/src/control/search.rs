//! Title search over a tantivy index held in memory, built from the catalog (and rebuilt when the catalog
//! changes): title, original title, cast, director, genres and description, case- and accent-folded.
//!
//! A query's words must all match. Each word matches exactly, or — for the last word, as the user types — as a
//! prefix, or with typos by its length (Meilisearch's rule: none up to 4 characters, 1 for 5 to 8, 2 from 9);
//! boosts rank exact over prefix over typo, and title over other fields; popularity breaks ties. Chinese,
//! Japanese and Korean text is also indexed as character bigrams, so a CJK title is found by any part of it.

use std::sync::Arc;

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, SimpleTokenizer, TextAnalyzer, TokenStream,
};
use tantivy::{Index, IndexReader, TantivyDocument, Term, doc};

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
    slug: Field,
    title: Field,
    original: Field,
    other: Field,
    description: Field,
    cjk: Field,
    popularity: Field,
}

pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    folded: TextAnalyzer,
}

const FOLDED: &str = "folded";
const BIGRAMS: &str = "bigrams";

fn folded() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The typos a word may have: 0 up to 4 characters, 1 for 5 to 8, 2 from 9.
pub fn typos_for(word: &str) -> u8 {
    match word.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
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
        let text = |tokenizer: &str, stored: bool| {
            let options = TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(tokenizer)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            );
            if stored {
                options.set_stored()
            } else {
                options
            }
        };
        let fields = Fields {
            slug: schema.add_text_field("slug", STRING | STORED),
            title: schema.add_text_field("title", text(FOLDED, true)),
            original: schema.add_text_field("original_title", text(FOLDED, false)),
            other: schema.add_text_field("other", text(FOLDED, false)),
            description: schema.add_text_field("description", text(FOLDED, false)),
            cjk: schema.add_text_field("cjk", text(BIGRAMS, false)),
            popularity: schema.add_i64_field("popularity", INDEXED | STORED),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(FOLDED, folded());
        // The bigrams are made here (a CJK-only field); its tokenizer only has to keep each one whole.
        index.tokenizers().register(
            BIGRAMS,
            TextAnalyzer::builder(RawTokenizer::default()).build(),
        );
        let mut writer = index.writer(15_000_000)?;
        for d in docs {
            let mut document = doc!(
                fields.slug => d.slug.clone(),
                fields.title => d.title.clone(),
                fields.original => d.original_title.clone(),
                fields.other => d.people_and_genres.clone(),
                fields.description => d.description.clone(),
                fields.popularity => d.popularity,
            );
            for bigram in cjk_bigrams(&format!("{} {}", d.title, d.original_title)) {
                document.add_text(fields.cjk, bigram);
            }
            writer.add_document(document)?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(SearchIndex {
            index,
            reader,
            fields,
            folded: folded(),
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
            for (i, word) in words.iter().enumerate() {
                let last = i + 1 == words.len();
                let typos = typos_for(word);
                let mut ways: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for (field, weight) in [
                    (f.title, 3.0),
                    (f.original, 3.0),
                    (f.other, 2.0),
                    (f.description, 1.0),
                ] {
                    let term = Term::from_field_text(field, word);
                    let boosted = |q: Box<dyn Query>, b: f32| -> (Occur, Box<dyn Query>) {
                        (Occur::Should, Box::new(BoostQuery::new(q, b * weight)))
                    };
                    ways.push(boosted(
                        Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs)),
                        4.0,
                    ));
                    if last {
                        ways.push(boosted(
                            Box::new(FuzzyTermQuery::new_prefix(term.clone(), 0, true)),
                            2.0,
                        ));
                    }
                    if typos > 0 {
                        ways.push(boosted(
                            Box::new(FuzzyTermQuery::new(term.clone(), typos, true)),
                            1.0,
                        ));
                        if last {
                            ways.push(boosted(
                                Box::new(FuzzyTermQuery::new_prefix(term, typos, true)),
                                0.5,
                            ));
                        }
                    }
                }
                all_words.push((Occur::Must, Box::new(BooleanQuery::new(ways))));
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
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.max(1) * 4).order_by_score(),
        )?;
        let mut hits = Vec::new();
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                document
                    .get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let popularity = document
                .get_first(f.popularity)
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let title = text(f.title);
            hits.push((
                Hit {
                    slug: text(f.slug),
                    highlight: highlight(&title, &words),
                    title,
                    score,
                },
                popularity,
            ));
        }
        // Equal scores (to a thousandth) are ordered by popularity.
        hits.sort_by(|(a, pa), (b, pb)| {
            let (sa, sb) = (
                (a.score * 1000.0).round() as i64,
                (b.score * 1000.0).round() as i64,
            );
            sb.cmp(&sa).then(pb.cmp(pa))
        });
        Ok(hits.into_iter().take(limit).map(|(h, _)| h).collect())
    }

    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
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
                folded.starts_with(w.as_str()) || edit_distance(&folded, w) <= typos_for(w) as usize
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

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
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
}
