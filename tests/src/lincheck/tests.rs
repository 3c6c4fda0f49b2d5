//! The checker's own tests: histories that must pass, violations that must be found, and
//! agreement with brute force on small random histories.

use std::collections::HashMap;

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

fn cas(c: usize, key: &str, expect: Option<&str>, new: &str, hit: bool, t0: u64, t1: u64) -> Op {
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
            .find(|&i| h[i].call == Call::Get { key: "k0".into() } && h[i].invoke > h[second].ret)
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
