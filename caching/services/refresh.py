"""Refresh-ahead: recompute a model's hot entries shortly before they expire; cold ones just expire.

The hot set (sampled on the hit path, see :mod:`caching.core.hotset`) names the requested
entries with the instance and parameters that make each. A sweep reads their headers only,
picks the hot ones within their lead of expiry (spread over the window, see
:mod:`caching.core.refresh`) and recomputes them through the read-through path, as a
``no-cache`` request would: same keys, single-flight, version rules, a fresh TTL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import transaction

from caching.backends.base import BackendError, BackendUnavailable
from caching.core.canonical import InvalidJSON
from caching.core.freshness import ServedState, header_servable
from caching.core.hotset import HotEntry, hot_set_forget, hot_set_read
from caching.core.pacing import Pacer
from caching.core.refresh import COLD, DUE, GONE, NOT_DUE, refresh_decision
from caching.core.spec import CACHE, CacheSpec, Directives
from caching.core.store import Lookup
from caching.models import CachePolicy, ModelEndpoint, WarmSet
from caching.runtime import get_runtime
from caching.selectors import ServedModel, served_model_build
from caching.services.predictions import served_prediction
from caching.services.warm_sets import holds_nul

logger = logging.getLogger(__name__)

# Recompute and store, whatever is cached: the sweep has decided these entries are due.
_RECOMPUTE = Directives(no_cache=True)
# The admin turns at most this many parameter groups of a hot set into warm sets.
HOT_WARM_SETS_MAX = 10


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What one refresh-ahead sweep of a model found and did (also added to its stats)."""

    hot: int = 0  # cached, fresh, and requested since written
    refreshed: int = 0  # recomputed and stored ahead of expiry
    not_due: int = 0  # hot, but not yet within their lead of expiry (or left for the next sweep)
    errors: int = 0  # hot and due, but the model failed or the answer was not stored
    cold: int = 0  # in the hot set, not requested since written: left to expire
    gone: int = 0  # in the hot set, not fresh in the cache (expired, purged, evicted)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_refresh_ahead(*, model: ModelEndpoint, budget_seconds: float = 540.0) -> RefreshOutcome:
    """Recompute ``model``'s hot entries that expire within its refresh-ahead window.

    Paced by the model's warm rate, in batches of its warm batch size, one backend call per
    batch of one parameters; stops starting batches after ``budget_seconds`` (the rest wait
    for the next sweep). Raises CacheUnavailable when Redis does not answer.
    """
    policy = getattr(model, "policy", None) or CachePolicy(model=model)
    if not policy.refresh_ahead_seconds:
        return RefreshOutcome(message=f"refresh-ahead is off for {model.name}")
    if policy.mode != CACHE:
        return RefreshOutcome(message=f"{model.name} is not cached (mode {policy.mode})")
    served = served_model_build(model=model)
    if served.backend is None:
        return RefreshOutcome(message=f"{model.name} is misconfigured: {served.config_error}")
    # A hot entry is in the cache, so it was admitted already: its refresh is stored at once.
    served = dataclasses.replace(served, spec=dataclasses.replace(served.spec, admit_after=1))
    decisions, due = _sweep_decisions(served, window=policy.refresh_ahead_seconds)
    refreshed, errors = _recompute(
        served,
        due,
        rate=policy.warm_rate,
        batch_size=policy.warm_batch_size,
        deadline=time.monotonic() + budget_seconds,
    )
    outcome = RefreshOutcome(
        hot=decisions[DUE] + decisions[NOT_DUE],
        refreshed=refreshed,
        not_due=decisions[NOT_DUE] + len(due) - refreshed - errors,  # due ones the budget left over
        errors=errors,
        cold=decisions[COLD],
        gone=decisions[GONE],
    )
    get_runtime().stats.record(
        served.spec.namespace,
        refresh_runs=1,
        refresh_hot=outcome.hot,
        refreshed=outcome.refreshed,
        refresh_not_due=outcome.not_due,
        refresh_errors=outcome.errors,
        refresh_cold=outcome.cold,
        refresh_gone=outcome.gone,
    )
    return dataclasses.replace(
        outcome,
        message=f"{model.name}: {outcome.hot} hot, {refreshed} refreshed, {outcome.not_due} not due, "
        f"{errors} failed; {outcome.cold} cold and {outcome.gone} gone left to expire",
    )


def _sweep_decisions(served: ServedModel, *, window: int) -> tuple[Counter[str], list[HotEntry]]:
    """What a sweep now does with each entry of the hot set (counted), and the ones due."""
    spec, store = served.spec, get_runtime().store
    hot = _hot_set_verified(served)
    lookup = store.lookup(spec.namespace, spec.model_version, [])  # the generation and version served
    headers = store.entry_headers(spec.namespace, [entry.digest for entry in hot])
    now = time.time()
    decisions: Counter[str] = Counter()
    due = []
    for entry, header in zip(hot, headers, strict=True):
        if header is None or not _servable(spec, lookup, header):
            decision = GONE
        else:
            decision = refresh_decision(
                header=header,
                score=entry.score,
                digest=entry.digest,
                now=now,
                window=window,
                max_age=spec.max_age,
            )
        decisions[decision] += 1
        if decision == DUE:
            due.append(entry)
    return decisions, due


def _hot_set_verified(served: ServedModel) -> list[HotEntry]:
    """The model's hot set, without entries its requests no longer key the same (forgotten).

    A changed key rule or nesting limit gives an instance another digest (or none): its old
    entry will never be read again, and requests sample the new digest themselves.
    """
    runtime = get_runtime()
    spec = served.spec
    kept: list[HotEntry] = []
    strays: list[str] = []
    for group in _by_parameters(hot_set_read(runtime.client, runtime.keyspace, spec.namespace)).values():
        try:
            digests = runtime.cache.instance_digests(spec, [e.instance for e in group], group[0].parameters)
        except InvalidJSON:
            digests = []
        for index, entry in enumerate(group):
            if index < len(digests) and digests[index] == entry.digest:
                kept.append(entry)
            else:
                strays.append(entry.digest)
    hot_set_forget(runtime.client, runtime.keyspace, spec.namespace, strays)
    return kept


def _servable(spec: CacheSpec, lookup: Lookup, header: dict[str, Any]) -> bool:
    """Whether a request would serve the entry of this header (not purged, of the right version)."""
    state = ServedState(lookup.generation, lookup.current_version)
    return header_servable(header, pin=spec.model_version, state=state)


def _recompute(
    served: ServedModel, due: Sequence[HotEntry], *, rate: int | None, batch_size: int, deadline: float
) -> tuple[int, int]:
    """Recompute ``due`` in paced batches of one parameters each; returns (stored, failed)."""
    pacer = Pacer(rate)
    batches = [
        group[start : start + batch_size]
        for group in _by_parameters(due).values()
        for start in range(0, len(group), batch_size)
    ]
    refreshed = errors = 0
    for index, batch in enumerate(batches):
        pacer.wait(len(batch))
        if time.monotonic() + served.spec.backend_timeout > deadline:
            break  # a call started now could outlast the task's time limit
        try:
            prediction = served_prediction(
                served=served,
                instances=[entry.instance for entry in batch],
                parameters=batch[0].parameters,
                directives=_RECOMPUTE,
                client_request=False,
            )
        except BackendUnavailable as exc:  # down or its breaker open: the next sweep tries again
            logger.warning("refresh-ahead of %s stopped: %s", served.name, exc)
            errors += sum(len(rest) for rest in batches[index:])
            break
        except BackendError as exc:
            logger.warning("refresh-ahead of %s: a batch of %d failed: %s", served.name, len(batch), exc)
            errors += len(batch)
            continue
        if prediction.stored:
            refreshed += len(batch)
        else:  # superseded by a newer version, Redis failing, or too large to store
            errors += len(batch)
    return refreshed, errors


def _by_parameters(entries: Sequence[HotEntry]) -> dict[bytes, list[HotEntry]]:
    """``entries`` grouped by their parameters (in order), one backend call's worth each."""
    groups: dict[bytes, list[HotEntry]] = {}
    for entry in entries:
        groups.setdefault(_parameters_key(entry.parameters), []).append(entry)
    return groups


def _parameters_key(parameters: dict[str, Any] | None) -> bytes:
    return orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)


# --- the hot set as warm sets (the admin's action) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class HotWarmSets:
    """Warm sets saved from a model's hot set: (set, created?) each, and hot instances left out."""

    saved: list[tuple[WarmSet, bool]]
    left_out: int = 0


def hot_warm_set_name(parameters: dict[str, Any] | None) -> str:
    """``hot`` for requests without parameters, ``hot-<8 hex digits of the parameters>`` otherwise.

    Named by the parameters, not by rank: saving again replaces the same set (keeping its
    schedule) however the groups' popularity moved.
    """
    if parameters is None:
        return "hot"
    return f"hot-{hashlib.blake2b(_parameters_key(parameters), digest_size=4).hexdigest()}"


def hot_set_warm_sets_save(*, model: ModelEndpoint) -> HotWarmSets:
    """Save ``model``'s hot instances as warm sets, one per distinct parameters, hottest first.

    At most HOT_WARM_SETS_MAX sets (the hottest parameter groups); an existing set of the same
    name gets the new instances and keeps its schedule. Raises CacheUnavailable.
    """
    runtime = get_runtime()
    hot = hot_set_read(runtime.client, runtime.keyspace, runtime.keyspace.namespace(model.pk))
    now, half_life = time.time(), runtime.hot.half_life

    def heat(group: list[HotEntry]) -> float:  # the group's decayed sample count (see hotset)
        return sum(math.exp2(min(60.0, (entry.score - now) / half_life)) for entry in group)

    # A client may send a NUL character; PostgreSQL's jsonb cannot store one: such entries stay out.
    storable = [entry for entry in hot if not holds_nul(entry.instance) and not holds_nul(entry.parameters)]
    groups = sorted(_by_parameters(storable).values(), key=heat, reverse=True)
    saved = []
    with transaction.atomic():
        for group in groups[:HOT_WARM_SETS_MAX]:
            parameters = group[0].parameters
            warm_set, created = WarmSet.objects.update_or_create(
                model=model,
                name=hot_warm_set_name(parameters),
                defaults={"parameters": parameters, "instances": [entry.instance for entry in group]},
            )
            saved.append((warm_set, created))
    return HotWarmSets(saved, left_out=sum(len(group) for group in groups[HOT_WARM_SETS_MAX:]))
