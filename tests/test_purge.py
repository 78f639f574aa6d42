"""Invalidation: instance purges, the purge history, and reclaiming the memory of purged entries."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from caching.models import PurgeRecord, PurgeScope
from caching.runtime import get_runtime
from caching.services import model_cache_purge, model_upsert

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_model(http_model, backend):
    model, _ = model_upsert(name="other", backend="http", target=backend.predict_url)
    return model


def entry_keys(model) -> set[bytes]:
    """The model's entry keys, found the way an operator would: SCAN, never KEYS."""
    runtime = get_runtime()
    pattern = runtime.keyspace.entry(runtime.keyspace.namespace(model.pk), "*")
    return set(runtime.client.scan_iter(match=pattern, count=1000))


def jsonl(tmp_path, *lines: str, name: str = "instances.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def cache_status(api, model: str, instance, parameters=None) -> str:
    document = {"instances": [instance], **({"parameters": parameters} if parameters else {})}
    return api.predict(model, document)["X-Cache"]


def test_an_instance_purge_removes_exactly_those_instances(
    api, backend, http_model, other_model, tmp_path, capsys
):
    api.predict("echo", {"instances": [[1], [2], [3]]})
    api.predict("echo", {"instances": [[1]], "parameters": {"k": 1}})
    api.predict("other", {"instances": [[1], [2]]})
    capsys.readouterr()

    call_command("predcache", "purge", "echo", "--instances", str(jsonl(tmp_path, "[1]", "", "[2]", "[9]")))

    assert capsys.readouterr().out.strip() == "removed 2 cached prediction(s) of 3 instance(s) of echo"
    assert cache_status(api, "echo", [3]) == "HIT"
    assert cache_status(api, "echo", [1], {"k": 1}) == "HIT"  # other parameters: another entry
    assert cache_status(api, "other", [1]) == "HIT"
    assert cache_status(api, "other", [2]) == "HIT"
    backend.reset_calls()
    assert cache_status(api, "echo", [1]) == "MISS"
    assert cache_status(api, "echo", [2]) == "MISS"
    assert cache_status(api, "echo", [1]) == "HIT"
    assert [call["instances"] for call in backend.calls()] == [[[1]], [[2]]]


def test_an_instance_purge_with_parameters_leaves_the_same_instance_without_them(
    api, backend, http_model, tmp_path
):
    api.predict("echo", {"instances": [[1]]})
    api.predict("echo", {"instances": [[1]], "parameters": {"k": 1}})

    path = jsonl(tmp_path, "[1]")
    call_command("predcache", "purge", "echo", "--instances", str(path), "--parameters", '{"k": 1}')

    assert cache_status(api, "echo", [1]) == "HIT"
    assert cache_status(api, "echo", [1], {"k": 1}) == "MISS"


def test_an_instance_purge_is_keyed_like_requests(api, backend, http_model, tmp_path):
    """Key order and number spelling do not matter, as for predict requests."""
    api.predict("echo", {"instances": [{"a": 1, "b": 2.0}]})

    call_command("predcache", "purge", "echo", "--instances", str(jsonl(tmp_path, '{"b": 2, "a": 1.0}')))

    assert cache_status(api, "echo", {"a": 1, "b": 2.0}) == "MISS"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--parameters", "{}"), "--parameters goes with --instances"),
        (("--instances", "EMPTY"), "no instances"),
        (("--instances", "BAD"), r"instances\.jsonl: line 1: "),
        (("--instances", "GOOD", "--parameters", "[1]"), "must be a JSON object"),
    ],
)
def test_cli_instance_purge_errors(http_model, tmp_path, args, message):
    files = {
        "EMPTY": jsonl(tmp_path, "", name="empty.jsonl"),
        "GOOD": jsonl(tmp_path, "[1]", name="good.jsonl"),
        "BAD": jsonl(tmp_path, "{oops", name="instances.jsonl"),
    }
    resolved = [str(files.get(arg, arg)) for arg in args]
    with pytest.raises(CommandError, match=message):
        call_command("predcache", "purge", "echo", *resolved)
    assert not PurgeRecord.objects.exists()


def test_version_and_instances_are_exclusive(http_model, tmp_path):
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command(
            "predcache", "purge", "echo", "--version", "1", "--instances", str(jsonl(tmp_path, "[1]"))
        )


def test_purges_are_recorded_with_who_and_what(api, backend, http_model, tmp_path, capsys):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1], [2]]})

    call_command("predcache", "purge", "echo", "--instances", str(jsonl(tmp_path, "[1]", "[5]")))
    call_command("predcache", "purge", "echo", "--version", "dm-a", "--no-reclaim")
    model_cache_purge(model=http_model, requested_by="schedule", reclaim=False)

    schedule, version, instances = PurgeRecord.objects.all()  # newest first
    assert (instances.scope, instances.requested_by, instances.instances, instances.entries_removed) == (
        PurgeScope.INSTANCES,
        "cli",
        2,
        1,
    )
    assert (version.scope, version.version, version.requested_by, version.entries_removed) == (
        PurgeScope.VERSION,
        "dm-a",
        "cli",
        None,
    )
    assert (schedule.scope, schedule.version, schedule.requested_by) == (PurgeScope.MODEL, "", "schedule")
    assert all(record.model == http_model and record.requested_at for record in (schedule, version))


def test_a_refused_or_retired_version_purge_is_not_recorded(api, backend, http_model):
    backend.control(modelVersionId="1", deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[2]]})

    with pytest.raises(CommandError, match="has not seen version"):
        call_command("predcache", "purge", "echo", "--version", "dm-z")
    outcome = model_cache_purge(model=http_model, model_version="dm-a", requested_by="cli")

    assert outcome.record is None and "retired" in outcome.message
    assert not PurgeRecord.objects.exists()


def test_cli_purge_reclaims_the_purged_entries_at_once(api, backend, http_model, other_model, capsys):
    api.predict("echo", {"instances": [[1], [2], [3]]})
    api.predict("other", {"instances": [[1], [2]]})
    assert len(entry_keys(http_model)) == 3
    capsys.readouterr()

    call_command("predcache", "purge", "echo")

    assert capsys.readouterr().out.splitlines() == [
        "purged every cached prediction of echo",
        "freed 3 unreachable cached prediction(s) of echo",
    ]
    assert entry_keys(http_model) == set()
    assert len(entry_keys(other_model)) == 2
    record = PurgeRecord.objects.get()
    assert (record.entries_reclaimed, record.reclaimed_at is not None) == (3, True)


def test_reclaim_frees_purged_entries_and_keeps_live_ones(api, backend, http_model, other_model, capsys):
    api.predict("echo", {"instances": [[1], [2], [3]]})
    api.predict("other", {"instances": [[1], [2]]})
    other_keys = entry_keys(other_model)

    call_command("predcache", "purge", "echo", "--no-reclaim")
    api.predict("echo", {"instances": [[7], [8]]})  # written after the purge: live
    assert len(entry_keys(http_model)) == 5  # the purged three linger until their TTL
    capsys.readouterr()

    call_command("predcache", "reclaim", "echo")

    assert capsys.readouterr().out.strip() == "freed 3 unreachable cached prediction(s) of echo"
    assert len(entry_keys(http_model)) == 2
    assert entry_keys(other_model) == other_keys
    backend.reset_calls()
    assert api.predict("echo", {"instances": [[7], [8]]})["X-Cache"] == "HIT"
    assert api.predict("other", {"instances": [[1], [2]]})["X-Cache"] == "HIT"
    assert PurgeRecord.objects.get().entries_reclaimed == 3


def test_reclaim_frees_the_entries_of_a_version_the_cache_no_longer_follows(api, backend, http_model):
    # A version name long enough that the header does not fit in the bytes first read.
    old = "v" * 700
    backend.control(modelVersionId=old, deployedModelId="dm-a")
    api.predict("echo", {"instances": [[1], [2]]})
    backend.control(modelVersionId="2", deployedModelId="dm-b")
    api.predict("echo", {"instances": [[3]]})  # the cache now follows dm-b/2

    call_command("predcache", "reclaim", "echo")

    assert len(entry_keys(http_model)) == 1
    assert api.predict("echo", {"instances": [[3]]})["X-Cache"] == "HIT"


def test_reclaim_leaves_values_it_cannot_decode(api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})
    runtime = get_runtime()
    foreign = runtime.keyspace.entry(runtime.keyspace.namespace(http_model.pk), "f" * 32)
    runtime.client.set(foreign, b"\x09not ours", ex=60)
    model_cache_purge(model=http_model, requested_by="cli", reclaim=False)

    freed = runtime.store.reclaim(runtime.keyspace.namespace(http_model.pk), lambda header: False, batch=1)

    assert freed == 1
    assert entry_keys(http_model) == {foreign.encode()}


def test_reclaim_of_every_model_and_the_records_it_completes(api, backend, http_model, other_model, capsys):
    api.predict("echo", {"instances": [[1], [2]]})
    api.predict("other", {"instances": [[1]]})
    first = model_cache_purge(model=http_model, requested_by="cli", reclaim=False).record
    second = model_cache_purge(model=http_model, requested_by="cli", reclaim=False).record
    model_cache_purge(model=other_model, requested_by="cli", reclaim=False)
    capsys.readouterr()

    call_command("predcache", "reclaim")

    assert capsys.readouterr().out.splitlines() == [
        "freed 2 unreachable cached prediction(s) of echo",
        "freed 1 unreachable cached prediction(s) of other",
    ]
    first.refresh_from_db()
    second.refresh_from_db()
    # One walk cannot tell which purge made an entry unreachable: the newest carries the count.
    assert (second.entries_reclaimed, first.entries_reclaimed) == (2, None)
    assert first.reclaimed_at is not None and second.reclaimed_at is not None


def test_admin_purge_action_records_the_user(admin_client, admin_user, api, backend, http_model):
    api.predict("echo", {"instances": [[1]]})

    # "post": the admin's confirmation page posts it; the action's first POST only asks.
    admin_client.post(
        "/admin/caching/modelendpoint/",
        {"action": "purge_cache", "post": "yes", "_selected_action": [http_model.pk]},
        follow=True,
    )

    record = PurgeRecord.objects.get()
    assert (record.scope, record.requested_by) == (PurgeScope.MODEL, admin_user.username)


def test_admin_shows_the_purge_history(admin_client, api, backend, http_model, tmp_path):
    api.predict("echo", {"instances": [[1]]})
    call_command("predcache", "purge", "echo", "--instances", str(jsonl(tmp_path, "[1]")))
    call_command("predcache", "purge", "echo")

    changelist = admin_client.get("/admin/caching/purgerecord/")
    assert changelist.status_code == 200
    assert changelist.content.count(b"specific instances") >= 1
    assert b"whole model" in changelist.content
    filtered = admin_client.get(
        f"/admin/caching/purgerecord/?scope=instances&model__id__exact={http_model.pk}"
    )
    assert filtered.status_code == 200
    assert b"1 purge record" in filtered.content

    record = PurgeRecord.objects.first()
    detail = admin_client.get(f"/admin/caching/purgerecord/{record.pk}/change/")
    assert detail.status_code == 200
    assert b'name="requested_by"' not in detail.content  # read-only
    assert admin_client.get("/admin/caching/purgerecord/add/").status_code == 403

    model_page = admin_client.get(f"/admin/caching/modelendpoint/{http_model.pk}/change/")
    assert b"2 recorded" in model_page.content
    assert f"/admin/caching/purgerecord/?model__id__exact={http_model.pk}".encode() in model_page.content


def test_a_model_with_purge_records_can_still_be_deleted_in_the_admin(admin_client, api, http_model):
    model_cache_purge(model=http_model, requested_by="cli", reclaim=False)

    response = admin_client.post(f"/admin/caching/modelendpoint/{http_model.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not PurgeRecord.objects.exists()
