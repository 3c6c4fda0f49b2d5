//! A linearizability checker for histories of a key-value register: puts, gets and
//! compare-and-swaps, as clients of the store observed them.
//!
//! The history is split by key first: every operation touches one key and a history is
//! linearizable iff each key's sub-history is (linearizability is local, so the split is
//! exact and turns one huge search into several small ones). Each key is then checked by a
//! depth-first search in the style of Wing & Gong, in Lowe's just-in-time form: walk the
//! time-ordered call and return events; when the return of an operation not yet linearized
//! comes up, linearize it there, preceded by whichever already-invoked operations the model
//! needs first, and backtrack when no order works. A memo of (set of linearized operations
//! as a bitset, register value) pairs already explored keeps the search from revisiting a
//! configuration known to lead nowhere. Reads and failed compare-and-swaps that the current
//! value allows are linearized at once without branching (that loses no linearization), and
//! candidates that produce the value the overdue operation needs are tried first.
//!
//! Calls that failed (timeouts, "leader changed", broken connections) may or may not have
//! taken effect; they are recorded as [`Outcome::Unknown`]: their return is at infinity and
//! the search may linearize them anywhere after their invocation, or never. Because such
//! operations can make the search exponential, they are reduced first, where that is exact:
//! a failed read tells nothing and is dropped; a failed write whose value (written by it
//! alone) was later observed must have happened before its first observer returned, so it
//! gets that return time; a failed write whose value no operation reads or compares against
//! could only matter to a compare-and-swap that failed after it without saying what it saw,
//! and is dropped when there is none; and failed writes that remain and are interchangeable
//! are only ever linearized in invocation order. A failed CAS that reports the value it saw
//! ([`Return::CasSaw`], a read in the same transaction) pins the value like a read, which is
//! why the end-to-end test records them that way: its histories then check in milliseconds.
//!
//! This is our own implementation written from the papers' descriptions:
//! J. M. Wing and C. Gong, "Testing and verifying concurrent objects" (1993) and G. Lowe,
//! "Testing for linearizability" (2017).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

/// A point in time: nanoseconds since a [`Clock`] started.
pub type Nanos = u64;

/// A monotonic clock shared by all clients of a test, so their timestamps compare.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The value written.
        value: String,
    },
    /// Read `key`.
    Get {
        /// The key.
        key: String,
    },
    /// If `key` holds `expect` (`None`: the key is absent), set it to `new`.
    Cas {
        /// The key.
        key: String,
        /// The value required, or `None` for "absent".
        expect: Option<String>,
        /// The value written when the comparison holds.
        new: String,
    },
}

impl Call {
    /// The key the call touches.
    pub fn key(&self) -> &str {
        match self {
            Call::Put { key, .. } | Call::Get { key } | Call::Cas { key, .. } => key,
        }
    }
}

/// What a call that succeeded returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Return {
    /// A put was applied.
    Put,
    /// The value read, `None` if the key was absent.
    Get(Option<String>),
    /// Whether the comparison held (and the write was applied).
    Cas(bool),
    /// The comparison failed and the key held this value (`None`: absent), read in the same
    /// transaction. Richer than `Cas(false)`: it pins the state like a read does, which both
    /// strengthens the check and lets unobserved failed writes be dropped (only a failed
    /// comparison without a value could need them).
    CasSaw(Option<String>),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned this result.
    Ok(Return),
    /// It failed; it may have taken effect at any point after its invocation, or never.
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Which client issued it; a client issues one operation at a time.
    pub client: usize,
    /// What was asked.
    pub call: Call,
    /// When the call was issued.
    pub invoke: Nanos,
    /// When it returned. For [`Outcome::Unknown`] it is when the failure was seen, shown in
    /// explanations only: the checker treats the return as infinitely late.
    pub ret: Nanos,
    /// How it ended.
    pub outcome: Outcome,
}

fn seconds(t: Nanos) -> String {
    format!("{}.{:06}s", t / 1_000_000_000, (t % 1_000_000_000) / 1_000)
}

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(absent)")
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} [{} .. {}] ",
            self.client,
            seconds(self.invoke),
            seconds(self.ret)
        )?;
        match &self.call {
            Call::Put { key, value } => write!(f, "put {key} = {value}")?,
            Call::Get { key } => write!(f, "get {key}")?,
            Call::Cas { key, expect, new } => {
                write!(f, "cas {key}: {} -> {new}", value(expect))?;
            }
        }
        match &self.outcome {
            Outcome::Ok(Return::Put) => write!(f, " => ok"),
            Outcome::Ok(Return::Get(v)) => write!(f, " => {}", value(v)),
            Outcome::Ok(Return::Cas(hit)) => write!(f, " => {hit}"),
            Outcome::Ok(Return::CasSaw(v)) => write!(f, " => false, saw {}", value(v)),
            Outcome::Unknown => write!(f, " => UNKNOWN (failed)"),
        }
    }
}

/// How a history that passed was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Distinct keys.
    pub keys: usize,
    /// Operations in the history.
    pub ops: usize,
    /// Operations with an unknown outcome.
    pub unknown: usize,
    /// Unknown writes whose value was observed, so they must have happened.
    pub unknown_observed: usize,
    /// Unknown operations dropped because they cannot affect the verdict.
    pub unknown_dropped: usize,
    /// Search steps taken (linearizations plus backtracks).
    pub steps: u64,
}

/// Why a history did not pass.
#[derive(Debug, Clone)]
pub enum Failure {
    /// An operation is inconsistent in itself (e.g. it returns before it is invoked, or a
    /// put returns a read's result); `index` is its position in the history.
    Malformed {
        /// Position in the history.
        index: usize,
        /// The operation.
        op: Box<Op>,
        /// What is wrong with it.
        reason: String,
    },
    /// No linearization exists for one key.
    NotLinearizable(Box<Violation>),
    /// The search ran out of its step budget (or of memory for its memo) before reaching a
    /// verdict; the explanation shows where it was stuck deepest.
    Inconclusive {
        /// The search steps taken for the key.
        steps: u64,
        /// The deepest point the search reached.
        partial: Box<Violation>,
    },
}

/// Where the search for one key's linearization got stuck deepest.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// Operations of this key that took part in the search.
    pub ops: usize,
    /// How many of them the longest partial linearization holds.
    pub linearized: usize,
    /// The register's value after that partial linearization.
    pub state: Option<String>,
    /// The operation whose return came before it could be linearized after that prefix.
    pub stuck: Option<Op>,
    /// The last operations of the partial linearization, in linearization order.
    pub recent: Vec<Op>,
    /// Operations not in the partial linearization that were invoked before `stuck`
    /// returned: the candidates that could not be ordered consistently.
    pub pending: Vec<Op>,
    /// A plain-language pointer when the failure has an obvious cause.
    pub hint: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: the longest linearizable prefix holds {} of {} operations and leaves \
             the key at {}",
            self.key,
            self.linearized,
            self.ops,
            value(&self.state)
        )?;
        if let Some(stuck) = &self.stuck {
            writeln!(
                f,
                "  cannot linearize (it returned before any consistent point):\n    {stuck}"
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  hint: {hint}")?;
        }
        writeln!(
            f,
            "  last operations of that prefix, in linearization order:"
        )?;
        for op in &self.recent {
            writeln!(f, "    {op}")?;
        }
        writeln!(
            f,
            "  operations outside the prefix invoked before that return (by invocation):"
        )?;
        for op in &self.pending {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed { index, op, reason } => {
                write!(f, "malformed operation #{index} ({op}): {reason}")
            }
            Failure::NotLinearizable(v) => write!(f, "NOT LINEARIZABLE: {v}"),
            Failure::Inconclusive { steps, partial } => write!(
                f,
                "inconclusive: no verdict within {steps} search steps; deepest point: {partial}"
            ),
        }
    }
}

/// The default search budget per key, far above what realistic test histories need
/// (thousands of operations take a few thousand steps) yet bounded, so a pathological
/// history ends with [`Failure::Inconclusive`] instead of running for hours.
pub const DEFAULT_BUDGET: u64 = 2_000_000;

/// Checks that `history` is linearizable for a register per key.
pub fn check(history: &[Op]) -> Result<Summary, Failure> {
    check_with_budget(history, DEFAULT_BUDGET)
}

/// [`check`] with an explicit budget of search steps per key.
pub fn check_with_budget(history: &[Op], budget: u64) -> Result<Summary, Failure> {
    for (index, op) in history.iter().enumerate() {
        if let Some(reason) = malformed(op) {
            return Err(Failure::Malformed {
                index,
                op: Box::new(op.clone()),
                reason,
            });
        }
    }
    // A BTreeMap so keys are checked, and failures reported, in a deterministic order.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.call.key()).or_default().push(i);
    }
    let mut summary = Summary {
        keys: by_key.len(),
        ops: history.len(),
        unknown: history
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count(),
        ..Summary::default()
    };
    for (key, indices) in by_key {
        let prepared = prepare(history, &indices);
        summary.unknown_observed += prepared.observed;
        summary.unknown_dropped += prepared.dropped;
        let mut left = budget;
        let result = search(&prepared.ops, &mut left);
        summary.steps += budget - left;
        match result {
            Search::Linearizable => {}
            Search::Stuck(best) => {
                return Err(Failure::NotLinearizable(Box::new(explain(
                    history, key, &prepared, &best,
                ))));
            }
            Search::OutOfBudget(best) => {
                return Err(Failure::Inconclusive {
                    steps: budget - left,
                    partial: Box::new(explain(history, key, &prepared, &best)),
                });
            }
        }
    }
    Ok(summary)
}

fn malformed(op: &Op) -> Option<String> {
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
type Val = u32;
const ABSENT: Val = 0;

/// What an operation does to the register, and whether the register allows it.
#[derive(Debug, Clone, Copy)]
enum Effect {
    Write(Val),
    Read(Val),
    CasHit { expect: Val, new: Val },
    CasMiss { expect: Val },
    CasMissSaw { expect: Val, seen: Val },
}

impl Effect {
    /// The value the register must hold for this operation, if one.
    fn needs(self) -> Option<Val> {
        match self {
            Effect::Read(v)
            | Effect::CasHit { expect: v, .. }
            | Effect::CasMissSaw { seen: v, .. } => Some(v),
            Effect::Write(_) | Effect::CasMiss { .. } => None,
        }
    }

    /// Whether it leaves the value as it is wherever it applies. (A write of the value the
    /// key already holds is not: elsewhere, it would change the value.)
    fn is_pure(self) -> bool {
        match self {
            Effect::Read(_) | Effect::CasMiss { .. } | Effect::CasMissSaw { .. } => true,
            Effect::CasHit { expect, new } => expect == new,
            Effect::Write(_) => false,
        }
    }

    fn apply(self, state: Val) -> Option<Val> {
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
struct KeyOp {
    /// Index in the history.
    orig: usize,
    invoke: Nanos,
    /// `None`: an unknown outcome — optional, with its return at infinity.
    ret: Option<Nanos>,
    effect: Effect,
    /// For interchangeable optional operations (see `prepare`): the one before it, which must
    /// be linearized first.
    after: Option<usize>,
}

/// One key's values as small integers, so states hash and compare cheaply.
struct Interner<'h> {
    ids: HashMap<&'h str, Val>,
    /// Index 0 stands for "absent".
    names: Vec<String>,
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
    fn intern(&mut self, s: Option<&'h str>) -> Val {
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

struct Prepared {
    ops: Vec<KeyOp>,
    names: Vec<String>,
    observed: usize,
    dropped: usize,
}

/// Interns one key's values and turns its operations into [`KeyOp`]s, reducing unknown
/// operations where that cannot change the verdict (see the module documentation).
fn prepare<'h>(history: &'h [Op], indices: &[usize]) -> Prepared {
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
fn referenced_values(effects: impl Iterator<Item = Effect>) -> HashSet<Val> {
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
fn chain_interchangeable(
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

/// The deepest point of a search: what explains a failure.
#[derive(Debug, Clone, Default)]
struct Best {
    depth: usize,
    /// The key-op whose return forced the backtrack there.
    stuck: Option<usize>,
    /// The tail of the partial linearization (key-op indices), in order.
    recent: Vec<usize>,
    linearized: Vec<u64>,
    state: Val,
}

enum Search {
    Linearizable,
    Stuck(Best),
    OutOfBudget(Best),
}

/// The most memory the memo of explored configurations may take per key before the search
/// gives up as inconclusive: each entry holds a bitset over the key's operations, so a
/// pathological history could otherwise exhaust memory before the step budget.
const MEMO_BYTES: usize = 512 << 20;

/// How many operations of the partial linearization an explanation shows.
const RECENT: usize = 10;
/// How many unlinearized operations an explanation shows.
const PENDING: usize = 16;

/// A doubly linked list over items `0..n`, in a fixed order, from which items are removed
/// when linearized and restored on backtracking in O(1) ("dancing links": restoring in the
/// reverse order of removal puts every item back exactly where it was).
struct Links {
    /// Node `k + 1` holds `item[k]`; node 0 is the head and node `n + 1` the tail.
    next: Vec<usize>,
    prev: Vec<usize>,
    item: Vec<usize>,
    /// The node holding each item, if it is in the list.
    node: Vec<Option<usize>>,
}

impl Links {
    const HEAD: usize = 0;

    /// A list of `order`'s items in that order; `universe` bounds the item numbers.
    fn new(order: &[usize], universe: usize) -> Links {
        let n = order.len();
        let mut node = vec![None; universe];
        for (k, &i) in order.iter().enumerate() {
            if let Some(slot) = node.get_mut(i) {
                *slot = Some(k + 1);
            }
        }
        Links {
            next: (1..=n + 2).collect(),
            prev: (0..n + 2).map(|k| k.saturating_sub(1)).collect(),
            item: std::iter::once(usize::MAX)
                .chain(order.iter().copied())
                .chain(std::iter::once(usize::MAX))
                .collect(),
            node,
        }
    }

    /// The item after `node` (`None` at the end) and its node.
    fn after(&self, node: usize) -> Option<(usize, usize)> {
        let next = self.next[node];
        (next + 1 < self.next.len()).then(|| (self.item[next], next))
    }

    fn first(&self) -> Option<(usize, usize)> {
        self.after(Links::HEAD)
    }

    fn remove(&mut self, item: usize) {
        if let Some(&Some(node)) = self.node.get(item) {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    fn restore(&mut self, item: usize) {
        if let Some(&Some(node)) = self.node.get(item) {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = node;
            self.prev[n] = node;
        }
    }
}

/// Where a choice point resumes its enumeration of candidates.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Nothing tried yet: the overdue operation itself comes first.
    Start,
    /// Among the candidates that produce the value the overdue operation needs, continue
    /// after this node of the call list.
    Producers(usize),
    /// Among the other candidates, continue after this node.
    Others(usize),
    /// The step was forced (see `search`): no alternatives to try.
    Forced,
}

/// One linearization step, to undo on backtracking.
struct Frame {
    op: usize,
    before: Val,
    /// The overdue operation of the choice point that took this step, and where its
    /// enumeration continues.
    overdue: usize,
    cursor: Cursor,
}

/// Lowe's just-in-time linearization over one key's operations.
///
/// Operations are linearized lazily: nothing is linearized until the earliest return of an
/// operation not yet linearized (the overdue one) is reached; then the overdue operation is
/// linearized, preceded if the model requires by other operations already invoked.
///
/// Two rules keep the branching down without losing linearizations:
/// - An invoked operation that never changes the value (a read, a CAS that failed) and that
///   the current value allows is linearized at once, with no alternative tried: moving it
///   in any linearization from its place to this point keeps it valid (everything still
///   unlinearized returns after the overdue operation, so after it was invoked), and it
///   changes nothing for the others.
/// - Candidates that produce the value the overdue operation needs are tried first.
///
/// A configuration is the set of linearized operations and the register's value; the next
/// overdue operation is a function of the set, so that pair alone is memoized.
fn search(ops: &[KeyOp], budget: &mut u64) -> Search {
    // Event positions; calls sort before returns at equal times, so operations that touch
    // at an instant count as concurrent — the permissive reading.
    let mut events: Vec<(Nanos, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, false, i));
        if let Some(ret) = op.ret {
            events.push((ret, true, i));
        }
    }
    events.sort_unstable();
    let mut call_pos = vec![0usize; ops.len()];
    let mut ret_pos = vec![usize::MAX; ops.len()];
    let mut calls = Vec::with_capacity(ops.len());
    let mut returns = Vec::with_capacity(ops.len());
    for (pos, &(_, is_return, op)) in events.iter().enumerate() {
        if is_return {
            ret_pos[op] = pos;
            returns.push(op);
        } else {
            call_pos[op] = pos;
            calls.push(op);
        }
    }
    // Not yet linearized operations by invocation (the candidates), and the returns of not
    // yet linearized operations by time (the first one is the overdue operation).
    let mut calls = Links::new(&calls, ops.len());
    let mut returns = Links::new(&returns, ops.len());

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let is_in = |set: &[u64], i: usize| (set[i / 64] >> (i % 64)) & 1 == 1;
    // What the model allows `op` to do from `state`, symmetry breaking included.
    let step = |linearized: &[u64], op: usize, state: Val| -> Option<Val> {
        let op = &ops[op];
        if op.after.is_some_and(|p| !is_in(linearized, p)) {
            return None;
        }
        op.effect.apply(state)
    };
    let mut seen: HashSet<(Vec<u64>, Val)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = ABSENT;
    let mut best = Best {
        linearized: linearized.clone(),
        ..Best::default()
    };
    let mut resume: Option<(usize, Cursor)> = None;

    let entry_bytes = words * 8 + 64;
    loop {
        if *budget == 0 || seen.len().saturating_mul(entry_bytes) > MEMO_BYTES {
            return Search::OutOfBudget(best);
        }
        let fresh = resume.is_none();
        let (overdue, mut cursor) = match resume.take() {
            Some(point) => point,
            None => match returns.first() {
                Some((op, _)) => (op, Cursor::Start),
                None => return Search::Linearizable,
            },
        };
        let horizon = ret_pos[overdue];

        // A new configuration: first take any step that keeps the value (see above).
        let mut forced = None;
        if fresh {
            let mut node = Links::HEAD;
            while let Some((op, next)) = calls.after(node) {
                if call_pos[op] >= horizon {
                    break;
                }
                node = next;
                if ops[op].effect.is_pure() && step(&linearized, op, state).is_some() {
                    forced = Some(op);
                    break;
                }
            }
        }

        let chosen = match forced {
            Some(op) => {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), state)) {
                    cursor = Cursor::Forced;
                    Some((op, state))
                } else {
                    // Explored before, and failed; so does this configuration, which has
                    // the same future.
                    linearized[op / 64] &= !(1 << (op % 64));
                    None
                }
            }
            None => {
                // The next candidate leading to a configuration not explored before.
                let needs = ops[overdue].effect.needs();
                let mut chosen = None;
                loop {
                    let candidate = match cursor {
                        Cursor::Start => {
                            cursor = if needs.is_some() {
                                Cursor::Producers(Links::HEAD)
                            } else {
                                Cursor::Others(Links::HEAD)
                            };
                            overdue
                        }
                        Cursor::Producers(node) => match calls.after(node) {
                            Some((op, next)) if call_pos[op] < horizon => {
                                cursor = Cursor::Producers(next);
                                if op == overdue || step(&linearized, op, state) != needs {
                                    continue;
                                }
                                op
                            }
                            _ => {
                                cursor = Cursor::Others(Links::HEAD);
                                continue;
                            }
                        },
                        Cursor::Others(node) => match calls.after(node) {
                            Some((op, next)) if call_pos[op] < horizon => {
                                cursor = Cursor::Others(next);
                                if op == overdue
                                    || (needs.is_some() && step(&linearized, op, state) == needs)
                                {
                                    continue;
                                }
                                op
                            }
                            _ => break,
                        },
                        Cursor::Forced => break,
                    };
                    let Some(next_state) = step(&linearized, candidate, state) else {
                        continue;
                    };
                    linearized[candidate / 64] |= 1 << (candidate % 64);
                    if seen.insert((linearized.clone(), next_state)) {
                        chosen = Some((candidate, next_state));
                        break;
                    }
                    linearized[candidate / 64] &= !(1 << (candidate % 64));
                }
                chosen
            }
        };

        if let Some((op, next_state)) = chosen {
            *budget -= 1;
            stack.push(Frame {
                op,
                before: state,
                overdue,
                cursor,
            });
            state = next_state;
            calls.remove(op);
            returns.remove(op);
            // Either the overdue operation is done and the next one is found afresh, or it
            // still is overdue and the enumeration starts over in the new configuration.
            continue;
        }

        // No way to linearize the overdue operation from here: undo the last free choice.
        if stack.len() > best.depth || best.stuck.is_none() {
            best = Best {
                depth: stack.len(),
                stuck: Some(overdue),
                recent: stack
                    .iter()
                    .skip(stack.len().saturating_sub(RECENT))
                    .map(|f| f.op)
                    .collect(),
                linearized: linearized.clone(),
                state,
            };
        }
        loop {
            let Some(frame) = stack.pop() else {
                return Search::Stuck(best);
            };
            *budget = budget.saturating_sub(1);
            returns.restore(frame.op);
            calls.restore(frame.op);
            linearized[frame.op / 64] &= !(1 << (frame.op % 64));
            state = frame.before;
            if !matches!(frame.cursor, Cursor::Forced) {
                resume = Some((frame.overdue, frame.cursor));
                break;
            }
        }
    }
}

fn explain(history: &[Op], key: &str, prepared: &Prepared, best: &Best) -> Violation {
    let ops = &prepared.ops;
    let name = |v: Val| -> Option<String> {
        (v != ABSENT).then(|| {
            prepared
                .names
                .get(v as usize)
                .cloned()
                .unwrap_or_else(|| format!("value #{v}"))
        })
    };
    let in_prefix = |i: usize| {
        best.linearized
            .get(i / 64)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    };
    let stuck = best.stuck.and_then(|i| ops.get(i));
    let horizon = stuck.and_then(|s| s.ret).unwrap_or(Nanos::MAX);
    let mut pending: Vec<&KeyOp> = ops
        .iter()
        .enumerate()
        .filter(|&(i, o)| !in_prefix(i) && Some(i) != best.stuck && o.invoke <= horizon)
        .map(|(_, o)| o)
        .collect();
    pending.sort_by_key(|o| o.invoke);
    let pending = pending[pending.len().saturating_sub(PENDING)..]
        .iter()
        .map(|o| history[o.orig].clone())
        .collect();

    let hint = stuck.and_then(|s| {
        let v = match s.effect {
            Effect::Read(v) | Effect::CasMissSaw { seen: v, .. } => v,
            _ => return None,
        };
        if v == ABSENT {
            return None;
        }
        let writes: Vec<&KeyOp> = ops
            .iter()
            .filter(
                |o| matches!(o.effect, Effect::Write(w) | Effect::CasHit { new: w, .. } if w == v),
            )
            .collect();
        if writes.is_empty() {
            Some(format!(
                "the read returned {}, which no recorded operation writes to this key",
                value(&name(v))
            ))
        } else if writes.iter().all(|w| s.ret.is_some_and(|r| r < w.invoke)) {
            Some(format!(
                "the read returned {} before the write of that value was invoked",
                value(&name(v))
            ))
        } else {
            None
        }
    });

    Violation {
        key: key.to_string(),
        ops: ops.len(),
        linearized: best.depth,
        state: name(best.state),
        stuck: stuck.map(|s| history[s.orig].clone()),
        recent: best
            .recent
            .iter()
            .filter_map(|&i| ops.get(i))
            .map(|o| history[o.orig].clone())
            .collect(),
        pending,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn op(client: usize, call: Call, invoke: u64, ret: u64, outcome: Outcome) -> Op {
        Op {
            client,
            call,
            invoke,
            ret,
            outcome,
        }
    }

    fn put(c: usize, key: &str, v: &str, t0: u64, t1: u64) -> Op {
        let call = Call::Put {
            key: key.into(),
            value: v.into(),
        };
        op(c, call, t0, t1, Outcome::Ok(Return::Put))
    }

    fn put_unknown(c: usize, key: &str, v: &str, t0: u64) -> Op {
        let call = Call::Put {
            key: key.into(),
            value: v.into(),
        };
        op(c, call, t0, t0 + 1, Outcome::Unknown)
    }

    fn get(c: usize, key: &str, v: Option<&str>, t0: u64, t1: u64) -> Op {
        let call = Call::Get { key: key.into() };
        op(
            c,
            call,
            t0,
            t1,
            Outcome::Ok(Return::Get(v.map(str::to_string))),
        )
    }

    fn cas(
        c: usize,
        key: &str,
        expect: Option<&str>,
        new: &str,
        hit: bool,
        t0: u64,
        t1: u64,
    ) -> Op {
        let call = Call::Cas {
            key: key.into(),
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        op(c, call, t0, t1, Outcome::Ok(Return::Cas(hit)))
    }

    fn cas_unknown(c: usize, key: &str, expect: Option<&str>, new: &str, t0: u64) -> Op {
        let call = Call::Cas {
            key: key.into(),
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        op(c, call, t0, t0 + 1, Outcome::Unknown)
    }

    fn cas_saw(c: usize, key: &str, expect: Option<&str>, new: &str, saw: Option<&str>) -> Op {
        let call = Call::Cas {
            key: key.into(),
            expect: expect.map(str::to_string),
            new: new.into(),
        };
        let seen = saw.map(str::to_string);
        op(c, call, 0, 0, Outcome::Ok(Return::CasSaw(seen)))
    }

    fn at(mut op: Op, t0: u64, t1: u64) -> Op {
        op.invoke = t0;
        op.ret = t1;
        op
    }

    fn violation(history: &[Op]) -> Violation {
        match check(history) {
            Err(Failure::NotLinearizable(v)) => {
                // The explanation must render.
                let text = v.to_string();
                assert!(text.contains(&v.key), "{text}");
                *v
            }
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_passes() {
        assert_eq!(check(&[]).unwrap().ops, 0);
    }

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            get(0, "k", None, 0, 1),
            put(0, "k", "a", 2, 3),
            get(1, "k", Some("a"), 4, 5),
            cas(0, "k", Some("a"), "b", true, 6, 7),
            cas(1, "k", Some("a"), "c", false, 8, 9),
            cas(1, "k", None, "c", false, 10, 11),
            get(1, "k", Some("b"), 12, 13),
        ];
        let s = check(&h).unwrap();
        assert_eq!((s.keys, s.ops), (1, 7));
    }

    #[test]
    fn cas_on_absent_key_passes() {
        let h = vec![
            cas(0, "k", None, "a", true, 0, 1),
            get(0, "k", Some("a"), 2, 3),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn concurrent_overlapping_puts_and_gets_pass() {
        // put a [0,10] and put b [2,8] overlap; readers see b then a, or just a.
        let h = vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 2, 8),
            get(2, "k", None, 1, 3),
            get(3, "k", Some("b"), 3, 5),
            get(2, "k", Some("a"), 4, 9),
            get(3, "k", Some("a"), 11, 12),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn order_between_concurrent_puts_is_free_either_way() {
        let a_last = vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 0, 10),
            get(2, "k", Some("a"), 11, 12),
        ];
        let b_last = vec![
            put(0, "k", "a", 0, 10),
            put(1, "k", "b", 0, 10),
            get(2, "k", Some("b"), 11, 12),
        ];
        check(&a_last).unwrap();
        check(&b_last).unwrap();
    }

    #[test]
    fn cas_race_with_one_winner_passes() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            cas(1, "k", Some("a"), "x", true, 2, 6),
            cas(2, "k", Some("a"), "y", false, 3, 5),
            get(0, "k", Some("x"), 7, 8),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_put_observed_later_passes() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put_unknown(1, "k", "b", 2),
            get(0, "k", Some("a"), 3, 4),
            get(0, "k", Some("b"), 5, 6),
            get(2, "k", Some("b"), 7, 8),
        ];
        let s = check(&h).unwrap();
        assert_eq!(s.unknown_observed, 1);
    }

    #[test]
    fn unknown_put_never_observed_passes() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put_unknown(1, "k", "c", 2),
            get(0, "k", Some("a"), 5, 6),
            get(2, "k", Some("a"), 10, 11),
        ];
        let s = check(&h).unwrap();
        assert_eq!(s.unknown_dropped, 1);
    }

    #[test]
    fn unknown_put_can_explain_a_failed_cas() {
        let with = vec![
            put(0, "k", "a", 0, 1),
            put_unknown(1, "k", "b", 2),
            cas(0, "k", Some("a"), "z", false, 5, 6),
        ];
        check(&with).unwrap();
        // Without the unknown put, nothing but "a" can be there.
        violation(
            &with[..1]
                .iter()
                .chain(&with[2..])
                .cloned()
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn unknown_cas_observed_later_passes() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            cas_unknown(1, "k", Some("a"), "b", 2),
            get(0, "k", Some("b"), 5, 6),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_write_needed_by_an_unknown_cas_is_kept() {
        // Only the failed CAS's result is read, and that CAS expected the failed put's value:
        // both must have happened, though no acknowledged operation saw "b" itself.
        let h = vec![
            put(0, "k", "a", 0, 1),
            put_unknown(1, "k", "b", 2),
            cas_unknown(2, "k", Some("b"), "c", 3),
            get(0, "k", Some("c"), 10, 11),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn unknown_cas_observed_from_wrong_state_fails() {
        // The CAS expected "x", which was never there, yet its value was read.
        let h = vec![
            put(0, "k", "a", 0, 1),
            cas_unknown(1, "k", Some("x"), "b", 2),
            get(0, "k", Some("b"), 5, 6),
        ];
        violation(&h);
    }

    #[test]
    fn failed_cas_that_saw_the_value_pins_the_state() {
        let ok = vec![
            put(0, "k", "a", 0, 1),
            at(cas_saw(1, "k", Some("x"), "n", Some("a")), 2, 3),
            at(cas_saw(1, "k", None, "n", Some("a")), 4, 5),
        ];
        check(&ok).unwrap();
        // A bool miss is satisfied by any other value; a seen value must be the current one.
        let stale = vec![
            put(0, "k", "a", 0, 1),
            put(0, "k", "b", 2, 3),
            at(cas_saw(1, "k", Some("x"), "n", Some("a")), 4, 5),
        ];
        violation(&stale);
        // Failing the comparison while seeing the expected value is impossible.
        let torn = vec![
            put(0, "k", "a", 0, 1),
            at(cas_saw(1, "k", Some("a"), "n", Some("a")), 2, 3),
        ];
        violation(&torn);
    }

    #[test]
    fn unobserved_failed_writes_are_dropped_when_failed_cas_saw_values() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put_unknown(1, "k", "b", 2),
            at(cas_saw(0, "k", Some("z"), "n", Some("a")), 5, 6),
        ];
        assert_eq!(check(&h).unwrap().unknown_dropped, 1);
    }

    #[test]
    fn many_pending_failed_writes_do_not_explode() {
        // Forty failed puts nobody observed, kept alive by failed CASes, around a stale read:
        // without symmetry breaking the search would try 2^40 subsets of them.
        let mut h = vec![put(0, "k", "a", 0, 1)];
        for i in 0..40 {
            h.push(put_unknown(1 + i, "k", &format!("lost{i}"), 2 + i as u64));
        }
        h.push(cas(50, "k", Some("q"), "r", false, 100, 101));
        h.push(put(50, "k", "b", 102, 103));
        h.push(get(51, "k", Some("a"), 104, 105));
        h.push(cas(50, "k", Some("q"), "r", false, 106, 107));
        let started = Instant::now();
        violation(&h);
        assert!(started.elapsed().as_secs() < 5);
    }

    #[test]
    fn failed_get_is_ignored() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            op(1, Call::Get { key: "k".into() }, 2, 3, Outcome::Unknown),
            get(0, "k", Some("a"), 4, 5),
        ];
        check(&h).unwrap();
    }

    #[test]
    fn stale_read_after_completed_put_fails() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put(0, "k", "b", 2, 3),
            get(1, "k", Some("a"), 4, 5),
        ];
        let v = violation(&h);
        assert_eq!(v.key, "k");
        assert_eq!(v.stuck, Some(h[2].clone()));
    }

    #[test]
    fn two_cas_winners_from_the_same_value_fail() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            cas(1, "k", Some("a"), "x", true, 2, 5),
            cas(2, "k", Some("a"), "y", true, 3, 6),
        ];
        violation(&h);
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let h = vec![put(0, "k", "a", 0, 1), get(1, "k", Some("zzz"), 2, 3)];
        let v = violation(&h);
        assert!(v.hint.unwrap().contains("no recorded operation writes"));
    }

    #[test]
    fn read_before_the_write_was_invoked_fails() {
        let h = vec![get(1, "k", Some("b"), 0, 1), put_unknown(0, "k", "b", 2)];
        let v = violation(&h);
        assert!(v.hint.unwrap().contains("before the write"));
    }

    #[test]
    fn read_going_back_in_time_fails() {
        // put b is long and concurrent with both reads, but once b was seen, a cannot come back.
        let h = vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 10),
            get(2, "k", Some("b"), 3, 4),
            get(2, "k", Some("a"), 5, 6),
        ];
        violation(&h);
    }

    #[test]
    fn lost_acknowledged_write_fails() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 3),
            get(2, "k", None, 4, 5),
        ];
        violation(&h);
    }

    #[test]
    fn violation_names_the_bad_key() {
        let h = vec![
            put(0, "x", "a", 0, 1),
            put(0, "y", "a", 0, 1),
            get(1, "x", Some("a"), 2, 3),
            get(1, "y", Some("b"), 2, 3),
        ];
        assert_eq!(violation(&h).key, "y");
    }

    #[test]
    fn malformed_operations_are_reported_not_panicked_on() {
        let backwards = vec![put(0, "k", "a", 5, 1)];
        assert!(matches!(
            check(&backwards),
            Err(Failure::Malformed { index: 0, .. })
        ));
        let wrong_kind = vec![op(
            0,
            Call::Put {
                key: "k".into(),
                value: "a".into(),
            },
            0,
            1,
            Outcome::Ok(Return::Cas(true)),
        )];
        let err = check(&wrong_kind).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }

    #[test]
    fn budget_exhaustion_is_inconclusive() {
        let h = vec![
            put(0, "k", "a", 0, 1),
            put(1, "k", "b", 2, 3),
            get(2, "k", Some("a"), 4, 5),
        ];
        let err = check_with_budget(&h, 1).unwrap_err();
        assert!(matches!(err, Failure::Inconclusive { .. }), "{err}");
    }

    /// The shape of a simulated history.
    #[derive(Clone, Copy)]
    struct Sim {
        ops: usize,
        clients: usize,
        keys: usize,
        /// The share of writes that fail (half of them take effect anyway).
        failures: f64,
        /// Whether failed CASes report the value they saw ([`Return::CasSaw`]).
        saw: bool,
    }

    /// A history from a simulated register: each operation takes effect at a random point
    /// inside its interval, so the history is linearizable by construction. Some writes fail
    /// and take effect or not, possibly long after the client gave up, as when a leader dies.
    fn simulated(seed: u64, sim: Sim) -> Vec<Op> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock = vec![0u64; sim.clients];
        // (effect time, index, takes effect)
        let mut planned: Vec<(u64, usize, bool)> = Vec::new();
        let mut history = Vec::new();
        for n in 0..sim.ops {
            let c = rng.random_range(0..sim.clients);
            let invoke = clock[c] + rng.random_range(0..50);
            let ret = invoke + rng.random_range(1..200);
            clock[c] = ret;
            let key = format!("k{}", rng.random_range(0..sim.keys));
            let value = format!("c{c}-{n}");
            let call = match rng.random_range(0..10) {
                0..4 => Call::Get { key },
                4..7 => Call::Put { key, value },
                _ => Call::Cas {
                    key,
                    // Chosen when it takes effect, below, so that it often hits.
                    expect: None,
                    new: value,
                },
            };
            let failed = !matches!(call, Call::Get { .. }) && rng.random_bool(sim.failures);
            let takes_effect = !failed || rng.random_bool(0.5);
            let effect = if failed {
                rng.random_range(invoke..invoke + 2_000)
            } else {
                rng.random_range(invoke..=ret)
            };
            planned.push((effect, history.len(), takes_effect));
            let outcome = if failed {
                Outcome::Unknown
            } else {
                Outcome::Ok(Return::Put)
            };
            history.push(op(c, call, invoke, ret, outcome));
        }
        planned.sort();
        let mut state: HashMap<String, String> = HashMap::new();
        for (_, i, takes_effect) in planned {
            let key = history[i].call.key().to_string();
            let current = state.get(&key).cloned();
            let result = match &mut history[i].call {
                Call::Get { .. } => Return::Get(current),
                Call::Put { value, .. } => {
                    if takes_effect {
                        state.insert(key, value.clone());
                    }
                    Return::Put
                }
                Call::Cas { expect, new, .. } => {
                    *expect = if rng.random_bool(0.5) {
                        current.clone()
                    } else {
                        Some(format!("stale-{}", rng.random_range(0..3)))
                    };
                    let hit = *expect == current;
                    if hit && takes_effect {
                        state.insert(key, new.clone());
                    }
                    if hit || !sim.saw {
                        Return::Cas(hit)
                    } else {
                        Return::CasSaw(current)
                    }
                }
            };
            if history[i].outcome != Outcome::Unknown {
                history[i].outcome = Outcome::Ok(result);
            }
        }
        history
    }

    const TYPICAL: Sim = Sim {
        ops: 6_000,
        clients: 8,
        keys: 10,
        failures: 0.05,
        saw: false,
    };

    #[test]
    fn large_simulated_histories_pass_quickly() {
        let flaky = Sim {
            failures: 0.2,
            saw: true,
            ..TYPICAL
        };
        for (seed, sim) in [(0, TYPICAL), (1, TYPICAL), (2, flaky), (3, flaky)] {
            let h = simulated(seed, sim);
            let started = Instant::now();
            let s = check(&h).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let took = started.elapsed();
            assert!(s.unknown > 0);
            assert!(took.as_secs() < 10, "seed {seed} took {took:?}: {s:?}");
        }
    }

    #[test]
    fn hot_key_with_many_failures_passes() {
        let one_key = Sim {
            ops: 3_000,
            keys: 1,
            ..TYPICAL
        };
        check(&simulated(7, one_key)).unwrap();
        let flaky = Sim {
            failures: 0.2,
            saw: true,
            ..one_key
        };
        check(&simulated(8, flaky)).unwrap();
    }

    #[test]
    fn stale_read_in_a_large_flaky_history_is_found_quickly() {
        let sim = Sim {
            ops: 3_000,
            keys: 2,
            failures: 0.2,
            saw: true,
            ..TYPICAL
        };
        for seed in 0..3 {
            let mut h = simulated(seed, sim);
            // The first acknowledged put of k0, one completed after it, and a read invoked
            // after that: the read returning the first value is stale.
            let is_put = |o: &Op| {
                o.call.key() == "k0"
                    && matches!(o.call, Call::Put { .. })
                    && o.outcome == Outcome::Ok(Return::Put)
            };
            let first = h.iter().position(is_put).unwrap();
            let second = (first + 1..h.len())
                .find(|&i| is_put(&h[i]) && h[i].invoke > h[first].ret)
                .unwrap();
            let read = (h.len() / 2..h.len())
                .find(|&i| {
                    h[i].call == Call::Get { key: "k0".into() } && h[i].invoke > h[second].ret
                })
                .unwrap();
            let Call::Put { value, .. } = &h[first].call else {
                unreachable!()
            };
            h[read].outcome = Outcome::Ok(Return::Get(Some(value.clone())));
            let started = Instant::now();
            let v = violation(&h);
            assert_eq!(v.key, "k0");
            assert!(started.elapsed().as_secs() < 10);
        }
    }

    /// Decides linearizability by trying every order of every subset of unknown operations:
    /// a slow, obviously correct reference for tiny histories.
    fn brute_force(history: &[Op]) -> bool {
        let ops: Vec<&Op> = history
            .iter()
            .filter(|o| !matches!((&o.call, &o.outcome), (Call::Get { .. }, Outcome::Unknown)))
            .collect();
        let n = ops.len();
        let ret = |o: &Op| match o.outcome {
            Outcome::Ok(_) => o.ret,
            Outcome::Unknown => u64::MAX,
        };
        // Whether `order` (indices into ops) is a valid linearization of exactly those ops.
        let valid = |order: &[usize]| {
            for (a, &i) in order.iter().enumerate() {
                for &j in &order[a + 1..] {
                    // j is placed after i, so j must not have returned before i was invoked.
                    if ret(ops[j]) < ops[i].invoke {
                        return false;
                    }
                }
            }
            let mut state: Option<&String> = None;
            for &i in order {
                let o = ops[i];
                match (&o.call, &o.outcome) {
                    (Call::Put { value, .. }, _) => state = Some(value),
                    (Call::Get { .. }, Outcome::Ok(Return::Get(v))) => {
                        if state != v.as_ref() {
                            return false;
                        }
                    }
                    (Call::Cas { expect, new, .. }, Outcome::Ok(Return::Cas(true))) => {
                        if state != expect.as_ref() {
                            return false;
                        }
                        state = Some(new);
                    }
                    (Call::Cas { expect, .. }, Outcome::Ok(Return::Cas(false))) => {
                        if state == expect.as_ref() {
                            return false;
                        }
                    }
                    (Call::Cas { expect, .. }, Outcome::Ok(Return::CasSaw(seen))) => {
                        if state != seen.as_ref() || state == expect.as_ref() {
                            return false;
                        }
                    }
                    (Call::Cas { expect, new, .. }, Outcome::Unknown) => {
                        if state == expect.as_ref() {
                            state = Some(new);
                        }
                    }
                    _ => return false,
                }
            }
            true
        };
        fn permutations(
            items: &mut Vec<usize>,
            k: usize,
            visit: &mut dyn FnMut(&[usize]) -> bool,
        ) -> bool {
            if k == items.len() {
                return visit(items);
            }
            for i in k..items.len() {
                items.swap(k, i);
                if permutations(items, k + 1, visit) {
                    return true;
                }
                items.swap(k, i);
            }
            false
        }
        let unknown: Vec<usize> = (0..n)
            .filter(|&i| ops[i].outcome == Outcome::Unknown)
            .collect();
        for mask in 0..(1u32 << unknown.len()) {
            let mut chosen: Vec<usize> = (0..n)
                .filter(|&i| match unknown.iter().position(|&u| u == i) {
                    Some(bit) => mask >> bit & 1 == 1,
                    None => true,
                })
                .collect();
            if permutations(&mut chosen, 0, &mut |order| valid(order)) {
                return true;
            }
        }
        false
    }

    #[test]
    fn agrees_with_brute_force_on_tiny_random_histories() {
        let mut rng = StdRng::seed_from_u64(2024);
        let mut verdicts = [0usize; 2];
        for round in 0..6_000 {
            let len = rng.random_range(1..=6);
            // Half the rounds write unique values, as the end-to-end test does (which
            // enables the reductions of unknown operations), half reuse a few values.
            let unique = round % 2 == 0;
            let pool = if unique { len } else { 3 };
            let pick = |rng: &mut StdRng| format!("v{}", rng.random_range(0..pool));
            let mut written = (0..len).map(|n| format!("v{n}"));
            let mut history = Vec::new();
            let mut clock = [0u64; 3];
            for _ in 0..len {
                let fresh = written.next().unwrap_or_default();
                let write = |rng: &mut StdRng| if unique { fresh.clone() } else { pick(rng) };
                let c = rng.random_range(0..3);
                let invoke = clock[c] + rng.random_range(0..3);
                let ret = invoke + rng.random_range(0..4);
                clock[c] = ret + 1;
                let key = "k".to_string();
                let expect = rng.random_bool(0.7).then(|| pick(&mut rng));
                let (call, outcome) = match rng.random_range(0..3) {
                    0 => (Call::Get { key }, Return::Get(expect)),
                    1 => (
                        Call::Put {
                            key,
                            value: write(&mut rng),
                        },
                        Return::Put,
                    ),
                    _ => {
                        let result = match rng.random_range(0..3) {
                            0 => Return::Cas(true),
                            1 => Return::Cas(false),
                            _ => Return::CasSaw(rng.random_bool(0.7).then(|| pick(&mut rng))),
                        };
                        (
                            Call::Cas {
                                key,
                                expect,
                                new: write(&mut rng),
                            },
                            result,
                        )
                    }
                };
                let outcome = if rng.random_bool(0.25) {
                    Outcome::Unknown
                } else {
                    Outcome::Ok(outcome)
                };
                history.push(op(c, call, invoke, ret, outcome));
            }
            let expected = brute_force(&history);
            let got = match check(&history) {
                Ok(_) => true,
                Err(Failure::NotLinearizable(_)) => false,
                Err(e) => panic!("round {round}: {e}"),
            };
            assert_eq!(got, expected, "round {round}: {history:#?}");
            verdicts[usize::from(got)] += 1;
        }
        // Both verdicts are well represented, so the comparison means something.
        assert!(verdicts.iter().all(|&v| v > 500), "{verdicts:?}");
    }

    #[test]
    fn corrupted_simulated_histories_never_panic() {
        // Random well-formed damage (mostly violations, sometimes still linearizable) and
        // random malformed damage: never a panic, always a verdict within the budget.
        let mut rng = StdRng::seed_from_u64(99);
        let mut verdicts = [0usize; 4];
        for seed in 0..60 {
            let sim = Sim {
                ops: 300,
                clients: 4,
                keys: 2,
                failures: 0.1,
                saw: seed % 2 == 0,
            };
            let mut h = simulated(seed, sim);
            for _ in 0..3 {
                let i = rng.random_range(0..h.len());
                let o = &mut h[i];
                match (rng.random_range(0..5), &o.call) {
                    (0, Call::Get { .. }) => {
                        let v = format!("c{}-{}", rng.random_range(0..4), rng.random_range(0..300));
                        o.outcome = Outcome::Ok(Return::Get(Some(v)));
                    }
                    (1, Call::Cas { .. }) => {
                        o.outcome = Outcome::Ok(Return::Cas(rng.random_bool(0.5)));
                    }
                    (2, _) => o.outcome = Outcome::Unknown,
                    (3, _) => {
                        o.invoke = rng.random_range(0..10_000);
                        o.ret = o.invoke + rng.random_range(0..500);
                    }
                    (4, _) => std::mem::swap(&mut o.invoke, &mut o.ret),
                    _ => {}
                }
            }
            let verdict = check_with_budget(&h, 200_000);
            if let Err(e) = &verdict {
                assert!(!e.to_string().is_empty());
            }
            verdicts[match verdict {
                Ok(_) => 0,
                Err(Failure::NotLinearizable(_)) => 1,
                Err(Failure::Inconclusive { .. }) => 2,
                Err(Failure::Malformed { .. }) => 3,
            }] += 1;
        }
        assert!(verdicts[1] > 10, "{verdicts:?}");
    }
}
