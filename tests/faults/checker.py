#!/usr/bin/env python3
"""Checker for the fault suite's histories: judges one run of Roster under faults.

Input is the run's ``history.jsonl`` (invoke/ok/fail/info events of concurrent clients, casualties,
nemesis events) and ``final.json`` (observations made after everything was healed); the format is the
shared contract described in the fault suite's README. ``check(events, final)`` returns a
JSON-serialisable report:

* **Linearizability per key** of the register operations ZooKeeper promises to be linearizable
  (sync_read, write, cas; a plain read may be stale in ZooKeeper and is only checked to return a value
  some write or cas wrote, or the initial value, before the read returned), keys checked
  independently (linearizability is compositional). The search is Wing & Gong's, with Lowe's
  memoisation: a depth-first search over a linked list of call/return entries that remembers every
  (set of linearized ops, register value) configuration it has already explored. ``fail`` ops are
  removed; ``info`` ops may take effect at any point after their invoke or never (their return time is
  +infinity); ``info`` reads are dropped, and so are ``info`` writes/cas whose new value nobody ever
  observed (taking effect or not cannot change any result then). An ``info`` write/cas is only
  linearized right before an op that observes its value: any linearization can be normalised that
  way, and it keeps pending ``info`` ops from multiplying the search space. The search has a step
  budget: when it is exceeded the key is ``"unknown"``, neither valid nor invalid (``valid`` stays
  true if nothing else failed; the summary and ``warnings`` say so, and ``--strict`` exits 1).
* **No acknowledged create lost** (``ok`` creates present at the end), no failed create that
  happened, no znode from nowhere, and a count of ``info`` creates that did happen. Lost register
  writes are caught by the final reads, which the harness appends to the history as ``ok`` reads.
* **Sequence numbers** of ``ok`` create_seq: unique per parent, and increasing in real-time order.
* **Ephemerals**: alive owners keep theirs, dead owners' are gone, no ephemeral of an unknown owner.
* **Replicas** report identical digests.
* **Counts** per f and type, acknowledged register ops, unknown outcomes, casualties by kind.

What it leaves out: it does not check watches or session-expiry timing (``gone_by`` is only quoted in
messages), does not check that create_seq numbers are gapless (failed or unknown creates may consume
numbers), and an ``info`` create_seq that happened is only counted, not identified.

Run as a script: ``python3 tests/faults/checker.py RUN_DIR [--json] [--strict] [--max-steps N]``;
exit status 0 if valid, 1 if not, 2 if the input cannot be read. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter, defaultdict
from typing import Any

REGISTER_FS = ("read", "sync_read", "write", "cas")
READ_FS = ("read", "sync_read")
#: The register operations ZooKeeper promises to be linearizable. A plain ``read`` is answered by the
#: server the client is connected to and may be stale (ZooKeeper's guarantee is sequential
#: consistency, not linearizability, unless the read follows a ``sync``); plain reads are checked only
#: for returning a value that was written (see ``check_plain_reads``).
LINEARIZABLE_FS = ("sync_read", "write", "cas")
COMPLETIONS = ("ok", "fail", "info")

#: Default step budget of the linearizability search, per key. A step is one visit of a list entry;
#: a valid history of a few thousand ops with a handful of concurrent clients needs a few steps per op.
DEFAULT_MAX_STEPS = 2_000_000

#: At most this many messages of one kind go into ``violations``; the rest are summarised.
MAX_MESSAGES_PER_CHECK = 20

#: Width of the sequence number at the end of a create_seq path (ZooKeeper's ``%010d``).
SEQ_DIGITS = 10


class InputError(Exception):
    """The history or final observations cannot be read; the message says which file and line."""


# --------------------------------------------------------------------------------------------------
# Loading


def load_history(path: str) -> list[dict]:
    """Read a JSONL history: one JSON object per line, blank lines skipped.

    Raises ``InputError`` naming the file and line if the file is missing or a line is not a JSON
    object.
    """
    events: list[dict] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"cannot read history {path}: {e}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from e
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            if i == last:  # a torn last line (the run was killed mid-write) is tolerated
                break
            raise InputError(f"{path}:{i + 1}: not JSON ({e}); fix or remove the line") from e
        if not isinstance(event, dict):
            raise InputError(f"{path}:{i + 1}: expected a JSON object, got {type(event).__name__}")
        events.append(event)
    return events


def load_final(path: str) -> dict:
    """Read ``final.json``; ``{}`` if the file does not exist. Raises ``InputError`` if it is not a JSON object."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read final observations {path}: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------------------------------
# Pairing invokes with completions


def _hashable(v: Any) -> Any:
    """Register values are ints or null; anything else is made hashable so a bad value is judged, not crashed on."""
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


class Op:
    """One operation: its invoke and completion paired. ``ret`` is ``math.inf`` for ``info``."""

    __slots__ = ("p", "f", "key", "type", "inv", "ret", "inv_value", "value")

    def __init__(self, p, f, key, type_, inv, ret, inv_value, value):
        self.p = p
        self.f = f
        self.key = key
        self.type = type_
        self.inv = inv
        self.ret = ret
        self.inv_value = inv_value
        self.value = value

    def describe(self) -> str:
        f = self.f
        if f in READ_FS:
            what = f"{f} -> {self.value!r}" if self.type == "ok" else f
        elif f == "cas":
            v = self.value if isinstance(self.value, (list, tuple)) and len(self.value) == 2 else self.inv_value
            try:
                what = f"cas {v[0]!r}->{v[1]!r}"
            except (TypeError, IndexError, KeyError):
                what = f"cas {v!r}"
        elif f == "create_seq" and self.type == "ok":
            what = f"create_seq {self.inv_value!r} -> {self.value!r}"
        else:
            what = f"{f} {self.inv_value!r}"
        end = "inf)" if self.ret == math.inf else f"{self.ret:.6f}]"
        return f"{self.p} {what} {self.type} [{self.inv:.6f}, {end}"


def pair_operations(events: list[dict], warnings: list[str]) -> list[Op]:
    """Pair each invoke with the next completion of the same process.

    Events are stably sorted by time first, so per-worker files concatenated in any order work. An
    invoke still open at the end of the history is an ``info`` (unknown outcome), as in Jepsen.
    """
    timed = []
    for i, e in enumerate(events):
        if e.get("type") not in ("invoke",) + COMPLETIONS:
            continue
        t = _num(e.get("t"))
        if t is None:
            warnings.append(f"history event #{i + 1} has no numeric time 't'; ignored: {json.dumps(e)[:200]}")
            continue
        timed.append((t, i, e))
    timed.sort(key=lambda x: (x[0], x[1]))

    open_ops: dict[Any, tuple[float, dict]] = {}
    ops: list[Op] = []
    for t, i, e in timed:
        p = _hashable(e.get("p"))
        if e["type"] == "invoke":
            if p in open_ops:
                t0, inv = open_ops.pop(p)
                warnings.append(
                    f"process {p!r} invoked again at {t:.6f} while its op {inv.get('f')!r} of {t0:.6f} was "
                    f"open; the earlier op is treated as unknown (info). Workers must use a new process "
                    f"id after an info"
                )
                ops.append(_make_op(p, inv, t0, None, "info", math.inf))
            open_ops[p] = (t, e)
            continue
        if p not in open_ops:
            warnings.append(f"completion without invoke ignored: {json.dumps(e)[:200]}")
            continue
        t0, inv = open_ops.pop(p)
        if e.get("f", inv.get("f")) != inv.get("f") or e.get("key", inv.get("key")) != inv.get("key"):
            warnings.append(
                f"process {p!r}: completion {json.dumps(e)[:150]} does not match its invoke "
                f"{json.dumps(inv)[:150]}; paired anyway"
            )
        ret = math.inf if e["type"] == "info" else t
        ops.append(_make_op(p, inv, t0, e, e["type"], ret))
    for p, (t0, inv) in open_ops.items():
        ops.append(_make_op(p, inv, t0, None, "info", math.inf))
    return ops


def _make_op(p, inv: dict, t0: float, comp: dict | None, type_: str, ret: float) -> Op:
    value = comp.get("value") if comp is not None and "value" in comp else None
    f = inv.get("f")
    f = f if isinstance(f, str) else json.dumps(f)
    return Op(p, f, _hashable(inv.get("key")), type_, t0, ret, inv.get("value"), value)


# --------------------------------------------------------------------------------------------------
# Linearizability of one register

READ, WRITE, CAS = 0, 1, 2


class RegOp:
    """A register operation ready for the search. ``a``: value read/written, or cas expected; ``b``: cas new."""

    __slots__ = ("kind", "a", "b", "inv", "ret", "info", "src")

    def __init__(self, kind, a, b, inv, ret, info, src=None):
        self.kind = kind
        self.a = a
        self.b = b
        self.inv = inv
        self.ret = ret
        self.info = info
        self.src = src

    def describe(self) -> str:
        if self.src is not None:
            return self.src.describe()
        what = {READ: f"read -> {self.a!r}", WRITE: f"write {self.a!r}", CAS: f"cas {self.a!r}->{self.b!r}"}[self.kind]
        end = "inf)" if self.info else f"{self.ret}]"
        return f"{what} {'info' if self.info else 'ok'} [{self.inv}, {end}"


def register_ops(ops: list[Op], warnings: list[str]) -> list[RegOp]:
    """Turn paired register ops of one key into search ops: drop fails and info reads."""
    out = []
    for op in ops:
        if op.type == "fail":
            continue
        info = op.type == "info"
        if op.f in READ_FS:
            if info:
                continue
            out.append(RegOp(READ, _hashable(op.value), None, op.inv, op.ret, False, op))
        elif op.f == "write":
            v = op.inv_value if op.inv_value is not None or op.value is None else op.value
            out.append(RegOp(WRITE, _hashable(v), None, op.inv, op.ret, info, op))
        elif op.f == "cas":
            v = op.inv_value if isinstance(op.inv_value, list) else op.value
            if not (isinstance(v, list) and len(v) == 2):
                warnings.append(f"cas without an [expected, new] value ignored: {op.describe()}")
                continue
            out.append(RegOp(CAS, _hashable(v[0]), _hashable(v[1]), op.inv, op.ret, info, op))
    return out


def check_register(
    ops: list[RegOp],
    initial: Any = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    prune_unobserved: bool = True,
) -> dict:
    """Is this history of one register linearizable? Returns ``{"linearizable": True|False|"unknown",
    "steps", "ops", "explanation"}``.

    ``ops`` are ``ok`` ops (finite ``ret``) and ``info`` ops (``info=True``, may take effect after
    ``inv`` or never). ``prune_unobserved`` drops info writes/cas whose new value is never read and
    never a cas's expected value: whether such an op took effect cannot change any result.
    """
    if prune_unobserved:
        observed = {o.a for o in ops if o.kind == READ} | {o.a for o in ops if o.kind == CAS}
        ops = [o for o in ops if not (o.info and (o.a if o.kind == WRITE else o.b) not in observed)]
    n = len(ops)
    result = {"linearizable": True, "steps": 0, "ops": n, "explanation": None}
    required = sum(1 for o in ops if not o.info)
    if required == 0:
        return result

    # Entries: 0 = head sentinel, 1..m = calls and returns sorted by time (calls first on ties, which
    # treats touching intervals as concurrent), m+1 = tail sentinel.
    raw = []
    for i, o in enumerate(ops):
        raw.append((o.inv, 0, i))
        if not o.info:
            raw.append((o.ret, 1, i))
    raw.sort()
    m = len(raw)
    tail = m + 1
    nxt = list(range(1, m + 2)) + [tail]
    prv = [0] + list(range(0, m + 1))
    entry_op = [-1] * (m + 2)
    is_call = [False] * (m + 2)
    call_e = [0] * n
    ret_e = [0] * n
    for idx, (_, kind, i) in enumerate(raw, 1):
        entry_op[idx] = i
        if kind == 0:
            is_call[idx] = True
            call_e[i] = idx
        else:
            ret_e[i] = idx

    kinds = [o.kind for o in ops]
    avals = [o.a for o in ops]
    bvals = [o.b for o in ops]
    infos = [o.info for o in ops]
    bits = [1 << i for i in range(n)]

    cache: set = set()
    stack: list[tuple[int, Any, bool]] = []
    state = initial
    # ``must_observe``: the last op linearized was an unknown-outcome write/cas, so the next one must
    # observe its value (a read of it or a cas expecting it). Any linearization can be normalised so
    # (an info op followed by a write, or by nothing, can be dropped), and this keeps the search from
    # trying every subset of pending info ops at every point.
    must_observe = False
    linearized = 0
    remaining = required
    steps = 0
    best_depth = -1
    best = None
    e = nxt[0]
    while remaining:
        steps += 1
        if steps > max_steps:
            result.update(linearizable="unknown", steps=steps)
            result["explanation"] = (
                f"search gave up after {max_steps} steps (raise --max-steps, or shorten the run or its "
                f"number of unknown-outcome ops)"
            )
            return result
        if e == tail:  # cannot happen: a required op's return entry precedes the tail
            raise AssertionError("linearizability search ran off the list")
        i = entry_op[e]
        if is_call[e]:
            k = kinds[i]
            if k == READ:
                ok, new = state == avals[i], state
            elif k == WRITE:
                ok, new = not must_observe, avals[i]
            else:
                ok, new = state == avals[i], bvals[i]
            if ok:
                nl = linearized | bits[i]
                observe = infos[i] and k != READ
                key = (nl, new, observe)
                if key not in cache:
                    cache.add(key)
                    stack.append((i, state, must_observe))
                    linearized = nl
                    state = new
                    must_observe = observe
                    # lift: unlink the call entry and, if any, the return entry
                    c = call_e[i]
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    if not infos[i]:
                        r = ret_e[i]
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        remaining -= 1
                    e = nxt[0]
                    continue
            e = nxt[e]
        else:
            # Reached the return of an op not yet linearized: this branch is stuck.
            if len(stack) > best_depth:
                best_depth = len(stack)
                best = (i, state, [s[0] for s in stack[-3:]])
            if not stack:
                break
            j, state, must_observe = stack.pop()
            linearized ^= bits[j]
            # unlift in reverse order of the lift
            if not infos[j]:
                r = ret_e[j]
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                remaining += 1
            c = call_e[j]
            nxt[prv[c]] = c
            prv[nxt[c]] = c
            e = nxt[c]
    result["steps"] = steps
    if remaining:
        result["linearizable"] = False
        result["explanation"] = _explain(ops, best, initial)
    return result


def _explain(ops: list[RegOp], best, initial) -> str:
    """Say where the search got stuck: the op, the value it found, and the ops concurrent with it."""
    stuck, state, last = best
    op = ops[stuck]
    lines = []
    written = {o.a for o in ops if o.kind == WRITE} | {o.b for o in ops if o.kind == CAS}
    if op.kind == READ and op.a not in written and op.a != initial:
        lines.append(f"it read {op.a!r}, a value no ok or unknown-outcome write or cas ever wrote")
    elif op.kind == CAS and op.a not in written and op.a != initial:
        lines.append(f"its cas expected {op.a!r}, a value no ok or unknown-outcome write or cas ever wrote")
    src = op.src
    if src is not None and src.p == "final":
        lines.append("this is the final read after heal: an acknowledged write may have been lost")
    head = (
        f"cannot linearize {op.describe()}: in the longest linearizable prefix found "
        f"({len(last) and 'last: ' + '; '.join(ops[j].describe() for j in last) or 'empty'}) "
        f"the register held {state!r}"
    )
    if op.kind in (READ, CAS):
        writers = [o for o in ops if (o.a if o.kind == WRITE else o.b) == op.a and o.kind != READ]
        if writers:
            lines.append("the value it needed was written by " + "; ".join(o.describe() for o in writers[:3]))
    # Ops overlapping the stuck one: ok ops first, then unknown-outcome ops invoked most recently.
    overlapping = [o for k, o in enumerate(ops) if k != stuck and o.inv <= op.ret and op.inv <= o.ret]
    done = sorted((o for o in overlapping if not o.info), key=lambda o: o.inv)
    pending = sorted((o for o in overlapping if o.info), key=lambda o: -o.inv)
    shown = (done + pending)[:8]
    body = [head] + lines
    if shown:
        more = f" (and {len(overlapping) - len(shown)} more)" if len(overlapping) > len(shown) else ""
        body.append("concurrent ops" + more + ": " + "; ".join(o.describe() for o in shown))
    else:
        body.append("no op was concurrent with it")
    return "\n  ".join(body)


# --------------------------------------------------------------------------------------------------
# The other checks


def _limit(messages: list[str], what: str) -> list[str]:
    if len(messages) <= MAX_MESSAGES_PER_CHECK:
        return messages
    extra = len(messages) - MAX_MESSAGES_PER_CHECK
    return messages[:MAX_MESSAGES_PER_CHECK] + [f"... and {extra} more {what}"]


def _seq_number(path: Any) -> int | None:
    if not isinstance(path, str) or len(path) < SEQ_DIGITS:
        return None
    tail = path[-SEQ_DIGITS:]
    return int(tail) if tail.isdigit() else None


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def check_creates(ops: list[Op], final: dict) -> tuple[dict, list[str]]:
    """Acknowledged creates present at the end; failed ones absent; unknown ones counted."""
    violations: list[str] = []
    creates = [o for o in ops if o.f == "create"]
    seqs = [o for o in ops if o.f == "create_seq"]
    out: dict[str, Any] = {}

    by_path: dict[Any, list[Op]] = defaultdict(list)
    for o in creates:
        by_path[_hashable(o.inv_value)].append(o)
    for path, os_ in by_path.items():
        oks = [o for o in os_ if o.type == "ok"]
        if len(oks) > 1:
            violations.append(f"create {path!r} acknowledged {len(oks)} times: " + "; ".join(o.describe() for o in oks))

    unique = final.get("unique_children")
    if isinstance(unique, list):
        present = set(_hashable(p) for p in unique)
        lost = [o for o in creates if o.type == "ok" and _hashable(o.inv_value) not in present]
        failed_happened = [o for o in creates if o.type == "fail" and _hashable(o.inv_value) in present
                           and not any(x.type != "fail" for x in by_path[_hashable(o.inv_value)])]
        info_happened = {
            _hashable(o.inv_value) for o in creates if o.type == "info" and _hashable(o.inv_value) in present
        }
        phantom = sorted(str(p) for p in present if p not in by_path)
        violations += [f"acknowledged create lost: {o.describe()} is not in the final listing" for o in lost]
        violations += [f"failed create happened: {o.describe()} is in the final listing" for o in failed_happened]
        violations += [f"znode {p!r} is in the final listing but no create of it was ever invoked" for p in phantom]
        out.update(lost=len(lost), failed_but_present=len(failed_happened), info_present=len(info_happened),
                   phantom=len(phantom))
    out["ok"] = sum(1 for o in creates if o.type == "ok")
    out["info"] = sum(1 for o in creates if o.type == "info")

    seq_children = final.get("seq_children")
    ok_seqs = [o for o in seqs if o.type == "ok"]
    out["seq_ok"] = len(ok_seqs)
    out["seq_info"] = sum(1 for o in seqs if o.type == "info")
    if isinstance(seq_children, list):
        present = set(_hashable(p) for p in seq_children)
        returned = {_hashable(o.value) for o in ok_seqs}
        lost = [o for o in ok_seqs if _hashable(o.value) not in present]
        violations += [f"acknowledged create_seq lost: {o.describe()} is not in the final listing" for o in lost]
        # Children nobody was told about come from info (allowed) or failed (not allowed) create_seqs.
        unexplained = [p for p in present if p not in returned]
        prefixes = Counter(_hashable(o.inv_value) for o in seqs if o.type == "info")
        by_prefix: dict[Any, list] = defaultdict(list)
        for p in unexplained:
            prefix = p[:-SEQ_DIGITS] if isinstance(p, str) and _seq_number(p) is not None else None
            by_prefix[prefix].append(p)
        info_present = 0
        for prefix, paths in sorted(by_prefix.items(), key=lambda kv: str(kv[0])):
            allowed = prefixes.get(prefix, 0)
            info_present += min(allowed, len(paths))
            if len(paths) > allowed:
                sample = ", ".join(sorted(str(p) for p in paths)[:5])
                violations.append(
                    f"{len(paths)} sequential znode(s) with prefix {prefix!r} exist at the end but no ok "
                    f"create_seq returned them and only {allowed} create_seq(s) with that prefix had an "
                    f"unknown outcome: a failed create_seq happened or a znode appeared from nowhere ({sample})"
                )
        out.update(seq_lost=len(lost), seq_info_present=info_present)
    return out, violations


def check_sequence(ops: list[Op], final: dict) -> tuple[dict, list[str]]:
    """Sequence numbers of ok create_seq: unique per parent, increasing in real-time order."""
    violations: list[str] = []
    by_parent: dict[str, list[tuple[Op, int]]] = defaultdict(list)
    for o in ops:
        if o.f != "create_seq" or o.type != "ok":
            continue
        n = _seq_number(o.value)
        if n is None:
            violations.append(f"create_seq returned a path without a {SEQ_DIGITS}-digit sequence number: {o.describe()}")
            continue
        by_parent[_parent(o.value)].append((o, n))

    dup_msgs, order_msgs = [], []
    for parent, items in sorted(by_parent.items()):
        counts = Counter(n for _, n in items)
        for n, c in sorted(counts.items()):
            if c > 1:
                who = "; ".join(o.describe() for o, k in items if k == n)
                dup_msgs.append(f"sequence number {n} under {parent} returned {c} times: {who}")
        # Sweep: ops in invoke order; fold in every op that completed strictly before the invoke.
        by_ret = sorted(items, key=lambda x: x[0].ret)
        k = 0
        top: tuple[Op, int] | None = None
        for o, n in sorted(items, key=lambda x: x[0].inv):
            while k < len(by_ret) and by_ret[k][0].ret < o.inv:
                if top is None or by_ret[k][1] > top[1]:
                    top = by_ret[k]
                k += 1
            if top is not None and n <= top[1] and top[0] is not o:
                order_msgs.append(
                    f"sequence number out of real-time order under {parent}: {o.describe()} got {n}, but "
                    f"{top[0].describe()} completed before it was invoked and got {top[1]}"
                )
    listing = final.get("seq_children")
    if isinstance(listing, list):
        seen: dict[tuple[str, int], str] = {}
        for p in listing:
            n = _seq_number(p)
            if n is None:
                continue
            key = (_parent(p), n)
            if key in seen and seen[key] != p:
                dup_msgs.append(f"final listing holds two children with sequence number {n}: {seen[key]} and {p}")
            seen[key] = p
    violations += _limit(dup_msgs, "duplicate sequence numbers") + _limit(order_msgs, "out-of-order sequence numbers")
    report = {"ok": sum(len(v) for v in by_parent.values()), "duplicates": len(dup_msgs), "out_of_order": len(order_msgs)}
    return report, violations


def check_ephemerals(final: dict) -> tuple[dict, list[str]]:
    """Owners' ephemerals at the end match their fate; no ephemeral without a live owner."""
    violations: list[str] = []
    owners = final.get("owners")
    ephemerals = final.get("ephemerals")
    if not isinstance(owners, list) or not isinstance(ephemerals, list):
        return {"checked": False}, violations
    eph_by_path: dict[Any, list] = defaultdict(list)
    for e in ephemerals:
        if isinstance(e, dict):
            eph_by_path[_hashable(e.get("path"))].append(_hashable(e.get("owner")))
    alive_sessions = {}
    for o in owners:
        if not isinstance(o, dict):
            continue
        fate, path, session = o.get("fate"), _hashable(o.get("path")), _hashable(o.get("session"))
        who = f"owner {o.get('p')!r} (session {session}, path {path})"
        if fate == "alive":
            alive_sessions[session] = path
            holders = eph_by_path.get(path, [])
            if not holders:
                violations.append(f"ephemeral of live {who} is missing at the end")
            elif session not in holders:
                violations.append(f"ephemeral of live {who} is owned by session(s) {holders} at the end")
        elif fate in ("killed", "paused_past_timeout"):
            if path in eph_by_path:
                violations.append(
                    f"ephemeral of {fate} {who} still exists at the end (owner {eph_by_path[path]}); it "
                    f"should have gone by t={o.get('gone_by')}"
                )
    for e in ephemerals:
        if not isinstance(e, dict):
            continue
        path, owner = _hashable(e.get("path")), _hashable(e.get("owner"))
        if owner not in alive_sessions:
            violations.append(f"ephemeral {path} at the end belongs to session {owner}, which is no live owner")
        elif alive_sessions[owner] != path:
            violations.append(f"ephemeral {path} belongs to session {owner}, whose owner created {alive_sessions[owner]}")
    return {"checked": True, "owners": len(owners), "ephemerals": len(ephemerals)}, violations


def check_replicas(final: dict) -> tuple[dict, list[str]]:
    replicas = final.get("replicas")
    if not isinstance(replicas, dict) or not replicas:
        return {"checked": False}, []
    groups: dict[str, list[str]] = defaultdict(list)
    for node, digest in sorted(replicas.items()):
        groups[json.dumps(digest, sort_keys=True)].append(node)
    if len(groups) == 1:
        return {"checked": True, "identical": True}, []
    desc = "; ".join(f"{', '.join(nodes)}: {digest}" for digest, nodes in groups.items())
    return {"checked": True, "identical": False}, [f"replicas differ: {desc}"]


def count(events: list[dict], ops: list[Op]) -> dict:
    by_f: dict[str, dict[str, int]] = defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0})
    for o in ops:
        by_f[str(o.f)][o.type] += 1
    casualties: dict[str, list[dict]] = defaultdict(list)
    nemesis: Counter = Counter()
    for e in events:
        if e.get("type") == "casualty":
            casualties[str(e.get("kind", "other"))].append(
                {"t": e.get("t"), "p": e.get("p"), "detail": e.get("detail")})
        elif e.get("type") == "nemesis":
            nemesis[str(e.get("f"))] += 1
    return {
        "by_f": {f: dict(v) for f, v in sorted(by_f.items())},
        "acknowledged_register_ops": sum(1 for o in ops if o.f in REGISTER_FS and o.type == "ok" and o.p != "final"),
        "final_reads": sum(1 for o in ops if o.f in READ_FS and o.type == "ok" and o.p == "final"),
        "unknown_outcomes": sum(1 for o in ops if o.type == "info"),
        "casualties": {k: {"count": len(v), "details": v} for k, v in sorted(casualties.items())},
        "nemesis": dict(sorted(nemesis.items())),
    }


# --------------------------------------------------------------------------------------------------
# Everything


def _with_final_reads(events: list[dict], final: dict, warnings: list[str]) -> list[dict]:
    """Append final.json's reads as ok reads of process "final" for keys the history lacks them for."""
    reads = final.get("reads")
    if not isinstance(reads, dict) or not reads:
        return events
    have = {e.get("key") for e in events if e.get("p") == "final" and e.get("type") == "ok"}
    missing = {k: v for k, v in reads.items() if k not in have}
    if not missing:
        return events
    times = [t for t in (_num(e.get("t")) for e in events) if t is not None]
    t = (max(times) if times else 0.0) + 1.0
    extra = []
    for k, v in sorted(missing.items()):
        extra.append({"t": t, "p": "final", "type": "invoke", "f": "sync_read", "key": k, "value": None})
        extra.append({"t": t + 0.5, "p": "final", "type": "ok", "f": "sync_read", "key": k, "value": v})
        t += 1.0
    warnings.append(f"final reads of {len(missing)} key(s) were not in the history; appended after its end")
    return events + extra


def check_plain_reads(ops: list) -> list[str]:
    """Plain reads may be stale, but never show a value no write or cas of that key had been invoked
    to write before the read returned (nor a value of another key)."""
    invoked: dict[Any, list[tuple[float, Any]]] = defaultdict(list)
    for o in ops:
        if o.f == "write":
            invoked[o.key].append((o.inv, o.inv_value))
        elif o.f == "cas" and isinstance(o.inv_value, (list, tuple)) and len(o.inv_value) == 2:
            invoked[o.key].append((o.inv, o.inv_value[1]))
    out = []
    for o in ops:
        if o.f != "read" or o.type != "ok" or o.value is None:
            continue
        if not any(v == o.value and t <= o.ret for t, v in invoked[o.key]):
            out.append(
                f"key {o.key}: {o.p} read {o.value!r} at {o.ret:.3f}, a value no write or cas "
                "of that key was invoked to write before then"
            )
    if len(out) > MAX_MESSAGES_PER_CHECK:
        out = out[:MAX_MESSAGES_PER_CHECK] + [f"... and {len(out) - MAX_MESSAGES_PER_CHECK} more plain reads"]
    return out


def check(events: list[dict], final: dict | None = None, max_steps: int = DEFAULT_MAX_STEPS) -> dict:
    """Judge a run. Returns the JSON-serialisable report described in the module doc."""
    warnings: list[str] = []
    if final is None:
        final = {}
    elif not isinstance(final, dict):
        warnings.append(f"final observations are not a JSON object ({type(final).__name__}); ignored")
        final = {}
    violations: list[str] = []
    events = [e for e in events if isinstance(e, dict)]
    events = _with_final_reads(events, final, warnings)
    ops = pair_operations(events, warnings)

    per_key: dict[Any, list[Op]] = defaultdict(list)
    for o in ops:
        if o.f in LINEARIZABLE_FS:
            per_key[o.key].append(o)
    violations += check_plain_reads(ops)
    keys_report = {}
    overall: Any = True
    for key in sorted(per_key, key=str):
        reg = register_ops(per_key[key], warnings)
        writes = Counter(o.a for o in reg if o.kind == WRITE)
        writes.update(o.b for o in reg if o.kind == CAS)
        dups = [v for v, c in writes.items() if c > 1]
        if dups:
            warnings.append(f"key {key}: values written more than once {dups[:5]}; the harness should write unique values")
        r = check_register(reg, None, max_steps)
        r["ok_ops"] = sum(1 for o in per_key[key] if o.type == "ok")
        r["info_ops"] = sum(1 for o in per_key[key] if o.type == "info")
        keys_report[str(key)] = r
        if r["linearizable"] is False:
            overall = False
            violations.append(f"key {key} is not linearizable: {r['explanation']}")
        elif r["linearizable"] == "unknown":
            if overall is True:
                overall = "unknown"
            warnings.append(f"key {key}: linearizability unknown: {r['explanation']}")

    creates, v = check_creates(ops, final)
    violations += v
    sequence, v = check_sequence(ops, final)
    violations += v
    ephemerals, v = check_ephemerals(final)
    violations += v
    replicas, v = check_replicas(final)
    violations += v

    return {
        "valid": not violations,
        "linearizable": overall,
        "keys": keys_report,
        "creates": creates,
        "sequence": sequence,
        "ephemerals": ephemerals,
        "replicas": replicas,
        "counts": count(events, ops),
        "violations": violations,
        "warnings": warnings,
    }


def summary(report: dict) -> str:
    """A human-readable summary of a report."""
    lines = []
    verdict = "VALID" if report["valid"] else "INVALID"
    if report["valid"] and report["linearizable"] == "unknown":
        verdict += " (but linearizability of some keys is unknown: the search budget ran out)"
    lines.append(verdict)
    c = report["counts"]
    lines.append(
        f"acknowledged register ops: {c['acknowledged_register_ops']}, final reads: {c['final_reads']}, "
        f"unknown outcomes: {c['unknown_outcomes']}"
    )
    for f, t in c["by_f"].items():
        lines.append(f"  {f:<11} ok {t['ok']:>6}  fail {t['fail']:>6}  info {t['info']:>6}")
    for key, r in report["keys"].items():
        lines.append(
            f"  key {key}: linearizable={r['linearizable']} "
            f"({r['ok_ops']} ok, {r['info_ops']} info, {r['steps']} steps)"
        )
    if c["nemesis"]:
        lines.append("nemesis: " + ", ".join(f"{f} x{n}" for f, n in c["nemesis"].items()))
    for kind, cas in c["casualties"].items():
        lines.append(f"casualties {kind}: {cas['count']}")
        for d in cas["details"][:5]:
            lines.append(f"  t={d['t']} {d['p']}: {d['detail']}")
    for w in report["warnings"]:
        lines.append("warning: " + w)
    for v in report["violations"]:
        lines.append("VIOLATION: " + v)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Judge a fault-suite run: RUN_DIR/history.jsonl and RUN_DIR/final.json.")
    ap.add_argument("run_dir")
    ap.add_argument("--json", action="store_true", help="print the JSON report instead of a summary")
    ap.add_argument("--strict", action="store_true", help="exit 1 also when linearizability is unknown")
    ap.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="search budget per key")
    args = ap.parse_args(argv)
    try:
        events = load_history(os.path.join(args.run_dir, "history.jsonl"))
        final = load_final(os.path.join(args.run_dir, "final.json"))
    except InputError as e:
        print(f"checker: {e}", file=sys.stderr)
        return 2
    report = check(events, final, max_steps=args.max_steps)
    print(json.dumps(report, indent=1, sort_keys=True) if args.json else summary(report))
    if not report["valid"]:
        return 1
    if args.strict and report["linearizable"] != True:  # noqa: E712 (True, False or "unknown")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
