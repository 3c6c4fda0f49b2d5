//! The depth-first search for a linearization of one key's operations, with its memo of
//! explored configurations, and the explanation of a failed search.

use std::collections::HashSet;

use super::prepare::*;
use super::*;

/// The deepest point of a search: what explains a failure.
#[derive(Debug, Clone, Default)]
pub(super) struct Best {
    pub(super) depth: usize,
    /// The key-op whose return forced the backtrack there.
    pub(super) stuck: Option<usize>,
    /// The tail of the partial linearization (key-op indices), in order.
    pub(super) recent: Vec<usize>,
    pub(super) linearized: Vec<u64>,
    pub(super) state: Val,
}

pub(super) enum Search {
    Linearizable,
    Stuck(Best),
    OutOfBudget(Best),
}

/// The most memory the memo of explored configurations may take per key before the search
/// gives up as inconclusive: each entry holds a bitset over the key's operations, so a
/// pathological history could otherwise exhaust memory before the step budget.
pub(super) const MEMO_BYTES: usize = 512 << 20;

/// How many operations of the partial linearization an explanation shows.
pub(super) const RECENT: usize = 10;
/// How many unlinearized operations an explanation shows.
pub(super) const PENDING: usize = 16;

/// A doubly linked list over items `0..n`, in a fixed order, from which items are removed
/// when linearized and restored on backtracking in O(1) ("dancing links": restoring in the
/// reverse order of removal puts every item back exactly where it was).
pub(super) struct Links {
    /// Node `k + 1` holds `item[k]`; node 0 is the head and node `n + 1` the tail.
    pub(super) next: Vec<usize>,
    pub(super) prev: Vec<usize>,
    pub(super) item: Vec<usize>,
    /// The node holding each item, if it is in the list.
    pub(super) node: Vec<Option<usize>>,
}

impl Links {
    const HEAD: usize = 0;

    /// A list of `order`'s items in that order; `universe` bounds the item numbers.
    pub(super) fn new(order: &[usize], universe: usize) -> Links {
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
    pub(super) fn after(&self, node: usize) -> Option<(usize, usize)> {
        let next = self.next[node];
        (next + 1 < self.next.len()).then(|| (self.item[next], next))
    }

    pub(super) fn first(&self) -> Option<(usize, usize)> {
        self.after(Links::HEAD)
    }

    pub(super) fn remove(&mut self, item: usize) {
        if let Some(&Some(node)) = self.node.get(item) {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    pub(super) fn restore(&mut self, item: usize) {
        if let Some(&Some(node)) = self.node.get(item) {
            let (p, n) = (self.prev[node], self.next[node]);
            self.next[p] = node;
            self.prev[n] = node;
        }
    }
}

/// Where a choice point resumes its enumeration of candidates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cursor {
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
pub(super) struct Frame {
    pub(super) op: usize,
    pub(super) before: Val,
    /// The overdue operation of the choice point that took this step, and where its
    /// enumeration continues.
    pub(super) overdue: usize,
    pub(super) cursor: Cursor,
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
pub(super) fn search(ops: &[KeyOp], budget: &mut u64) -> Search {
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

pub(super) fn explain(history: &[Op], key: &str, prepared: &Prepared, best: &Best) -> Violation {
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
