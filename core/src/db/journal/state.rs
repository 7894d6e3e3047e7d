//! The journal engine's data: every collection and index in persistent
//! (copy-on-write) ordered maps.
//!
//! Cloning a [`State`] costs a few reference counts, and changing the clone
//! copies only the tree nodes on the changed paths. That is the engine's
//! isolation: a transaction works on its own clone, readers keep the clone
//! they started with, and a commit publishes the transaction's clone as the
//! new committed state.
//!
//! Reads use an index when one fits: the longest run of leading index
//! fields the filter pins with `eq`, then, when the sort field follows,
//! a keyset seek in sort order that stops at the page's limit. Without
//! one, a collection is scanned (in id order when sorted by id).

use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;
use serde_json::{json, Map, Value};

use super::log::{Record, Write};
use super::value::{self, Key};
use crate::db::{
    Condition, Direction, Document, Filter, FindOptions, IndexSpec, Op, StoreError, StoreResult,
    Update, ID,
};

/// Documents per [`Record::Writes`] in a snapshot.
const SNAPSHOT_CHUNK: usize = 512;

/// A document id. Shared, so copying a tree node on write copies
/// pointers rather than strings.
type Id = Arc<str>;

/// Every collection, as of one moment.
#[derive(Clone, Default)]
pub(super) struct State {
    collections: OrdMap<Id, Collection>,
}

/// Cheap to clone (two reference counts): a transaction's first write to a
/// collection copies the tree node holding it.
#[derive(Clone, Default)]
struct Collection {
    docs: OrdMap<Id, Arc<Document>>,
    indexes: Arc<Vec<Index>>,
}

#[derive(Clone)]
struct Index {
    spec: Arc<IndexSpec>,
    /// Shared entries, for the same reason as [`Id`].
    entries: OrdMap<Arc<Entry>, ()>,
}

/// An index entry: the document's values of the indexed fields, then its
/// id, so entries are distinct and equal values sort by id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    keys: Vec<Key>,
    id: Id,
}

impl Entry {
    /// Before every entry holding `keys`.
    fn first(keys: Vec<Key>) -> Self {
        Self {
            keys,
            id: Id::from(""),
        }
    }
}

impl Index {
    /// The document's values of the indexed fields.
    fn keys(&self, doc: &Document) -> Vec<Key> {
        self.spec
            .fields
            .iter()
            .map(|(field, _)| Key::of(value::field(doc, field)))
            .collect()
    }

    /// Whether another document than `id` holds `keys` in this unique
    /// index. Like the SQLite engine (and unlike MongoDB), a missing or
    /// null value never collides: unique indexes go on fields that are
    /// always present.
    fn is_taken(&self, keys: &[Key], id: &str) -> bool {
        if !self.spec.unique || keys.iter().any(|k| matches!(k, Key::Null)) {
            return false;
        }
        self.entries
            .range(Entry::first(keys.to_vec())..)
            .map(|(other, ())| other)
            .take_while(|other| other.keys == keys)
            .any(|other| &*other.id != id)
    }
}

impl Collection {
    /// Replaces (or removes, with `None`) the document `id`, keeping every
    /// index in step. Uniqueness is the caller's to check first.
    fn put(&mut self, id: &Id, doc: Option<Arc<Document>>) {
        let old = match &doc {
            Some(doc) => self.docs.insert(id.clone(), doc.clone()),
            None => self.docs.remove(id),
        };
        for index in Arc::make_mut(&mut self.indexes) {
            let old_keys = old.as_deref().map(|old| index.keys(old));
            let new_keys = doc.as_deref().map(|new| index.keys(new));
            if old_keys == new_keys {
                continue;
            }
            if let Some(keys) = old_keys {
                index.entries.remove(&Entry {
                    keys,
                    id: id.clone(),
                });
            }
            if let Some(keys) = new_keys {
                index.entries.insert(
                    Arc::new(Entry {
                        keys,
                        id: id.clone(),
                    }),
                    (),
                );
            }
        }
    }

    /// Refuses `doc` as the new version of `id` when a unique index would
    /// hold its values twice.
    fn check_unique(&self, collection: &str, id: &str, doc: &Document) -> StoreResult<()> {
        for index in self.indexes.iter().filter(|index| index.spec.unique) {
            if index.is_taken(&index.keys(doc), id) {
                return Err(StoreError::Duplicate {
                    collection: collection.to_owned(),
                    index: index.spec.name.clone(),
                });
            }
        }
        Ok(())
    }
}

impl State {
    /// The collection, created empty when missing.
    fn collection_mut(&mut self, name: &str) -> &mut Collection {
        if !self.collections.contains_key(name) {
            self.collections
                .insert(Id::from(name), Collection::default());
        }
        self.collections
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("the collection was just inserted"))
    }

    /// The document with this id.
    pub(super) fn get(&self, collection: &str, id: &str) -> Option<Arc<Document>> {
        self.collections.get(collection)?.docs.get(id).cloned()
    }

    /// The matches of `filter`, ordered and sliced by `options`.
    pub(super) fn find(
        &self,
        collection: &str,
        filter: &Filter,
        options: &FindOptions,
    ) -> StoreResult<Vec<Arc<Document>>> {
        value::check_filter(filter)?;
        if let Some(after) = &options.after {
            value::check_filter(&Filter::all().eq(&options.sort_field, after.value.clone()))?;
        }
        let Some(coll) = self.collections.get(collection) else {
            return Ok(Vec::new());
        };
        Ok(Query::new(coll, filter, options).run())
    }

    /// The first match in id order.
    pub(super) fn find_one(
        &self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<Arc<Document>>> {
        let first = FindOptions::by_id().limit(1);
        Ok(self.find(collection, filter, &first)?.into_iter().next())
    }

    /// How many documents match.
    pub(super) fn count(&self, collection: &str, filter: &Filter) -> StoreResult<u64> {
        value::check_filter(filter)?;
        let Some(coll) = self.collections.get(collection) else {
            return Ok(0);
        };
        let all = FindOptions::by_id();
        let query = Query::new(coll, filter, &all);
        Ok(query.candidates(&query.plan()).count() as u64)
    }

    /// Inserts a new document.
    pub(super) fn insert(&mut self, collection: &str, doc: Document) -> StoreResult<()> {
        let id = Id::from(crate::db::document_id(&doc)?);
        let coll = self.collection_mut(collection);
        if coll.docs.contains_key(&id) {
            return Err(StoreError::Duplicate {
                collection: collection.to_owned(),
                index: ID.to_owned(),
            });
        }
        coll.check_unique(collection, &id, &doc)?;
        coll.put(&id, Some(Arc::new(doc)));
        Ok(())
    }

    /// Applies `update` to the first match in id order; the document
    /// afterwards. A refused update (a duplicate, an overflow) changes
    /// nothing.
    pub(super) fn update_one(
        &mut self,
        collection: &str,
        filter: &Filter,
        update: &Update,
    ) -> StoreResult<Option<Arc<Document>>> {
        let Some(current) = self.find_one(collection, filter)? else {
            return Ok(None);
        };
        let doc = value::apply(&current, update)?;
        let id = Id::from(crate::db::document_id(&doc)?);
        let Some(coll) = self.collections.get_mut(collection) else {
            return Ok(None);
        };
        coll.check_unique(collection, &id, &doc)?;
        let doc = Arc::new(doc);
        coll.put(&id, Some(doc.clone()));
        Ok(Some(doc))
    }

    /// Deletes the first match in id order; its id.
    pub(super) fn delete_one(
        &mut self,
        collection: &str,
        filter: &Filter,
    ) -> StoreResult<Option<String>> {
        let Some(current) = self.find_one(collection, filter)? else {
            return Ok(None);
        };
        let id = Id::from(crate::db::document_id(&current)?);
        if let Some(coll) = self.collections.get_mut(collection) {
            coll.put(&id, None);
        }
        Ok(Some(id.to_string()))
    }

    /// Creates the index unless it exists; whether it was created. The same
    /// name with another definition is refused, as are documents already
    /// breaking a new unique index.
    pub(super) fn create_index(&mut self, spec: &IndexSpec) -> StoreResult<bool> {
        let coll = self.collection_mut(&spec.collection);
        if let Some(existing) = coll.indexes.iter().find(|i| i.spec.name == spec.name) {
            return if same_definition(&existing.spec, spec) {
                Ok(false)
            } else {
                Err(StoreError::Invalid(format!(
                    "index {} of {} exists with another definition",
                    spec.name, spec.collection
                )))
            };
        }
        let mut index = Index {
            spec: Arc::new(spec.clone()),
            entries: OrdMap::new(),
        };
        for (id, doc) in &coll.docs {
            let keys = index.keys(doc);
            if index.is_taken(&keys, id) {
                return Err(StoreError::Duplicate {
                    collection: spec.collection.clone(),
                    index: spec.name.clone(),
                });
            }
            let id = id.clone();
            index.entries.insert(Arc::new(Entry { keys, id }), ());
        }
        Arc::make_mut(&mut coll.indexes).push(index);
        Ok(true)
    }

    /// Drops the index if it exists; whether it did.
    pub(super) fn drop_index(&mut self, collection: &str, name: &str) -> bool {
        let Some(coll) = self.collections.get_mut(collection) else {
            return false;
        };
        let before = coll.indexes.len();
        Arc::make_mut(&mut coll.indexes).retain(|index| index.spec.name != name);
        coll.indexes.len() != before
    }

    /// Replays one record of the log (or of a snapshot). The log only holds
    /// what once committed, so writes are applied without checks.
    pub(super) fn replay(&mut self, record: Record) -> StoreResult<()> {
        match record {
            Record::Writes(writes) => {
                for Write {
                    collection,
                    id,
                    doc,
                } in writes
                {
                    self.collection_mut(&collection).put(&Id::from(id), doc);
                }
            }
            Record::CreateIndex(spec) => {
                self.create_index(&spec)?;
            }
            Record::DropIndex { collection, name } => {
                self.drop_index(&collection, &name);
            }
        }
        Ok(())
    }

    /// The records that rebuild this state: every index, then every
    /// document in chunks.
    pub(super) fn write_snapshot(
        &self,
        sink: &mut dyn FnMut(&Record) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        for coll in self.collections.values() {
            for index in coll.indexes.iter() {
                sink(&Record::CreateIndex((*index.spec).clone()))?;
            }
        }
        for (name, coll) in &self.collections {
            let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
            for (id, doc) in &coll.docs {
                chunk.push(Write {
                    collection: name.to_string(),
                    id: id.to_string(),
                    doc: Some(doc.clone()),
                });
                if chunk.len() == SNAPSHOT_CHUNK {
                    sink(&Record::Writes(std::mem::take(&mut chunk)))?;
                }
            }
            if !chunk.is_empty() {
                sink(&Record::Writes(chunk))?;
            }
        }
        Ok(())
    }

    /// Per-collection document counts and index names.
    pub(super) fn stats(&self) -> Map<String, Value> {
        self.collections
            .iter()
            .map(|(name, coll)| {
                let indexes: Vec<&str> =
                    coll.indexes.iter().map(|i| i.spec.name.as_str()).collect();
                (
                    name.to_string(),
                    json!({ "documents": coll.docs.len(), "indexes": indexes }),
                )
            })
            .collect()
    }
}

/// Index definitions match when their fields do; a direction does not
/// matter to an in-memory tree, which is walked both ways.
fn same_definition(a: &IndexSpec, b: &IndexSpec) -> bool {
    a.unique == b.unique
        && a.fields.len() == b.fields.len()
        && a.fields
            .iter()
            .zip(&b.fields)
            .all(|((x, _), (y, _))| x == y)
}

/// One read over one collection, planned.
struct Query<'a> {
    coll: &'a Collection,
    filter: &'a Filter,
    options: &'a FindOptions,
    /// The sort position to resume after, as keys.
    after: Option<(Key, &'a str)>,
}

/// How a query finds its candidates.
enum Plan<'a> {
    /// One document, by its id.
    Id(&'a str),
    /// Entries of an index whose first `pinned` keys are given; in sort
    /// order when `ordered`.
    Index {
        index: &'a Index,
        pinned: Vec<Key>,
        ordered: bool,
    },
    /// Every document, in id order.
    Scan,
}

impl<'a> Query<'a> {
    fn new(coll: &'a Collection, filter: &'a Filter, options: &'a FindOptions) -> Self {
        let after = options
            .after
            .as_ref()
            .map(|after| (Key::of(Some(&after.value)), after.id.as_str()));
        Self {
            coll,
            filter,
            options,
            after,
        }
    }

    fn sorted_by_id(&self) -> bool {
        self.options.sort_field == ID
    }

    fn descending(&self) -> bool {
        self.options.direction == Direction::Desc
    }

    /// Picks the index pinning the most leading fields, preferring one that
    /// yields the sort order; the id when the filter names one.
    fn plan(&self) -> Plan<'a> {
        // Few conditions per filter: a list beats a map.
        let mut pins: Vec<(&str, &Value)> = Vec::new();
        for condition in self.filter.conditions() {
            if let Condition::Compare {
                field,
                op: Op::Eq,
                value,
            } = condition
            {
                if field == ID {
                    if let Value::String(id) = value {
                        return Plan::Id(id);
                    }
                }
                pins.push((field, value));
            }
        }
        let pin = |field: &str| pins.iter().find(|(f, _)| *f == field).map(|(_, v)| *v);
        let mut best: Option<(usize, bool, &Index)> = None;
        for index in self.coll.indexes.iter() {
            let fields = &index.spec.fields;
            let pinned = fields
                .iter()
                .take_while(|(field, _)| pin(field).is_some())
                .count();
            let ordered = if pinned == fields.len() {
                self.sorted_by_id()
            } else {
                pinned + 1 == fields.len() && fields[pinned].0 == self.options.sort_field
            };
            if pinned == 0 && !ordered {
                continue;
            }
            if best.is_none_or(|(p, o, _)| (pinned, ordered) > (p, o)) {
                best = Some((pinned, ordered, index));
            }
        }
        match best {
            Some((pinned, ordered, index)) => Plan::Index {
                index,
                pinned: index.spec.fields[..pinned]
                    .iter()
                    .map(|(field, _)| Key::of(pin(field)))
                    .collect(),
                ordered,
            },
            None => Plan::Scan,
        }
    }

    /// The matching documents, in the plan's order (not necessarily the
    /// sort order).
    fn candidates(&self, plan: &Plan<'a>) -> Box<dyn Iterator<Item = &'a Arc<Document>> + '_> {
        let docs = &self.coll.docs;
        let matching = move |doc: &&Arc<Document>| value::matches(doc, self.filter);
        match plan {
            Plan::Id(id) => Box::new(docs.get(*id).into_iter().filter(matching)),
            Plan::Scan if self.sorted_by_id() => {
                let lower = match self.after {
                    Some((_, id)) if !self.descending() => Bound::Excluded(id),
                    _ => Bound::Unbounded,
                };
                let upper = match self.after {
                    Some((_, id)) if self.descending() => Bound::Excluded(id),
                    _ => Bound::Unbounded,
                };
                let range = docs.range::<_, str>((lower, upper)).map(|(_, doc)| doc);
                if self.descending() {
                    Box::new(range.rev().filter(matching))
                } else {
                    Box::new(range.filter(matching))
                }
            }
            Plan::Scan => Box::new(docs.values().filter(matching)),
            Plan::Index {
                index,
                pinned,
                ordered,
            } => {
                let ordered = *ordered;
                let sort_in_index = pinned.len() < index.spec.fields.len();
                let (lower, upper) = self.bounds(pinned.clone(), ordered, sort_in_index);
                let range = index
                    .entries
                    .range((lower, upper))
                    .filter_map(|(entry, ())| docs.get(&entry.id));
                if ordered && self.descending() {
                    Box::new(range.rev().filter(matching))
                } else {
                    Box::new(range.filter(matching))
                }
            }
        }
    }

    /// The index entries holding `pinned`; when the walk is in sort order
    /// and resumes, only those past the resume position.
    /// `sort_in_index`: the sort field is the index's field after the
    /// pinned ones (rather than the id every entry ends with).
    fn bounds(
        &self,
        pinned: Vec<Key>,
        ordered: bool,
        sort_in_index: bool,
    ) -> (Bound<Entry>, Bound<Entry>) {
        let mut past = pinned.clone();
        past.push(Key::Max);
        let mut lower = Bound::Included(Entry::first(pinned.clone()));
        let mut upper = Bound::Excluded(Entry::first(past));
        if let (true, Some((key, id))) = (ordered, &self.after) {
            let mut keys = pinned;
            if sort_in_index {
                // An index may name `_id` itself as its sort field.
                keys.push(if self.sorted_by_id() {
                    Key::Text((*id).to_owned())
                } else {
                    key.clone()
                });
            }
            let resume = Bound::Excluded(Entry {
                keys,
                id: Id::from(*id),
            });
            if self.descending() {
                upper = resume;
            } else {
                lower = resume;
            }
        }
        (lower, upper)
    }

    /// Whether a document comes after the resume position in sort order.
    fn is_past(&self, doc: &Document) -> bool {
        let Some((key, id)) = &self.after else {
            return true;
        };
        let own_id = doc.get(ID).and_then(Value::as_str).unwrap_or_default();
        let order = if self.sorted_by_id() {
            own_id.cmp(id)
        } else {
            Key::of(value::field(doc, &self.options.sort_field))
                .cmp(key)
                .then_with(|| own_id.cmp(id))
        };
        if self.descending() {
            order.is_lt()
        } else {
            order.is_gt()
        }
    }

    fn sort_key(&self, doc: &Document) -> (Key, String) {
        let id = doc.get(ID).and_then(Value::as_str).unwrap_or_default();
        let key = if self.sorted_by_id() {
            Key::Null
        } else {
            Key::of(value::field(doc, &self.options.sort_field))
        };
        (key, id.to_owned())
    }

    fn run(&self) -> Vec<Arc<Document>> {
        let limit = self.options.limit.unwrap_or(usize::MAX);
        let plan = self.plan();
        let in_order = match plan {
            Plan::Id(_) => false,
            Plan::Scan => self.sorted_by_id(),
            Plan::Index { ordered, .. } => ordered,
        };
        let past = self.candidates(&plan).filter(|doc| self.is_past(doc));
        if in_order {
            return past.take(limit).cloned().collect();
        }
        let mut docs: Vec<(_, &Arc<Document>)> =
            past.map(|doc| (self.sort_key(doc), doc)).collect();
        docs.sort_by(|(a, _), (b, _)| a.cmp(b));
        if self.descending() {
            docs.reverse();
        }
        docs.into_iter()
            .take(limit)
            .map(|(_, doc)| doc.clone())
            .collect()
    }
}
