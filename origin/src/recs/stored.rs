//! A trained [`Model`] as bytes, so that one instance of the control plane trains it and every instance serves it
//! (`control::training` keeps the bytes in the database). A format of its own, not a general serializer: the
//! dense models are megabytes of `f32`, written as they lie in memory (little-endian), and no crate in the build
//! writes binary serde. Versioned by its first 8 bytes; reading checks every length and index against the
//! catalog, so bytes from another version or a damaged row are refused with a reason, never a panic later.

use std::collections::HashMap;

use super::index::Catalog;
use super::linear::Linear;
use super::neighbours::Neighbours;
use super::{BlendWeights, Model, ModelKind};

/// The format's name and version.
const MAGIC: &[u8; 8] = b"RECSMDL1";

impl Model {
    /// The model as bytes ([`Model::from_bytes`] reads them back).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Every field named, so a field added to `Model` does not compile until it is written here too.
        let Model {
            kind,
            trained_at,
            users,
            events,
            catalog,
            popularity,
            popularity_ranks,
            trending,
            knn,
            ease,
            rules,
            transitions,
            sequence_recent,
            linear_steps,
            linear_decay,
            blend,
        } = self;
        let mut w = Writer(Vec::with_capacity(self.size_hint()));
        w.0.extend_from_slice(MAGIC);
        w.string(kind.name());
        w.i64(*trained_at);
        w.u64(*users as u64);
        w.u64(*events as u64);
        w.u64(catalog.names.len() as u64);
        for name in &catalog.names {
            w.string(name);
        }
        w.lists(&catalog.genres);
        w.lists(&catalog.genre_items);
        w.f32s(popularity);
        w.u32s(popularity_ranks);
        w.f32s(trending);
        for table in [knn, rules] {
            w.flag(table.is_some());
            if let Some(table) = table {
                w.u64(table.rows.len() as u64);
                for row in &table.rows {
                    w.u64(row.len() as u64);
                    for &(item, value) in row {
                        w.u32(item);
                        w.f32(value);
                    }
                }
            }
        }
        for dense in [ease, transitions] {
            w.flag(dense.is_some());
            if let Some(dense) = dense {
                let (items, slots, weights) = dense.parts();
                w.u32s(items);
                w.u64(slots.len() as u64);
                for slot in slots {
                    w.u32(slot.map_or(u32::MAX, |s| s));
                }
                w.f32s(weights);
            }
        }
        w.u64(*sequence_recent as u64);
        w.u64(*linear_steps as u64);
        w.f32(*linear_decay);
        for weight in [
            blend.ease,
            blend.knn,
            blend.sequential,
            blend.sequential_linear,
            blend.popularity,
        ] {
            w.f32(weight);
        }
        w.0
    }

    /// Reads what [`Model::to_bytes`] wrote; refuses anything else with a reason.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, String> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a stored model of this version".into());
        }
        let kind_name = r.string()?;
        let kind = ModelKind::from_name(&kind_name)
            .ok_or_else(|| format!("unknown model kind `{kind_name}`"))?;
        let trained_at = r.i64()?;
        let users = r.len()?;
        let events = r.len()?;
        let titles = r.count(4)?;
        let mut names = Vec::with_capacity(titles);
        for _ in 0..titles {
            names.push(r.string()?);
        }
        let genres = r.lists()?;
        let genre_items = r.lists()?;
        let index: HashMap<String, u32> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        if index.len() != titles || genres.len() != titles {
            return Err("the catalog's titles do not fit together".into());
        }
        let in_range =
            |list: &[Vec<u32>], bound: usize| list.iter().flatten().all(|&i| (i as usize) < bound);
        if !in_range(&genres, genre_items.len()) || !in_range(&genre_items, titles) {
            return Err("a genre index is out of range".into());
        }
        let catalog = Catalog {
            names,
            index,
            genres,
            genre_items,
        };
        let popularity = r.f32s()?;
        let popularity_ranks = r.u32s()?;
        let trending = r.f32s()?;
        if popularity.len() != titles
            || popularity_ranks.len() != titles
            || trending.len() != titles
        {
            return Err("a per-title list is not one per title".into());
        }
        let mut tables = Vec::with_capacity(2);
        for _ in 0..2 {
            tables.push(if r.flag()? {
                let rows = r.count(8)?;
                if rows != titles {
                    return Err("a title table is not one row per title".into());
                }
                let mut table = Vec::with_capacity(rows);
                for _ in 0..rows {
                    let entries = r.count(8)?;
                    let mut row = Vec::with_capacity(entries);
                    for _ in 0..entries {
                        let item = r.u32()?;
                        if item as usize >= titles {
                            return Err("a title table names a title out of range".into());
                        }
                        row.push((item, r.f32()?));
                    }
                    table.push(row);
                }
                Some(Neighbours { rows: table })
            } else {
                None
            });
        }
        let rules = tables.pop().flatten();
        let knn = tables.pop().flatten();
        let mut dense = Vec::with_capacity(2);
        for _ in 0..2 {
            dense.push(if r.flag()? {
                let items = r.u32s()?;
                let slots_len = r.count(4)?;
                let mut slots = Vec::with_capacity(slots_len);
                for _ in 0..slots_len {
                    let slot = r.u32()?;
                    slots.push((slot != u32::MAX).then_some(slot));
                }
                let weights = r.f32s()?;
                Some(Linear::from_parts(items, slots, weights, titles)?)
            } else {
                None
            });
        }
        let transitions = dense.pop().flatten();
        let ease = dense.pop().flatten();
        let sequence_recent = r.len()?;
        let linear_steps = r.len()?;
        let linear_decay = r.f32()?;
        let blend = BlendWeights {
            ease: r.f32()?,
            knn: r.f32()?,
            sequential: r.f32()?,
            sequential_linear: r.f32()?,
            popularity: r.f32()?,
        };
        if !r.0.is_empty() {
            return Err(format!("{} bytes past the model's end", r.0.len()));
        }
        Ok(Model {
            kind,
            trained_at,
            users,
            events,
            catalog,
            popularity,
            popularity_ranks,
            trending,
            knn,
            ease,
            rules,
            transitions,
            sequence_recent,
            linear_steps,
            linear_decay,
            blend,
        })
    }

    /// About how many bytes [`Model::to_bytes`] writes (its buffer is made this big once).
    fn size_hint(&self) -> usize {
        let titles = self.catalog.len();
        let dense: usize = [&self.ease, &self.transitions]
            .into_iter()
            .flatten()
            .map(|d| d.parts().2.len() * 4 + titles * 4)
            .sum();
        64 + titles * 32 + self.sparse_entries() * 8 + dense
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn flag(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    fn string(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn u32s(&mut self, values: &[u32]) {
        self.u64(values.len() as u64);
        for &v in values {
            self.u32(v);
        }
    }
    fn f32s(&mut self, values: &[f32]) {
        self.u64(values.len() as u64);
        for &v in values {
            self.f32(v);
        }
    }
    fn lists(&mut self, lists: &[Vec<u32>]) {
        self.u64(lists.len() as u64);
        for list in lists {
            self.u32s(list);
        }
    }
}

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the stored model ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    fn flag(&mut self) -> Result<bool, String> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("a flag of {other}")),
        }
    }
    /// A number that sizes nothing.
    fn len(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "a number too large".to_string())
    }
    /// How many elements of at least `each` bytes follow: never more than the bytes left could hold, so a
    /// damaged length cannot make a huge allocation.
    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = self.len()?;
        if n.saturating_mul(each) > self.0.len() {
            return Err("a length runs past the stored model's end".into());
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.count(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        let n = self.count(4)?;
        let bytes = self.take(n * 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn f32s(&mut self) -> Result<Vec<f32>, String> {
        let n = self.count(4)?;
        let bytes = self.take(n * 4)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    fn lists(&mut self) -> Result<Vec<Vec<u32>>, String> {
        let n = self.count(8)?;
        (0..n).map(|_| self.u32s()).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::{Interaction, ItemInfo, TrainParams};
    use super::*;

    fn trained(kind: ModelKind) -> Model {
        let items: Vec<ItemInfo> = ["alpha", "bravo", "charlie", "delta", "echo"]
            .iter()
            .enumerate()
            .map(|(i, item)| ItemInfo {
                item: item.to_string(),
                genres: vec![["drama", "comedy"][i % 2].to_string()],
            })
            .collect();
        let mut interactions = Vec::new();
        for user in 0..6 {
            for (at, item) in ["alpha", "bravo", "charlie", "delta"][..2 + user % 3]
                .iter()
                .enumerate()
            {
                interactions.push(Interaction {
                    user: format!("u{user}"),
                    item: item.to_string(),
                    at: 100 + at as i64,
                    weight: 1.0,
                    finished: true,
                });
            }
        }
        Model::train(kind, &interactions, &items, &TrainParams::default(), 1_000)
    }

    #[test]
    fn every_kind_reads_back_answering_the_same() {
        for kind in ModelKind::ALL {
            let model = trained(kind);
            let bytes = model.to_bytes();
            let read = Model::from_bytes(&bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(
                read.to_bytes(),
                bytes,
                "{kind}: written again, the same bytes"
            );
            let history = vec![("alpha".to_string(), 1), ("bravo".to_string(), 2)];
            let none = HashSet::new();
            assert_eq!(
                read.recommend(&history, 5, &none),
                model.recommend(&history, 5, &none),
                "{kind}"
            );
            for item in ["alpha", "echo", "nothing"] {
                assert_eq!(
                    read.similar(item, 5),
                    model.similar(item, 5),
                    "{kind} {item}"
                );
            }
            assert_eq!(read.trending(5), model.trending(5), "{kind}");
            assert_eq!(
                (
                    read.kind(),
                    read.trained_at(),
                    read.users(),
                    read.interactions()
                ),
                (
                    model.kind(),
                    model.trained_at(),
                    model.users(),
                    model.interactions()
                )
            );
        }
    }

    #[test]
    fn damaged_bytes_are_refused_never_trusted() {
        let bytes = trained(ModelKind::Blend).to_bytes();
        assert!(Model::from_bytes(b"").is_err());
        assert!(Model::from_bytes(b"RECSMDL9").is_err(), "another version");
        for cut in [8, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(Model::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Model::from_bytes(&longer).is_err());
        // Every byte flipped in turn: refused or read, never a panic (an f32 may change and still read).
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xff;
            if let Ok(model) = Model::from_bytes(&damaged) {
                let _ = model.recommend(&[("alpha".into(), 1)], 3, &HashSet::new());
                let _ = model.similar("alpha", 3);
                let _ = model.trending(3);
            }
        }
    }
}
