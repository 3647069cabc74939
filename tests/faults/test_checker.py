"""Tests of the fault suite's checker on known-good and known-bad histories, hand-written and generated.

Generated histories come from simulating a real linearizable register (each op takes effect at a random
point inside its interval, or for unknown outcomes later or never); a brute-force checker that tries
every order cross-checks the search on small random histories. Run: ``python3 -m pytest tests/faults``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import random
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checker  # noqa: E402

K = "/faults/reg/r0"


# --------------------------------------------------------------------------------------------------
# Building histories by hand


class H:
    """A history under construction: ``op`` appends an invoke and its completion."""

    def __init__(self):
        self.events: list[dict] = []

    def op(self, p, f, inv, ret, value=None, type="ok", key=K):
        inv_value = None if f in ("read", "sync_read") else value
        if f == "create_seq" and type == "ok":
            inv_value = value.rstrip("0123456789")
        self.events.append({"t": inv, "p": p, "type": "invoke", "f": f, "key": key, "value": inv_value})
        if ret is not None:
            out = value if type == "ok" or f not in ("read", "sync_read") else None
            self.events.append({"t": ret, "p": p, "type": type, "f": f, "key": key, "value": out})
        return self

    def w(self, p, inv, ret, v, type="ok", key=K):
        return self.op(p, "write", inv, ret, v, type, key)

    def r(self, p, inv, ret, v, key=K):
        """A sync + read: linearizable."""
        return self.op(p, "sync_read", inv, ret, v, "ok", key)

    def plain(self, p, inv, ret, v, key=K):
        """A plain read: may be stale in ZooKeeper."""
        return self.op(p, "read", inv, ret, v, "ok", key)

    def cas(self, p, inv, ret, expected, new, type="ok", key=K):
        return self.op(p, "cas", inv, ret, [expected, new], type, key)

    def check(self, final=None, **kw):
        return checker.check(self.events, final or {}, **kw)


def lin(report, key=K):
    return report["keys"][key]["linearizable"]


# --------------------------------------------------------------------------------------------------
# Registers, hand-written


def test_sequential_history_is_valid():
    h = H().r("a", 0, 1, None).w("a", 2, 3, 1).r("b", 4, 5, 1).cas("a", 6, 7, 1, 2).r("b", 8, 9, 2)
    rep = h.check()
    assert rep["valid"] and rep["linearizable"] is True and lin(rep) is True
    assert rep["violations"] == []


def test_sequential_history_with_wrong_read_is_invalid():
    h = H().w("a", 0, 1, 1).w("a", 2, 3, 2).r("b", 4, 5, 1)
    rep = h.check()
    assert not rep["valid"] and rep["linearizable"] is False
    assert "read -> 1" in rep["violations"][0] and "held 2" in rep["violations"][0]


def test_concurrent_writes_and_reads_with_several_valid_orders():
    # Writes 1 and 2 overlap each other and two reads; the reads see 2 then 1, so w2 < w1.
    h = H().w("a", 0, 10, 1).w("b", 0, 10, 2).r("c", 1, 2, 2).r("d", 3, 4, 1).r("c", 5, 9, 1)
    assert h.check()["valid"]
    # Reads in the other order are fine too (w1 < w2).
    h2 = H().w("a", 0, 10, 1).w("b", 0, 10, 2).r("c", 1, 2, 1).r("d", 3, 4, 2)
    assert h2.check()["valid"]
    # But once both writes are done the value is the later one: 1, not 2.
    h.r("c", 11, 12, 2)
    rep = h.check()
    assert lin(rep) is False


def test_reads_of_both_values_in_the_same_interval_but_flipping_back_is_invalid():
    h = H().w("a", 0, 10, 1).w("b", 0, 10, 2).r("c", 1, 2, 1).r("d", 3, 4, 2).r("e", 5, 6, 1)
    assert lin(h.check()) is False


def test_stale_read_after_acknowledged_write_is_invalid():
    h = H().w("a", 0, 1, 1).w("a", 2, 3, 2).r("b", 2.5, 3.5, 1)  # concurrent with w2: fine
    assert h.check()["valid"]
    h.r("b", 4, 5, 1)  # after w2 was acknowledged: stale
    rep = h.check()
    assert not rep["valid"]
    assert "b sync_read -> 1 ok [4.000000, 5.000000]" in rep["violations"][0]


def test_lost_acknowledged_write_seen_by_final_read_is_invalid():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2)
    assert h.check({"reads": {K: 2}})["valid"]
    rep = h.check({"reads": {K: 1}})
    assert not rep["valid"]
    assert "final read after heal" in rep["violations"][0]
    assert rep["counts"]["final_reads"] == 1


def test_final_reads_already_in_history_are_not_appended_twice():
    h = H().w("a", 0, 1, 1).op("final", "sync_read", 5, 6, 1)
    rep = h.check({"reads": {K: 1}})
    assert rep["valid"] and rep["counts"]["final_reads"] == 1 and rep["warnings"] == []


def test_read_of_value_never_written_is_invalid():
    rep = H().w("a", 0, 1, 1).r("b", 0.5, 2, 77).check()
    assert not rep["valid"]
    assert "a value no ok or unknown-outcome write or cas ever wrote" in rep["violations"][0]


def test_cas_success_after_concurrent_write_changed_the_value_is_invalid():
    # cas 1->3 spans w2; it may take effect before w2 (then the value ends at 2) ...
    h = H().w("a", 0, 1, 1).cas("b", 2, 6, 1, 3).w("c", 3, 4, 2)
    assert h.check()["valid"]
    assert h.check({"reads": {K: 2}})["valid"]
    # ... but a later read of 3 means it took effect after w2, when the value was 2, not 1.
    rep = h.check({"reads": {K: 3}})
    assert lin(rep) is False


def test_cas_whose_expected_value_was_never_current_is_invalid():
    rep = H().w("a", 0, 1, 1).w("a", 2, 3, 2).cas("b", 4, 5, 1, 3).check()
    assert lin(rep) is False


def test_failed_ops_have_no_effect():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="fail").cas("c", 4, 5, 1, 9, type="fail").r("a", 6, 7, 1)
    assert h.check()["valid"]


def test_read_of_a_failed_writes_value_is_invalid():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="fail").r("c", 4, 5, 2)
    rep = h.check()
    assert lin(rep) is False
    # The same read of an unknown-outcome write is fine.
    h2 = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="info").r("c", 4, 5, 2)
    assert h2.check()["valid"]


def test_info_write_taking_effect_much_later_is_valid():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="info")
    for i in range(20):
        h.r("c", 10 + 2 * i, 11 + 2 * i, 1)
    h.r("c", 100, 101, 2).r("d", 102, 103, 2)
    assert h.check()["valid"]


def test_info_write_never_taking_effect_is_valid():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="info").cas("e", 2, 3, 1, 5, type="info")
    for i in range(20):
        h.r("c", 10 + 2 * i, 11 + 2 * i, 1)
    rep = h.check({"reads": {K: 1}})
    assert rep["valid"]
    assert rep["counts"]["unknown_outcomes"] == 2


def test_info_write_read_then_unread_is_invalid():
    h = H().w("a", 0, 1, 1).w("b", 2, 3, 2, type="info").r("c", 4, 5, 2).r("c", 6, 7, 1)
    rep = h.check()
    assert lin(rep) is False
    assert "c sync_read -> 1" in rep["violations"][0]


def test_info_write_cannot_take_effect_before_its_invoke():
    h = H().w("a", 0, 1, 1).r("c", 2, 3, 2).w("b", 4, 5, 2, type="info")
    assert lin(h.check()) is False


def test_info_read_is_dropped_and_open_invoke_is_info():
    h = H().w("a", 0, 1, 1).op("b", "read", 2, 3, 99, type="info")
    h.events.append({"t": 4, "p": "c", "type": "invoke", "f": "write", "key": K, "value": 5})  # never completes
    h.r("d", 6, 7, 5)
    rep = h.check()
    assert rep["valid"]
    assert rep["counts"]["by_f"]["write"] == {"ok": 1, "fail": 0, "info": 1}
    assert rep["counts"]["by_f"]["read"] == {"ok": 0, "fail": 0, "info": 1}
    assert rep["counts"]["by_f"]["sync_read"]["ok"] == 1


def test_keys_are_checked_independently():
    h = H().w("a", 0, 1, 1, key="/x").w("a", 2, 3, 1, key="/y").r("b", 4, 5, 1, key="/x").r("b", 6, 7, None, key="/y")
    rep = h.check()
    assert rep["keys"]["/x"]["linearizable"] is True
    assert rep["keys"]["/y"]["linearizable"] is False
    assert rep["linearizable"] is False and "key /y" in rep["violations"][0]


def test_step_budget_gives_unknown_not_invalid():
    # Ten overlapping writes and then a read of a value none of them wrote: to refute it the search
    # must try every subset of the writes (about 2^10 * 10 configurations).
    h = H()
    for i in range(10):
        h.w(f"w{i}", 0, 10, 100 + i)
    h.r("r", 11, 12, 99)
    rep = h.check(max_steps=50)
    assert rep["linearizable"] == "unknown" and lin(rep) == "unknown"
    assert rep["valid"]  # unknown is not a violation ...
    assert any("unknown" in w for w in rep["warnings"])  # ... but it is reported
    full = h.check()
    assert full["linearizable"] is False and full["keys"][K]["steps"] > 1000


def test_unknown_outcomes_do_not_blow_up_the_search():
    # Sixteen overlapping unknown-outcome writes, each read once, in an order unrelated to their names:
    # valid (each takes effect just before its read), and found without trying subsets of the writes.
    h = H()
    for i in range(16):
        h.w(f"w{i}", 0, 1, 100 + i, type="info")
    for i in range(16):
        h.r("r", 10 + i, 10.5 + i, 100 + (i * 7) % 16)
    rep = h.check(max_steps=20_000)
    assert rep["linearizable"] is True, rep["warnings"]
    h.r("r", 30, 31, 100)  # a value read before cannot come back
    assert lin(h.check(max_steps=20_000)) is False


# --------------------------------------------------------------------------------------------------
# Generated histories: a simulated linearizable register


def simulate(n_ops, procs=5, seed=0, p_info=0.0, key=K):
    """A history of a real linearizable register: each op takes effect at a random point inside its
    interval; unknown outcomes take effect inside, much later, or never. Values written are unique."""
    rng = random.Random(seed)
    clock = [0.0] * procs
    gen = [0] * procs
    ops = []
    for _ in range(n_ops):
        i = rng.randrange(procs)
        inv = clock[i] + rng.random() * 0.5
        ret = inv + rng.random() * 2.0
        clock[i] = ret
        f = rng.choices(["write", "cas", "read", "sync_read"], [35, 20, 30, 15])[0]
        info = rng.random() < p_info
        at = rng.uniform(inv, ret)
        if info:
            at = rng.choice([at, inv + rng.random() * 40.0, None])
        ops.append({"p": f"w{i}" + (f".{gen[i]}" if gen[i] else ""), "f": f, "inv": inv, "ret": ret, "at": at, "info": info})
        gen[i] += info
    state, seen, nextval = None, [None], 1
    for o in sorted((o for o in ops if o["at"] is not None), key=lambda o: o["at"]):
        if o["f"] == "write":
            o["arg"], state, nextval = nextval, nextval, nextval + 1
        elif o["f"] == "cas":
            expected = state if rng.random() < 0.6 else rng.choice(seen[-4:])
            o["arg"], nextval = [expected, nextval], nextval + 1
            o["fail"] = state != expected
            if not o["fail"]:
                state = o["arg"][1]
        else:
            o["result"] = state
        seen.append(state)
    events = []
    for o in ops:
        if "arg" not in o and o["f"] in ("write", "cas"):  # never took effect
            o["arg"], nextval = (nextval if o["f"] == "write" else [rng.choice(seen), nextval]), nextval + 1
        arg = o.get("arg")
        events.append({"t": o["inv"], "p": o["p"], "type": "invoke", "f": o["f"], "key": key, "value": arg})
        if o["info"]:
            type_, value = "info", arg
        elif o.get("fail"):
            type_, value = "fail", arg
        else:
            type_, value = "ok", o["result"] if o["f"] in ("read", "sync_read") else arg
        events.append({"t": o["ret"], "p": o["p"], "type": type_, "f": o["f"], "key": key, "value": value})
    return events


def mutate_one_read(events, rng):
    """Make one ok read return a value overwritten by an acknowledged write before the read began."""
    ops = checker.pair_operations(events, [])
    writes = [o for o in ops if o.f == "write" and o.type == "ok"]
    reads = [o for o in ops if o.f == "sync_read" and o.type == "ok"]
    rng.shuffle(reads)
    for rd in reads:
        for later in (w for w in writes if w.ret < rd.inv):
            stale = [w.inv_value for w in writes if w.ret < later.inv and w.inv_value != rd.value]
            if stale:
                value = rng.choice(stale)
                for e in events:
                    if e["p"] == rd.p and e["type"] == "ok" and e["t"] == rd.ret:
                        e["value"] = value
                        return rd, value
    raise AssertionError("no read to mutate")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_linearizable_history_is_valid_within_a_small_budget(seed):
    events = simulate(2000, procs=5, seed=seed)
    rep = checker.check(events, {}, max_steps=200_000)
    assert rep["linearizable"] is True, rep["violations"] + rep["warnings"]
    assert rep["valid"]
    assert rep["counts"]["by_f"]["cas"]["fail"] > 0  # the generator does exercise refused cas


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_history_with_one_mutated_read_is_invalid(seed):
    events = simulate(2000, procs=5, seed=seed)
    mutated = copy.deepcopy(events)
    rd, value = mutate_one_read(mutated, random.Random(seed))
    rep = checker.check(mutated, {}, max_steps=1_000_000)
    assert rep["linearizable"] is False
    assert f"read -> {value}" in rep["violations"][0]


@pytest.mark.parametrize("seed", [4, 5])
def test_generated_history_with_unknown_outcomes_is_valid(seed):
    events = simulate(1500, procs=5, seed=seed, p_info=0.08)
    rep = checker.check(events, {}, max_steps=1_000_000)
    assert rep["counts"]["unknown_outcomes"] > 50
    assert rep["linearizable"] is True, rep["violations"] + rep["warnings"]


@pytest.mark.parametrize("seed", [4, 5])
def test_generated_history_with_unknown_outcomes_and_mutated_read_is_invalid(seed):
    events = simulate(1500, procs=5, seed=seed, p_info=0.08)
    mutate_one_read(events, random.Random(seed))
    assert checker.check(events, {}, max_steps=1_000_000)["linearizable"] is False


# --------------------------------------------------------------------------------------------------
# Brute force cross-check


def brute_force(ops, initial=None):
    """Try every subset of info ops and every order respecting real time."""
    required = [o for o in ops if not o.info]
    optional = [o for o in ops if o.info]
    for k in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, k):
            group = required + list(chosen)
            for perm in itertools.permutations(group):
                if _legal(perm, initial):
                    return True
    return False


def _legal(perm, state):
    for idx, o in enumerate(perm):
        if any(later.ret < o.inv for later in perm[idx + 1:]):
            return False  # a later op completed before this one was invoked
        if o.kind == checker.READ:
            if state != o.a:
                return False
        elif o.kind == checker.WRITE:
            state = o.a
        else:
            if state != o.a:
                return False
            state = o.b
    return True


def random_small(rng, n):
    vals = [None, 1, 2, 3]
    ops = []
    for _ in range(n):
        inv = rng.randint(0, 8)
        ret = inv + rng.randint(0, 4)
        kind = rng.choice([checker.READ, checker.WRITE, checker.CAS])
        info = kind != checker.READ and rng.random() < 0.3
        a = rng.choice(vals) if kind != checker.WRITE else rng.choice(vals[1:])
        b = rng.choice(vals[1:]) if kind == checker.CAS else None
        ops.append(checker.RegOp(kind, a, b, inv, math.inf if info else ret, info))
    return ops


def test_search_agrees_with_brute_force_on_small_random_histories():
    rng = random.Random(7)
    outcomes = {True: 0, False: 0}
    for _ in range(1500):
        ops = random_small(rng, rng.randint(1, 7))
        expected = brute_force(ops)
        for prune in (True, False):
            got = checker.check_register(ops, prune_unobserved=prune)["linearizable"]
            assert got == expected, [o.describe() for o in ops]
        outcomes[expected] += 1
    # Both verdicts must be common, or the cross-check proves little.
    assert outcomes[True] > 200 and outcomes[False] > 200, outcomes


# --------------------------------------------------------------------------------------------------
# Creates and sequence numbers


def test_acknowledged_create_missing_at_the_end_is_lost():
    h = H().op("a", "create", 0, 1, "/faults/unique/c-1", key=None).op("b", "create", 0, 1, "/faults/unique/c-2", key=None)
    assert h.check({"unique_children": ["/faults/unique/c-1", "/faults/unique/c-2"]})["valid"]
    rep = h.check({"unique_children": ["/faults/unique/c-1"]})
    assert not rep["valid"] and "acknowledged create lost" in rep["violations"][0]
    assert rep["creates"]["lost"] == 1


def test_failed_create_that_happened_and_info_creates_are_reported():
    h = H().op("a", "create", 0, 1, "/u/c-1", type="fail", key=None)
    h.op("b", "create", 0, 1, "/u/c-2", type="info", key=None).op("c", "create", 0, 1, "/u/c-3", type="info", key=None)
    rep = h.check({"unique_children": ["/u/c-2"]})
    assert rep["valid"] and rep["creates"]["info_present"] == 1
    rep = h.check({"unique_children": ["/u/c-1", "/u/c-2"]})
    assert not rep["valid"] and "failed create happened" in rep["violations"][0]
    rep = h.check({"unique_children": ["/u/c-2", "/u/zzz"]})
    assert not rep["valid"] and "no create of it was ever invoked" in rep["violations"][0]


def seq_path(n):
    return f"/faults/seq/n-{n:010d}"


def test_sequence_numbers_in_real_time_order_are_valid():
    h = H().op("a", "create_seq", 0, 1, seq_path(1), key=None).op("b", "create_seq", 2, 5, seq_path(3), key=None)
    h.op("c", "create_seq", 3, 4, seq_path(2), key=None)  # concurrent with b: any order
    h.op("d", "create_seq", 6, 7, "/faults/seq/n-", type="fail", key=None)
    rep = h.check({"seq_children": [seq_path(1), seq_path(2), seq_path(3)]})
    assert rep["valid"], rep["violations"]
    assert rep["sequence"]["ok"] == 3


def test_duplicate_sequence_numbers_are_invalid():
    h = H().op("a", "create_seq", 0, 1, seq_path(1), key=None).op("b", "create_seq", 0.5, 2, seq_path(1), key=None)
    rep = h.check()
    assert not rep["valid"] and "returned 2 times" in rep["violations"][0]


def test_out_of_order_sequence_numbers_are_invalid():
    h = H().op("a", "create_seq", 0, 1, seq_path(5), key=None).op("b", "create_seq", 2, 3, seq_path(4), key=None)
    rep = h.check()
    assert not rep["valid"] and "out of real-time order" in rep["violations"][0]
    # Under another parent the counter is independent.
    h2 = H().op("a", "create_seq", 0, 1, seq_path(5), key=None).op("b", "create_seq", 2, 3, "/other/n-0000000004", key=None)
    assert h2.check()["valid"]


def test_acknowledged_create_seq_lost_and_unexplained_sequential_children():
    h = H().op("a", "create_seq", 0, 1, seq_path(1), key=None).op("b", "create_seq", 2, 3, "/faults/seq/n-", type="info", key=None)
    assert h.check({"seq_children": [seq_path(1), seq_path(2)]})["creates"]["seq_info_present"] == 1
    assert h.check({"seq_children": [seq_path(1), seq_path(2)]})["valid"]
    rep = h.check({"seq_children": [seq_path(2)]})
    assert not rep["valid"] and "acknowledged create_seq lost" in rep["violations"][0]
    rep = h.check({"seq_children": [seq_path(1), seq_path(2), seq_path(3)]})
    assert not rep["valid"] and "no ok create_seq returned them" in rep["violations"][0]


# --------------------------------------------------------------------------------------------------
# Ephemerals and replicas


def owners_final(fate2="killed", ephemerals=None):
    return {
        "owners": [
            {"p": "owner-1", "path": "/faults/eph/o-1", "session": 11, "fate": "alive", "gone_by": None},
            {"p": "owner-2", "path": "/faults/eph/o-2", "session": 22, "fate": fate2, "gone_by": 45.6},
        ],
        "ephemerals": ephemerals if ephemerals is not None else [{"path": "/faults/eph/o-1", "owner": 11}],
    }


def test_ephemerals_matching_their_owners_fate_are_valid():
    rep = checker.check([], owners_final())
    assert rep["valid"] and rep["ephemerals"]["checked"]


def test_ephemeral_of_killed_owner_still_present_is_invalid():
    for fate in ("killed", "paused_past_timeout"):
        eph = [{"path": "/faults/eph/o-1", "owner": 11}, {"path": "/faults/eph/o-2", "owner": 22}]
        rep = checker.check([], owners_final(fate, eph))
        assert not rep["valid"]
        assert any(f"ephemeral of {fate} owner 'owner-2'" in v for v in rep["violations"])


def test_ephemeral_of_live_owner_missing_or_stray_is_invalid():
    rep = checker.check([], owners_final(ephemerals=[]))
    assert not rep["valid"] and "missing" in rep["violations"][0]
    rep = checker.check([], owners_final(ephemerals=[{"path": "/faults/eph/o-1", "owner": 11}, {"path": "/x", "owner": 33}]))
    assert not rep["valid"] and "no live owner" in rep["violations"][0]


def test_replicas_differing_is_invalid():
    assert checker.check([], {"replicas": {"n1": "ab", "n2": "ab", "n3": "ab"}})["valid"]
    rep = checker.check([], {"replicas": {"n1": "ab", "n2": "ab", "n3": "cd"}})
    assert not rep["valid"] and "replicas differ" in rep["violations"][0] and "n3: \"cd\"" in rep["violations"][0]


# --------------------------------------------------------------------------------------------------
# Counts, loading, CLI


def test_counts():
    h = H().w("a", 0, 1, 1).r("b", 0, 1, 1).w("c", 0, 1, 2, type="fail").w("d", 0, 1, 3, type="info")
    h.op("e", "create", 0, 1, "/u/c", key=None)
    h.events += [
        {"t": 2, "p": "e", "type": "casualty", "kind": "protocol_error", "detail": "xids do not match"},
        {"t": 3, "p": "nemesis", "type": "nemesis", "f": "kill", "value": "n1"},
        {"t": 4, "p": "x", "type": "log", "msg": "ignored"},
    ]
    c = h.check()["counts"]
    assert c["by_f"]["write"] == {"ok": 1, "fail": 1, "info": 1}
    assert c["by_f"]["create"] == {"ok": 1, "fail": 0, "info": 0}
    assert c["acknowledged_register_ops"] == 2
    assert c["unknown_outcomes"] == 1
    assert c["casualties"]["protocol_error"]["count"] == 1
    assert c["casualties"]["protocol_error"]["details"][0]["detail"] == "xids do not match"
    assert c["nemesis"] == {"kill": 1}


def test_report_is_json_serialisable():
    rep = H().w("a", 0, 1, 1).r("b", 2, 3, 5).check({"replicas": {"n1": 1, "n2": 2}})
    assert json.loads(json.dumps(rep))["valid"] is False


def test_events_out_of_time_order_and_bad_events_are_tolerated():
    h = H().w("a", 0, 1, 1).r("b", 2, 3, 1)
    events = list(reversed(h.events)) + [{"p": "z", "type": "invoke"}, {"t": 9, "p": "q", "type": "ok", "f": "read"}]
    rep = checker.check(events, {})
    assert rep["valid"] and len(rep["warnings"]) == 2


def write_run(tmp_path, events, final=None, extra=""):
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + extra)
    if final is not None:
        (tmp_path / "final.json").write_text(json.dumps(final))
    return tmp_path


def test_load_history_tolerates_torn_last_line_but_not_a_bad_middle_line(tmp_path):
    run = write_run(tmp_path, H().w("a", 0, 1, 1).events, extra='{"t": 5, "p"')
    assert len(checker.load_history(str(run / "history.jsonl"))) == 2
    (tmp_path / "history.jsonl").write_text('{"t": 1}\nnot json\n{"t": 2}\n')
    with pytest.raises(checker.InputError, match=":2:"):
        checker.load_history(str(tmp_path / "history.jsonl"))
    assert checker.load_final(str(tmp_path / "final.json")) == {}


def run_cli(*args):
    script = os.path.join(HERE, "checker.py")
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_cli_exit_codes_and_json(tmp_path):
    (tmp_path / "good").mkdir()
    good = write_run(tmp_path / "good", H().w("a", 0, 1, 1).events, {"reads": {K: 1}})
    p = run_cli(good)
    assert p.returncode == 0 and p.stdout.startswith("VALID"), p.stdout + p.stderr
    p = run_cli(good, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["counts"]["final_reads"] == 1

    (tmp_path / "bad").mkdir()
    bad = write_run(tmp_path / "bad", H().w("a", 0, 1, 1).w("a", 2, 3, 2).events, {"reads": {K: 1}})
    p = run_cli(bad)
    assert p.returncode == 1 and "VIOLATION" in p.stdout

    p = run_cli(tmp_path / "nonexistent")
    assert p.returncode == 2 and "cannot read history" in p.stderr


def test_cli_strict_fails_on_unknown(tmp_path):
    h = H()
    for i in range(10):
        h.w(f"w{i}", 0, 10, 100 + i)
    h.r("r", 11, 12, 105)
    run = write_run(tmp_path, h.events)
    assert run_cli(run).returncode == 0
    assert run_cli(run, "--max-steps", "20").returncode == 0
    assert run_cli(run, "--max-steps", "20", "--strict").returncode == 1


@pytest.mark.parametrize("name,valid", [("good", True), ("lost_write", False)])
def test_fixture_runs(name, valid):
    d = os.path.join(HERE, "histories", name)
    rep = checker.check(checker.load_history(os.path.join(d, "history.jsonl")), checker.load_final(os.path.join(d, "final.json")))
    assert rep["valid"] is valid, rep["violations"]
    if not valid:
        assert len(rep["violations"]) == 1 and "final read after heal" in rep["violations"][0]


def test_garbage_input_is_judged_not_crashed_on():
    rng = random.Random(3)
    junk = [None, 1, -2.5, "x", "/a/n-0000000001", [1, 2], [None], {"a": 1}, True, []]
    fields = ["t", "p", "type", "f", "key", "value", "kind", "detail"]
    choices = {"type": ["invoke", "ok", "fail", "info", "casualty", "nemesis", "log"],
               "f": ["read", "sync_read", "write", "cas", "create", "create_seq", "kill"]}
    for _ in range(300):
        events = []
        for _ in range(rng.randint(0, 12)):
            e = {}
            for field in fields:
                if rng.random() < 0.8:
                    pool = choices.get(field, []) + junk
                    e[field] = rng.choice(pool) if field not in ("t",) or rng.random() < 0.3 else rng.uniform(0, 5)
            events.append(e)
        final = {k: rng.choice(junk + [[{"path": rng.choice(junk), "owner": rng.choice(junk), "session": rng.choice(junk),
                                           "fate": rng.choice(["alive", "killed"])}], {"n1": rng.choice(junk)}])
                 for k in ["reads", "unique_children", "seq_children", "ephemerals", "owners", "replicas"] if rng.random() < 0.5}
        rep = checker.check(events, final, max_steps=10_000)
        json.dumps(rep)
        checker.summary(rep)


def test_a_stale_plain_read_is_allowed_as_zookeeper_allows_it():
    # A plain read on a lagging server may return the value before an acknowledged write...
    h = H().w("a", 0, 1, 1).w("a", 2, 3, 2).plain("b", 4, 5, 1)
    assert checker.check(h.events, {})["valid"]
    # ...but the same read after a sync may not.
    h = H().w("a", 0, 1, 1).w("a", 2, 3, 2).r("b", 4, 5, 1)
    assert not checker.check(h.events, {})["valid"]


def test_a_plain_read_of_a_value_never_written_is_invalid():
    h = H().w("a", 0, 1, 1).plain("b", 2, 3, 7)
    rep = checker.check(h.events, {})
    assert not rep["valid"]
    assert any("no write or cas" in v for v in rep["violations"])
    # Nor a value whose write was invoked only after the read returned.
    h = H().plain("b", 0, 1, 5).w("a", 2, 3, 5)
    assert not checker.check(h.events, {})["valid"]
