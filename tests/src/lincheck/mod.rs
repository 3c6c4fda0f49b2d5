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

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

mod prepare;
mod search;
#[cfg(test)]
mod tests;

use prepare::*;
use search::*;

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
