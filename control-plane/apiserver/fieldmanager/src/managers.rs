//! An object's `metadata.managedFields`: one entry per manager and operation, each with the
//! set of fields it owns. Decoding validates what clients send; encoding orders entries as
//! Kubernetes does (appliers first, then oldest first) and caps the number of updaters.

use serde_json::{Map, Value, json};

use crate::Error;
use crate::set::FieldSet;

/// How a manager last wrote its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply: the manager states the fields it wants to own.
    Apply,
    /// Any other write: the manager owns what it changed.
    Update,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who: a field manager name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The API version the fields are named in.
    pub api_version: String,
    /// The subresource written through ("" for the resource itself).
    pub subresource: String,
    /// When the entry last changed (RFC 3339).
    pub time: Option<String>,
    /// The fields owned.
    pub fields: FieldSet,
}

impl Entry {
    /// Whether `self` and `other` are the same manager: appliers regardless of API version.
    pub fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How conflict messages name the manager.
    pub fn describe(&self) -> String {
        let mut text = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            text.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            text.push_str(&format!(" using {}", self.api_version));
        }
        text
    }
}

/// The most updaters kept; older ones are folded into one entry, as Kubernetes does.
const MAX_UPDATERS: usize = 10;
const ANCIENT: &str = "ancient-changes";

/// All managers of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managers {
    /// The entries, in no particular order until encoded.
    pub entries: Vec<Entry>,
}

impl Managers {
    /// Decodes `metadata.managedFields` (absent means none).
    pub fn decode(value: Option<&Value>) -> Result<Managers, Error> {
        let items = match value {
            None | Some(Value::Null) => return Ok(Managers::default()),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(Error::invalid("metadata.managedFields", "must be a list")),
        };
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = |field: &str| format!("metadata.managedFields[{i}].{field}");
            let Some(item) = item.as_object() else {
                return Err(Error::invalid(
                    format!("metadata.managedFields[{i}]"),
                    "must be an object",
                ));
            };
            let text = |field: &str| -> Result<String, Error> {
                match item.get(field) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(Error::invalid(at(field), "must be a string")),
                }
            };
            let fields = match item.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(document) => FieldSet::from_fields_v1(document)
                    .map_err(|e| Error::invalid(at("fieldsV1"), e))?,
            };
            let fields_type = text("fieldsType")?;
            if !fields.is_empty() && fields_type != "FieldsV1" {
                return Err(Error::invalid(
                    at("fieldsType"),
                    format!("must be \"FieldsV1\", not {fields_type:?}"),
                ));
            }
            let operation = match text("operation")?.as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                // An entry that owns nothing is dropped anyway (clients send `[{}]` to reset).
                _ if fields.is_empty() => Operation::Update,
                other => {
                    return Err(Error::invalid(
                        at("operation"),
                        format!("must be \"Apply\" or \"Update\", not {other:?}"),
                    ));
                }
            };
            let time = text("time")?;
            entries.push(Entry {
                manager: text("manager")?,
                operation,
                api_version: text("apiVersion")?,
                subresource: text("subresource")?,
                time: (!time.is_empty()).then_some(time),
                fields,
            });
        }
        Ok(Managers { entries })
    }

    /// The entry of `manager`, if it has one.
    pub fn get(&self, manager: &Entry) -> Option<&Entry> {
        self.entries.iter().find(|e| e.same_manager(manager))
    }

    /// Replaces the entry of the same manager (or adds it).
    pub fn set(&mut self, entry: Entry) {
        self.entries.retain(|e| !e.same_manager(&entry));
        self.entries.push(entry);
    }

    /// The `metadata.managedFields` list, or None when no manager owns anything.
    pub fn encode(mut self) -> Option<Value> {
        self.entries.retain(|e| !e.fields.is_empty());
        self.cap_updaters();
        self.entries.sort_by(|a, b| {
            (a.operation, &a.time, &a.manager).cmp(&(b.operation, &b.time, &b.manager))
        });
        if self.entries.is_empty() {
            return None;
        }
        let items = self.entries.iter().map(|e| {
            let mut item = Map::new();
            item.insert("manager".into(), json!(e.manager));
            item.insert("operation".into(), json!(e.operation.name()));
            item.insert("apiVersion".into(), json!(e.api_version));
            if let Some(time) = &e.time {
                item.insert("time".into(), json!(time));
            }
            item.insert("fieldsType".into(), json!("FieldsV1"));
            item.insert("fieldsV1".into(), e.fields.to_fields_v1());
            if !e.subresource.is_empty() {
                item.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(item)
        });
        Some(Value::Array(items.collect()))
    }

    fn cap_updaters(&mut self) {
        let updaters = self
            .entries
            .iter()
            .filter(|e| e.operation == Operation::Update)
            .count();
        if updaters <= MAX_UPDATERS {
            return;
        }
        let mut oldest: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].operation == Operation::Update)
            .collect();
        oldest.sort_by(|&a, &b| self.entries[a].time.cmp(&self.entries[b].time));
        // One slot goes to the folded entry.
        let fold: Vec<usize> = oldest
            .into_iter()
            .take(updaters - MAX_UPDATERS + 1)
            .collect();
        let mut folded = Entry {
            manager: ANCIENT.into(),
            operation: Operation::Update,
            api_version: self.entries[fold[0]].api_version.clone(),
            subresource: String::new(),
            time: None,
            fields: FieldSet::default(),
        };
        for &i in &fold {
            folded.fields = folded.fields.union(&self.entries[i].fields);
            folded.time = folded.time.max(self.entries[i].time.clone());
        }
        let mut index = 0;
        self.entries.retain(|_| {
            index += 1;
            !fold.contains(&(index - 1))
        });
        self.entries.push(folded);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::path::Element;

    fn entry(manager: &str, operation: Operation, time: &str, field: &str) -> Entry {
        let mut fields = FieldSet::default();
        fields.insert(&[Element::Field(field.into())]);
        Entry {
            manager: manager.into(),
            operation,
            api_version: "v1".into(),
            subresource: String::new(),
            time: Some(time.into()),
            fields,
        }
    }

    #[test]
    fn round_trip_in_kubernetes_order() {
        let managers = Managers {
            entries: vec![
                entry("b", Operation::Update, "2026-01-02T00:00:00Z", "x"),
                entry("a", Operation::Update, "2026-01-01T00:00:00Z", "y"),
                entry("kubectl", Operation::Apply, "2026-01-03T00:00:00Z", "z"),
            ],
        };
        let encoded = managers.clone().encode().unwrap();
        let names: Vec<&str> = encoded
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["kubectl", "a", "b"]);
        assert_eq!(encoded[0]["fieldsV1"], json!({"f:z": {}}));
        let decoded = Managers::decode(Some(&encoded)).unwrap();
        assert_eq!(decoded.entries.len(), 3);
        assert!(decoded.get(&managers.entries[2]).is_some());
    }

    #[test]
    fn bad_entries_name_the_field() {
        let error = Managers::decode(Some(&json!([{"manager": "m", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"x": {}}}])))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("metadata.managedFields[0].fieldsV1"),
            "{error}"
        );
        let error = Managers::decode(Some(&json!([{"manager": "m", "operation": "Patch", "fieldsType": "FieldsV1", "fieldsV1": {"f:a": {}}}])))
            .unwrap_err();
        assert!(error.to_string().contains("operation"), "{error}");
        // `[{}]` is how clients clear managedFields.
        assert_eq!(Managers::decode(Some(&json!([{}]))).unwrap().encode(), None);
    }

    #[test]
    fn updaters_beyond_the_cap_fold_into_one() {
        let mut managers = Managers::default();
        for i in 0..12 {
            managers.set(entry(
                &format!("m{i:02}"),
                Operation::Update,
                &format!("2026-01-01T00:00:{i:02}Z"),
                &format!("f{i}"),
            ));
        }
        let encoded = managers.encode().unwrap();
        let entries = encoded.as_array().unwrap();
        assert_eq!(entries.len(), MAX_UPDATERS);
        let ancient = entries.iter().find(|e| e["manager"] == ANCIENT).unwrap();
        assert_eq!(
            ancient["fieldsV1"],
            json!({"f:f0": {}, "f:f1": {}, "f:f2": {}})
        );
    }
}
