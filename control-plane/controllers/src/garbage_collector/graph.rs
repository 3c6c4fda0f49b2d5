//! The ownership graph: every object the collector watches, its owners and its dependents,
//! built from watch events alone. Pure: observing a change returns the work it causes, and
//! [`decide`] says what to do with one object; the runtime does the API calls.
//!
//! An owner named by a reference but not (yet) observed is a *virtual* node; the runtime
//! checks with the API whether it exists, and if not, its dependents are collected.

use std::collections::{HashMap, HashSet};

/// The coordinates of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Its apiVersion.
    pub api_version: String,
    /// Its kind.
    pub kind: String,
    /// Its namespace; for a virtual owner, the namespace of the dependent that named it
    /// (where the owner lives if its kind is namespaced).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its uid, the graph's key.
    pub uid: String,
}

/// One `metadata.ownerReferences` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owner's apiVersion.
    pub api_version: String,
    /// The owner's kind.
    pub kind: String,
    /// The owner's name.
    pub name: String,
    /// The owner's uid.
    pub uid: String,
    /// Whether the owner's foreground deletion waits for this dependent.
    pub block_owner_deletion: bool,
}

/// An object as a watch event shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Who it is.
    pub identity: Identity,
    /// Its owner references.
    pub owners: Vec<Owner>,
    /// Whether it has a deletionTimestamp.
    pub deleting: bool,
    /// Whether it carries the `orphan` finalizer.
    pub orphan_finalizer: bool,
    /// Whether it carries the `foregroundDeletion` finalizer.
    pub foreground_finalizer: bool,
}

/// Work the graph asks of the runtime, keyed by uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// See whether the object should go (its owners are gone), or, deleting in the
    /// foreground, whether its dependents are gone; or, virtual, whether it exists.
    AttemptToDelete(String),
    /// Remove the owner references to this object from its dependents, then its `orphan`
    /// finalizer.
    Orphan(String),
}

#[derive(Debug)]
struct Node {
    identity: Identity,
    owners: Vec<Owner>,
    dependents: HashSet<String>,
    /// False for a virtual node: named as an owner, never observed.
    observed: bool,
    deleting: bool,
    deleting_dependents: bool,
}

/// A dependent of an object, as [`View`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependent {
    /// Who it is.
    pub identity: Identity,
    /// Whether its reference to the owner blocks the owner's foreground deletion.
    pub blocks: bool,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Whether it is itself waiting for its dependents.
    pub deleting_dependents: bool,
}

/// A copy of one node for a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// Who it is.
    pub identity: Identity,
    /// Whether it was observed (false: virtual).
    pub observed: bool,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// Whether it is being deleted in the foreground.
    pub deleting_dependents: bool,
    /// Its dependents.
    pub dependents: Vec<Dependent>,
}

/// What the graph knows of an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Observed: it exists (as of the last event).
    Present {
        /// Whether it is being deleted in the foreground.
        deleting_dependents: bool,
    },
    /// Not observed: the API must be asked.
    Unknown,
}

/// The graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Objects in the graph, virtual ones included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// An object was added or changed.
    pub fn observe(&mut self, object: Observed) -> Vec<Work> {
        let uid = object.identity.uid.clone();
        let mut work = Vec::new();
        let (old_owners, was_deleting_dependents, was_observed) = match self.nodes.get_mut(&uid) {
            Some(node) => {
                let old = std::mem::take(&mut node.owners);
                let was = (node.deleting_dependents, node.observed);
                node.identity = object.identity.clone();
                node.observed = true;
                node.deleting = object.deleting;
                (old, was.0, was.1)
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: object.identity.clone(),
                        owners: Vec::new(),
                        dependents: HashSet::new(),
                        observed: true,
                        deleting: object.deleting,
                        deleting_dependents: false,
                    },
                );
                (Vec::new(), false, false)
            }
        };

        for old in &old_owners {
            let kept = object.owners.iter().find(|o| o.uid == old.uid);
            match kept {
                None => {
                    self.unlink(&old.uid, &uid, &mut work);
                }
                Some(new) if old.block_owner_deletion && !new.block_owner_deletion => {
                    if self.is_deleting_dependents(&old.uid) {
                        work.push(Work::AttemptToDelete(old.uid.clone()));
                    }
                }
                Some(_) => {}
            }
        }
        for owner in &object.owners {
            if old_owners.iter().any(|o| o.uid == owner.uid) {
                continue;
            }
            let node = self.nodes.entry(owner.uid.clone()).or_insert_with(|| {
                work.push(Work::AttemptToDelete(owner.uid.clone()));
                Node {
                    identity: Identity {
                        api_version: owner.api_version.clone(),
                        kind: owner.kind.clone(),
                        namespace: object.identity.namespace.clone(),
                        name: owner.name.clone(),
                        uid: owner.uid.clone(),
                    },
                    owners: Vec::new(),
                    dependents: HashSet::new(),
                    observed: false,
                    deleting: false,
                    deleting_dependents: false,
                }
            });
            node.dependents.insert(uid.clone());
            if node.deleting_dependents {
                work.push(Work::AttemptToDelete(uid.clone()));
            }
        }

        let Some(node) = self.nodes.get_mut(&uid) else {
            return work;
        };
        node.owners = object.owners;
        if object.deleting && object.orphan_finalizer {
            work.push(Work::Orphan(uid.clone()));
        }
        node.deleting_dependents = object.deleting && object.foreground_finalizer;
        if node.deleting_dependents && (!was_deleting_dependents || !was_observed) {
            work.extend(
                node.dependents
                    .iter()
                    .map(|d| Work::AttemptToDelete(d.clone())),
            );
            work.push(Work::AttemptToDelete(uid));
        }
        work
    }

    /// An object was deleted (or a virtual one found not to exist): its dependents may go,
    /// and owners waiting for it may finish.
    pub fn forget(&mut self, uid: &str) -> Vec<Work> {
        let mut work = Vec::new();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for owner in &node.owners {
            self.unlink(&owner.uid, uid, &mut work);
        }
        work.extend(node.dependents.into_iter().map(Work::AttemptToDelete));
        work
    }

    /// Like [`Graph::forget`], only if the object is still virtual.
    pub fn forget_virtual(&mut self, uid: &str) -> Vec<Work> {
        match self.nodes.get(uid) {
            Some(node) if !node.observed => self.forget(uid),
            _ => Vec::new(),
        }
    }

    fn unlink(&mut self, owner: &str, dependent: &str, work: &mut Vec<Work>) {
        let Some(node) = self.nodes.get_mut(owner) else {
            return;
        };
        node.dependents.remove(dependent);
        if node.deleting_dependents {
            work.push(Work::AttemptToDelete(owner.to_owned()));
        }
        if !node.observed && node.dependents.is_empty() {
            self.nodes.remove(owner);
        }
    }

    fn is_deleting_dependents(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(|n| n.deleting_dependents)
    }

    /// What the graph knows of the object `uid`.
    pub fn known(&self, uid: &str) -> Known {
        match self.nodes.get(uid) {
            Some(node) if node.observed => Known::Present {
                deleting_dependents: node.deleting_dependents,
            },
            _ => Known::Unknown,
        }
    }

    /// A copy of the node `uid`, with its dependents.
    pub fn view(&self, uid: &str) -> Option<View> {
        let node = self.nodes.get(uid)?;
        let dependents = node
            .dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .map(|d| Dependent {
                identity: d.identity.clone(),
                blocks: d
                    .owners
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion),
                deleting: d.deleting,
                deleting_dependents: d.deleting_dependents,
            })
            .collect();
        Some(View {
            identity: node.identity.clone(),
            observed: node.observed,
            deleting: node.deleting,
            deleting_dependents: node.deleting_dependents,
            dependents,
        })
    }
}

/// How an owner reference of an object stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not being deleted in the foreground.
    Solid,
    /// The owner is gone (or a different object now has its name).
    Dangling,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// How an object should be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are collected after the object is gone.
    Background,
    /// The object stays until its blocking dependents are gone.
    Foreground,
    /// Dependents are released.
    Orphan,
}

/// What to do with an object whose owners are as `owners` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it.
    Keep,
    /// Some owners remain: drop the references to these (gone or waiting) owners.
    DropOwnerReferences(Vec<String>),
    /// No owner remains: delete it.
    Delete(Propagation),
}

/// The collector's rule for an object with owner references (`owners`: each reference's
/// uid and state); `has_dependents` says whether it owns anything itself, and its own
/// finalizers pick the propagation otherwise.
pub fn decide(
    owners: &[(String, OwnerState)],
    has_dependents: bool,
    orphan_finalizer: bool,
    foreground_finalizer: bool,
) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let solid = owners.iter().any(|(_, s)| *s == OwnerState::Solid);
    if solid {
        let drop: Vec<String> = owners
            .iter()
            .filter(|(_, s)| *s != OwnerState::Solid)
            .map(|(uid, _)| uid.clone())
            .collect();
        return if drop.is_empty() {
            Verdict::Keep
        } else {
            Verdict::DropOwnerReferences(drop)
        };
    }
    let waiting = owners.iter().any(|(_, s)| *s == OwnerState::Waiting);
    if waiting && has_dependents {
        // The waiting owner must wait for this object's dependents too.
        return Verdict::Delete(Propagation::Foreground);
    }
    Verdict::Delete(if orphan_finalizer {
        Propagation::Orphan
    } else if foreground_finalizer {
        Propagation::Foreground
    } else {
        Propagation::Background
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, name: &str) -> Identity {
        Identity {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn owned_by(name: &str, owners: &[(&str, bool)]) -> Observed {
        Observed {
            identity: id("Pod", name),
            owners: owners
                .iter()
                .map(|(owner, block)| Owner {
                    api_version: "apps/v1".into(),
                    kind: "ReplicaSet".into(),
                    name: (*owner).into(),
                    uid: format!("uid-{owner}"),
                    block_owner_deletion: *block,
                })
                .collect(),
            deleting: false,
            orphan_finalizer: false,
            foreground_finalizer: false,
        }
    }

    fn owner(name: &str) -> Observed {
        Observed {
            identity: Identity {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                ..id("", name)
            },
            ..owned_by(name, &[])
        }
    }

    fn delete(uid: &str) -> Work {
        Work::AttemptToDelete(uid.into())
    }

    #[test]
    fn an_unseen_owner_is_virtual_and_checked() {
        let mut graph = Graph::new();
        assert_eq!(
            graph.observe(owned_by("p", &[("rs", true)])),
            vec![delete("uid-rs")]
        );
        assert_eq!(graph.known("uid-rs"), Known::Unknown);
        let view = graph.view("uid-rs").expect("virtual node");
        assert!(!view.observed);
        assert_eq!(view.identity.kind, "ReplicaSet");
        assert_eq!(view.identity.namespace.as_deref(), Some("default"));
        // Found not to exist: its dependent is looked at.
        assert_eq!(graph.forget_virtual("uid-rs"), vec![delete("uid-p")]);
        assert!(graph.view("uid-rs").is_none());
    }

    #[test]
    fn an_observed_owner_is_not_virtual_and_its_deletion_frees_dependents() {
        let mut graph = Graph::new();
        assert!(graph.observe(owner("rs")).is_empty());
        assert!(graph.observe(owned_by("p", &[("rs", true)])).is_empty());
        assert_eq!(
            graph.known("uid-rs"),
            Known::Present {
                deleting_dependents: false
            }
        );
        assert_eq!(graph.forget("uid-rs"), vec![delete("uid-p")]);
        // Forgetting a virtual owner again is harmless.
        assert!(graph.forget_virtual("uid-rs").is_empty());
    }

    #[test]
    fn a_virtual_owner_observed_later_stays() {
        let mut graph = Graph::new();
        graph.observe(owned_by("p", &[("rs", true)]));
        graph.observe(owner("rs"));
        assert!(graph.forget_virtual("uid-rs").is_empty());
        assert_eq!(graph.view("uid-rs").map(|v| v.dependents.len()), Some(1));
    }

    #[test]
    fn foreground_deletion_asks_for_every_dependent_then_itself() {
        let mut graph = Graph::new();
        graph.observe(owner("rs"));
        graph.observe(owned_by("a", &[("rs", true)]));
        graph.observe(owned_by("b", &[("rs", false)]));
        let mut deleting = owner("rs");
        deleting.deleting = true;
        deleting.foreground_finalizer = true;
        let mut work = graph.observe(deleting.clone());
        work.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(
            work,
            vec![delete("uid-a"), delete("uid-b"), delete("uid-rs")]
        );
        // Seen again in the same state: nothing new.
        assert!(graph.observe(deleting).is_empty());
        let view = graph.view("uid-rs").expect("owner");
        let blocking: Vec<_> = view.dependents.iter().filter(|d| d.blocks).collect();
        assert_eq!(blocking.len(), 1);
        // A dependent going away lets the owner finish.
        assert_eq!(graph.forget("uid-a"), vec![delete("uid-rs")]);
    }

    #[test]
    fn a_dependent_added_to_a_foreground_deletion_is_collected() {
        let mut graph = Graph::new();
        let mut deleting = owner("rs");
        deleting.deleting = true;
        deleting.foreground_finalizer = true;
        graph.observe(deleting);
        assert_eq!(
            graph.observe(owned_by("late", &[("rs", true)])),
            vec![delete("uid-late")]
        );
    }

    #[test]
    fn unblocking_or_dropping_a_reference_wakes_a_waiting_owner() {
        let mut graph = Graph::new();
        let mut deleting = owner("rs");
        deleting.deleting = true;
        deleting.foreground_finalizer = true;
        graph.observe(deleting);
        graph.observe(owned_by("p", &[("rs", true)]));
        assert_eq!(
            graph.observe(owned_by("p", &[("rs", false)])),
            vec![delete("uid-rs")]
        );
        assert_eq!(graph.observe(owned_by("p", &[])), vec![delete("uid-rs")]);
        assert!(graph.view("uid-rs").expect("owner").dependents.is_empty());
    }

    #[test]
    fn orphaning_is_asked_while_the_finalizer_is_there() {
        let mut graph = Graph::new();
        let mut deleting = owner("rs");
        deleting.deleting = true;
        deleting.orphan_finalizer = true;
        assert_eq!(graph.observe(deleting), vec![Work::Orphan("uid-rs".into())]);
    }

    #[test]
    fn a_virtual_owner_with_no_dependents_left_is_dropped() {
        let mut graph = Graph::new();
        graph.observe(owned_by("p", &[("rs", true)]));
        graph.observe(owned_by("p", &[]));
        assert!(graph.view("uid-rs").is_none());
        assert_eq!(graph.len(), 1);
    }

    fn owners(states: &[OwnerState]) -> Vec<(String, OwnerState)> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("o{i}"), *s))
            .collect()
    }

    #[test]
    fn the_rule() {
        use OwnerState::*;
        assert_eq!(decide(&[], false, false, false), Verdict::Keep);
        assert_eq!(
            decide(&owners(&[Solid]), false, false, false),
            Verdict::Keep
        );
        assert_eq!(
            decide(&owners(&[Solid, Dangling, Waiting]), true, false, false),
            Verdict::DropOwnerReferences(vec!["o1".into(), "o2".into()])
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, false, false),
            Verdict::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), true, true, false),
            Verdict::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(&owners(&[Waiting]), false, false, false),
            Verdict::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(&owners(&[Waiting, Dangling]), true, false, false),
            Verdict::Delete(Propagation::Foreground)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, false, true),
            Verdict::Delete(Propagation::Foreground)
        );
    }
}
