"""A request's answer: its predictions in request order, with how the cache took part."""

from __future__ import annotations

from caching.core.codec import CachedPrediction
from caching.core.computing import Answers
from caching.core.spec import HIT, MISS, PARTIAL, STALE, Prediction, common


def hit_prediction(fresh: dict[str, CachedPrediction], digests: list[str], now: float) -> Prediction:
    """The answer when every instance was found fresh (most requests): kept short."""
    count = len(digests)
    if len(fresh) == 1:  # one instance, or one repeated: no list of entries to go through
        (entry,) = fresh.values()
        return Prediction(
            [entry.prediction] * count,
            HIT,
            count,
            0,
            entry.model_version_id,
            entry.deployed_model_id,
            age=int(max(0.0, now - entry.created_at)),
        )
    served = [fresh[digest] for digest in digests]
    return Prediction(
        [entry.prediction for entry in served],
        HIT,
        count,
        0,
        common([entry.model_version_id for entry in served]),
        common([entry.deployed_model_id for entry in served]),
        age=int(max(0.0, now - min(entry.created_at for entry in fresh.values()))),
    )


def merged_prediction(
    answers: Answers, digests: list[str], first_index: dict[str, int], now: float
) -> Prediction:
    """The answer of a request that computed some instances, or served some stale."""
    computed = set(answers.computed)
    misses = sum(1 for digest in digests if digest in computed)
    hits = len(digests) - misses
    served = [answers.entry(digest) for digest in digests]
    from_cache = [answers.entry(d) for d in first_index if d not in computed]
    stale = sum(1 for d in digests if d in answers.stale or (d in answers.fallback and d not in computed))
    stale_served = stale > 0
    status = STALE if stale_served else (HIT if not misses else (MISS if not hits else PARTIAL))
    return Prediction(
        predictions=[entry.prediction for entry in served],
        cache_status=status,
        hits=hits,
        misses=misses,
        # Entries written at different times may come from different model versions:
        # report a version only when every prediction in the answer shares it.
        model_version_id=common([entry.model_version_id for entry in served]),
        deployed_model_id=common([entry.deployed_model_id for entry in served]),
        stored=answers.stored,
        version_change=answers.version_change,
        age=int(max(entry.age(now) for entry in from_cache)) if from_cache else None,
        stale=stale,
    )
