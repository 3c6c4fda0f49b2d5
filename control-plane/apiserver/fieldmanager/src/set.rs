//! Sets of field paths, stored as a trie: what one manager owns, or what a write changed.
//! Converts to and from the `fieldsV1` form of managedFields, where a path's own membership
//! shows as `".": {}` when it also has members below it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::path::Element;

/// A set of paths. A path is in the set when its last element is a member of the node its
/// prefix leads to; a node may have members below it without being a member itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<Element>,
    children: BTreeMap<Element, FieldSet>,
}

/// The set with no paths, to borrow where a subtree is absent.
pub(crate) static EMPTY: FieldSet = FieldSet {
    members: BTreeSet::new(),
    children: BTreeMap::new(),
};

impl FieldSet {
    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is ignored).
    pub fn insert(&mut self, path: &[Element]) {
        let Some((last, prefix)) = path.split_last() else {
            return;
        };
        let mut node = self;
        for element in prefix {
            node = node.children.entry(element.clone()).or_default();
        }
        node.members.insert(last.clone());
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &[Element]) -> bool {
        let Some((last, prefix)) = path.split_last() else {
            return false;
        };
        let mut node = self;
        for element in prefix {
            match node.children.get(element) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.members.contains(last)
    }

    /// Whether `element` (a path of one step from here) is in the set.
    pub fn has_member(&self, element: &Element) -> bool {
        self.members.contains(element)
    }

    /// The paths below `element`, relative to it.
    pub fn child(&self, element: &Element) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Whether any path of the set starts with `element` and goes further.
    pub fn has_below(&self, element: &Element) -> bool {
        self.children.get(element).is_some_and(|c| !c.is_empty())
    }

    /// The elements one step from here that are members or lead to members.
    pub fn elements(&self) -> BTreeSet<&Element> {
        let below = self.children.iter().filter(|(_, c)| !c.is_empty());
        self.members.iter().chain(below.map(|(e, _)| e)).collect()
    }

    /// The paths that start with `element` (it included).
    pub fn only(&self, element: &Element) -> FieldSet {
        let mut out = FieldSet::default();
        if self.members.contains(element) {
            out.members.insert(element.clone());
        }
        if let Some(child) = self.children.get(element).filter(|c| !c.is_empty()) {
            out.children.insert(element.clone(), child.clone());
        }
        out
    }

    /// Whether `element` is in the set or leads to paths in it.
    pub fn mentions(&self, element: &Element) -> bool {
        self.has_member(element) || self.has_below(element)
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out.normalized()
    }

    /// Paths in this set and not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: self
                .children
                .iter()
                .map(|(element, child)| match other.children.get(element) {
                    Some(theirs) => (element.clone(), child.difference(theirs)),
                    None => (element.clone(), child.clone()),
                })
                .collect(),
        }
        .normalized()
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: self
                .children
                .iter()
                .filter_map(|(element, child)| {
                    other
                        .children
                        .get(element)
                        .map(|theirs| (element.clone(), child.intersection(theirs)))
                })
                .collect(),
        }
        .normalized()
    }

    /// Paths of this set that neither are in `other` nor lie below a path of it.
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: self
                .children
                .iter()
                .filter(|(element, _)| !other.members.contains(element))
                .map(|(element, child)| match other.children.get(element) {
                    Some(theirs) => (element.clone(), child.recursive_difference(theirs)),
                    None => (element.clone(), child.clone()),
                })
                .collect(),
        }
        .normalized()
    }

    /// Every path of the set, in order.
    pub fn paths(&self) -> Vec<Vec<Element>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<Element>, out: &mut Vec<Vec<Element>>) {
        for element in self.elements() {
            prefix.push(element.clone());
            if self.members.contains(element) {
                out.push(prefix.clone());
            }
            if let Some(child) = self.children.get(element) {
                child.collect_paths(prefix, out);
            }
            prefix.pop();
        }
    }

    fn normalized(mut self) -> FieldSet {
        self.children.retain(|_, child| !child.is_empty());
        self
    }

    /// The `fieldsV1` document of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut out = Map::new();
        for element in self.elements() {
            let mut node = match self.children.get(element) {
                Some(child) => match child.to_fields_v1() {
                    Value::Object(map) => map,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            if self.members.contains(element) && !node.is_empty() {
                node.insert(".".into(), Value::Object(Map::new()));
                node.sort_keys();
            }
            out.insert(element.encode(), Value::Object(node));
        }
        out.sort_keys();
        Value::Object(out)
    }

    /// Parses a `fieldsV1` document.
    pub fn from_fields_v1(document: &Value) -> Result<FieldSet, String> {
        let Value::Object(entries) = document else {
            return Err("must be a JSON object".into());
        };
        let mut set = FieldSet::default();
        for (key, value) in entries {
            if key == "." {
                continue;
            }
            let element = Element::decode(key)?;
            let Value::Object(below) = value else {
                return Err(format!("{key}: must be a JSON object"));
            };
            if below.is_empty() || below.contains_key(".") {
                set.members.insert(element.clone());
            }
            if below.keys().any(|k| k != ".") {
                set.children
                    .insert(element, FieldSet::from_fields_v1(value)?);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field(name: &str) -> Element {
        Element::Field(name.into())
    }

    fn set(paths: &[&[&str]]) -> FieldSet {
        let mut out = FieldSet::default();
        for path in paths {
            let path: Vec<Element> = path.iter().map(|p| field(p)).collect();
            out.insert(&path);
        }
        out
    }

    #[test]
    fn fields_v1_round_trip_marks_members_with_children() {
        let document = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}},
                       "f:replicas": {}}
        });
        let parsed = FieldSet::from_fields_v1(&document).unwrap();
        assert!(parsed.contains(&[field("metadata"), field("labels")]));
        assert!(!parsed.contains(&[field("metadata")]));
        assert!(parsed.contains(&[field("spec"), field("replicas")]));
        assert_eq!(parsed.to_fields_v1(), document);
        assert_eq!(parsed.paths().len(), 6);
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"q:a": {}})).is_err());
    }

    #[test]
    fn set_algebra() {
        let a = set(&[
            &["spec", "replicas"],
            &["spec", "paused"],
            &["metadata", "labels", "x"],
        ]);
        let b = set(&[&["spec", "replicas"], &["spec", "minReadySeconds"]]);
        assert_eq!(a.intersection(&b), set(&[&["spec", "replicas"]]));
        assert_eq!(
            a.difference(&b),
            set(&[&["spec", "paused"], &["metadata", "labels", "x"]])
        );
        assert_eq!(a.union(&b).paths().len(), 4);
        assert!(a.difference(&a).is_empty());
        // Everything at or below `metadata` goes.
        assert_eq!(
            a.recursive_difference(&set(&[&["metadata"]])),
            set(&[&["spec", "replicas"], &["spec", "paused"]])
        );
    }
}
