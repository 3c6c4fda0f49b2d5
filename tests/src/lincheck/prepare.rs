//! Turning one key's sub-history into the search's input: values interned to integers, each
//! call's effect on the register, and the exact reductions of calls whose outcome is unknown.

use std::collections::{HashMap, HashSet};

use super::*;

pub(super) fn malformed(op: &Op) -> Option<String> {
    let Outcome::Ok(ret) = &op.outcome else {
        return None;
    };
    if op.ret < op.invoke {
        return Some("it returns before it is invoked".into());
    }
    let matches = matches!(
        (&op.call, ret),
        (Call::Put { .. }, Return::Put)
            | (Call::Get { .. }, Return::Get(_))
            | (Call::Cas { .. }, Return::Cas(_) | Return::CasSaw(_))
    );
    (!matches).then(|| "its result is not of its call's kind".into())
}

/// A register state or value, interned: 0 is "absent", other values index the key's names.
pub(super) type Val = u32;
pub(super) const ABSENT: Val = 0;

/// What an operation does to the register, and whether the register allows it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Effect {
    Write(Val),
    Read(Val),
    CasHit { expect: Val, new: Val },
    CasMiss { expect: Val },
    CasMissSaw { expect: Val, seen: Val },
}

impl Effect {
    /// The value the register must hold for this operation, if one.
    pub(super) fn needs(self) -> Option<Val> {
        match self {
            Effect::Read(v)
            | Effect::CasHit { expect: v, .. }
            | Effect::CasMissSaw { seen: v, .. } => Some(v),
            Effect::Write(_) | Effect::CasMiss { .. } => None,
        }
    }

    /// Whether it leaves the value as it is wherever it applies. (A write of the value the
    /// key already holds is not: elsewhere, it would change the value.)
    pub(super) fn is_pure(self) -> bool {
        match self {
            Effect::Read(_) | Effect::CasMiss { .. } | Effect::CasMissSaw { .. } => true,
            Effect::CasHit { expect, new } => expect == new,
            Effect::Write(_) => false,
        }
    }

    pub(super) fn apply(self, state: Val) -> Option<Val> {
        match self {
            Effect::Write(v) => Some(v),
            Effect::Read(v) => (v == state).then_some(state),
            Effect::CasHit { expect, new } => (expect == state).then_some(new),
            Effect::CasMiss { expect } => (expect != state).then_some(state),
            Effect::CasMissSaw { expect, seen } => {
                (seen == state && expect != state).then_some(state)
            }
        }
    }
}

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyOp {
    /// Index in the history.
    pub(super) orig: usize,
    pub(super) invoke: Nanos,
    /// `None`: an unknown outcome — optional, with its return at infinity.
    pub(super) ret: Option<Nanos>,
    pub(super) effect: Effect,
    /// For interchangeable optional operations (see `prepare`): the one before it, which must
    /// be linearized first.
    pub(super) after: Option<usize>,
}

/// One key's values as small integers, so states hash and compare cheaply.
pub(super) struct Interner<'h> {
    pub(super) ids: HashMap<&'h str, Val>,
    /// Index 0 stands for "absent".
    pub(super) names: Vec<String>,
}

impl Default for Interner<'_> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            names: vec![String::new()],
        }
    }
}

impl<'h> Interner<'h> {
    pub(super) fn intern(&mut self, s: Option<&'h str>) -> Val {
        let Some(s) = s else { return ABSENT };
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // More than 2^32 distinct values cannot fit in memory as a history anyway.
        let id = Val::try_from(self.names.len()).unwrap_or(Val::MAX);
        self.ids.insert(s, id);
        self.names.push(s.to_string());
        id
    }
}

pub(super) struct Prepared {
    pub(super) ops: Vec<KeyOp>,
    pub(super) names: Vec<String>,
    pub(super) observed: usize,
    pub(super) dropped: usize,
}

/// Interns one key's values and turns its operations into [`KeyOp`]s, reducing unknown
/// operations where that cannot change the verdict (see the module documentation).
pub(super) fn prepare<'h>(history: &'h [Op], indices: &[usize]) -> Prepared {
    let mut values = Interner::default();
    let mut intern = |s: Option<&'h str>| values.intern(s);

    struct Raw {
        orig: usize,
        invoke: Nanos,
        ret: Nanos,
        known: bool,
        effect: Effect,
    }
    let mut raw: Vec<Raw> = Vec::with_capacity(indices.len());
    let mut dropped = 0;
    for &orig in indices {
        let op = &history[orig];
        let known = matches!(op.outcome, Outcome::Ok(_));
        let effect = match (&op.call, &op.outcome) {
            (Call::Get { .. }, Outcome::Ok(Return::Get(v))) => Effect::Read(intern(v.as_deref())),
            // A failed read constrains nothing.
            (Call::Get { .. }, _) => {
                dropped += 1;
                continue;
            }
            (Call::Put { value, .. }, _) => Effect::Write(intern(Some(value))),
            (Call::Cas { expect, .. }, Outcome::Ok(Return::Cas(false))) => Effect::CasMiss {
                expect: intern(expect.as_deref()),
            },
            (Call::Cas { expect, .. }, Outcome::Ok(Return::CasSaw(seen))) => Effect::CasMissSaw {
                expect: intern(expect.as_deref()),
                seen: intern(seen.as_deref()),
            },
            // A CAS that may have failed its comparison is, when it did, the same as one that
            // never happened; so an unknown CAS is an optional successful one.
            (Call::Cas { expect, new, .. }, _) => Effect::CasHit {
                expect: intern(expect.as_deref()),
                new: intern(Some(new)),
            },
        };
        raw.push(Raw {
            orig,
            invoke: op.invoke,
            ret: op.ret,
            known,
            effect,
        });
    }

    // Who writes each value, and when each value is first known to have been observed.
    let mut writers: HashMap<Val, usize> = HashMap::new();
    let mut first_seen: HashMap<Val, Nanos> = HashMap::new();
    let mut last_miss: Option<Nanos> = None;
    for r in &raw {
        match r.effect {
            Effect::Write(v) | Effect::CasHit { new: v, .. } => {
                *writers.entry(v).or_default() += 1;
            }
            _ => {}
        }
        if !r.known {
            continue;
        }
        let seen = match r.effect {
            Effect::Read(v) if v != ABSENT => Some(v),
            Effect::CasHit { expect, .. } if expect != ABSENT => Some(expect),
            Effect::CasMissSaw { seen, .. } if seen != ABSENT => Some(seen),
            Effect::CasMiss { .. } => {
                last_miss = Some(last_miss.map_or(r.ret, |m| m.max(r.ret)));
                None
            }
            _ => None,
        };
        if let Some(v) = seen {
            let t = first_seen.entry(v).or_insert(r.ret);
            *t = (*t).min(r.ret);
        }
    }

    let referenced = referenced_values(raw.iter().map(|r| r.effect));
    let mut ops = Vec::with_capacity(raw.len());
    let mut observed = 0;
    for r in raw {
        if r.known {
            ops.push(KeyOp {
                orig: r.orig,
                invoke: r.invoke,
                ret: Some(r.ret),
                effect: r.effect,
                after: None,
            });
            continue;
        }
        let written = match r.effect {
            Effect::Write(v) | Effect::CasHit { new: v, .. } => v,
            Effect::Read(_) | Effect::CasMiss { .. } | Effect::CasMissSaw { .. } => ABSENT,
        };
        let unique = writers.get(&written) == Some(&1);
        let ret = match first_seen.get(&written) {
            // Its value was read, and nobody else writes it: it took effect, before the
            // first observer returned. (An observer returning before this write was even
            // invoked is a violation; leaving the write optional lets the search show it.)
            Some(&seen) if unique && seen >= r.invoke => {
                observed += 1;
                Some(seen)
            }
            // Nobody reads its value, and no CAS (not even one that failed, which may yet
            // have happened) expects it: had it taken effect, only a failed CAS without a
            // value, ordered after it, could tell. Without one, it is as if it never ran.
            None if unique
                && !referenced.contains(&written)
                && last_miss.is_none_or(|m| m < r.invoke) =>
            {
                dropped += 1;
                continue;
            }
            _ => None,
        };
        ops.push(KeyOp {
            orig: r.orig,
            invoke: r.invoke,
            ret,
            effect: r.effect,
            after: None,
        });
    }
    chain_interchangeable(&mut ops, &writers, &referenced);
    Prepared {
        ops,
        names: values.names,
        observed,
        dropped,
    }
}

/// Values some operation (of any outcome) reads or compares against.
pub(super) fn referenced_values(effects: impl Iterator<Item = Effect>) -> HashSet<Val> {
    let mut referenced = HashSet::new();
    for effect in effects {
        match effect {
            Effect::Read(v) => {
                referenced.insert(v);
            }
            Effect::CasHit { expect, .. } | Effect::CasMiss { expect } => {
                referenced.insert(expect);
            }
            Effect::CasMissSaw { expect, seen } => {
                referenced.insert(expect);
                referenced.insert(seen);
            }
            Effect::Write(_) => {}
        }
    }
    referenced
}

/// Breaks the symmetry between optional operations that would be interchangeable.
///
/// Call a value blank if only one operation writes it and no operation reads it or compares
/// against it: every operation then behaves the same whichever blank value the key holds.
/// Two optional puts of blank values are thus interchangeable but for their invocation
/// times, and so are two optional CASes of blank values expecting the same value. If some
/// linearization uses the later-invoked one of such a pair, swapping in the earlier one is
/// just as valid (it was invoked before that point too). So it loses nothing to require that
/// within each such group the operations be linearized in invocation order, each only after
/// the one before — which turns the 2^k subsets of k pending failed writes into k+1 prefixes.
pub(super) fn chain_interchangeable(
    ops: &mut [KeyOp],
    writers: &HashMap<Val, usize>,
    referenced: &HashSet<Val>,
) {
    let blank = |v: Val| writers.get(&v) == Some(&1) && !referenced.contains(&v);
    // Group: None for blank puts, Some(expect) for blank CASes expecting `expect`.
    let mut groups: HashMap<Option<Val>, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.ret.is_some() {
            continue;
        }
        match op.effect {
            Effect::Write(v) if blank(v) => groups.entry(None).or_default().push(i),
            Effect::CasHit { expect, new } if blank(new) => {
                groups.entry(Some(expect)).or_default().push(i);
            }
            _ => {}
        }
    }
    for members in groups.values_mut() {
        members.sort_by_key(|&i| (ops[i].invoke, i));
        for pair in members.windows(2) {
            ops[pair[1]].after = Some(pair[0]);
        }
    }
}
