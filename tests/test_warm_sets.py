"""Warm sets from JSONL and CSV files: read strictly, every bad line named, nothing stored from a bad file."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from caching.models import WarmRun, WarmSet
from caching.services.warm_sets import WarmFileInvalid, warm_file_parse

pytestmark = pytest.mark.django_db

GOOD_JSONL = b'{"x": 1}\n\n[1, 2]\n"text"\n'
# Line 2: not JSON; 4: NaN; 5: an integer past 64 bits; 6: nested past PREDCACHE_MAX_DEPTH.
BAD_JSONL = b'{"x": 1}\n{"x": \n[1]\nNaN\n{"id": 123456789012345678901234}\n' + b"[" * 40 + b"]" * 40 + b"\n"
GOOD_CSV = b'sepal,species,note,count\n5.1,setosa,"a, quoted",3\n-0.5,007,,1e3\n'
# Line 3: a missing value; line 4: an integer past 64 bits; line 1 of the header is fine.
BAD_CSV = b"a,b\n1,2\n3\n4,123456789012345678901234\n5,6\n"


def test_jsonl_one_instance_a_line_blank_lines_skipped():
    assert warm_file_parse(data=GOOD_JSONL, name="top.jsonl") == [{"x": 1}, [1, 2], "text"]


def test_csv_rows_are_objects_with_numbers_where_they_are_json_numbers():
    assert warm_file_parse(data=GOOD_CSV, name="top.csv") == [
        {"sepal": 5.1, "species": "setosa", "note": "a, quoted", "count": 3},
        {"sepal": -0.5, "species": "007", "note": None, "count": 1000.0},
    ]


def test_every_bad_jsonl_line_is_named():
    with pytest.raises(WarmFileInvalid) as caught:
        warm_file_parse(data=BAD_JSONL, name="bad.jsonl")
    assert [error.line for error in caught.value.errors] == [2, 4, 5, 6]
    message = str(caught.value)
    assert message.startswith("bad.jsonl: line 2: not valid JSON")
    assert "line 5: integer 123456789012345678901234 is out of range" in message
    assert "line 6: value is nested deeper than 32 levels" in message


def test_every_bad_csv_line_is_named():
    with pytest.raises(WarmFileInvalid) as caught:
        warm_file_parse(data=BAD_CSV, name="bad.csv")
    assert [str(error) for error in caught.value.errors] == [
        "line 3: 1 values, but the header names 2 fields",
        "line 4: integer 123456789012345678901234 is out of range (-2**63 to 2**64-1)",
    ]


@pytest.mark.parametrize(
    "data,message",
    [
        (b"a,a\n1,2\n", "line 1: the header names 'a' more than once"),
        (b"a,\n1,2\n", "line 1: the header has an empty field name"),
        (b'a\n"unclosed\n', "not valid CSV"),
        (b"a\n\xff\n", "line 2: not UTF-8 text"),
        (b"\n\n", "no instances"),
    ],
)
def test_broken_csv_files(data, message):
    with pytest.raises(WarmFileInvalid, match=message):
        warm_file_parse(data=data, name="set.csv")


def test_a_file_over_the_size_limit_is_refused(settings):
    settings.PREDCACHE_WARM_MAX_INSTANCES = 3
    with pytest.raises(WarmFileInvalid, match=r"more than 3 instances \(PREDCACHE_WARM_MAX_INSTANCES\)"):
        warm_file_parse(data=b"1\n2\n3\n4\n", name="big.jsonl")


# --- the CLI ----------------------------------------------------------------------------------


def test_warmset_add_then_replace_then_list(http_model, tmp_path, capsys):
    first = tmp_path / "top.jsonl"
    first.write_bytes(GOOD_JSONL)
    call_command("predcache", "warmset", "add", "echo", "top", "--file", str(first), "--every", "300")
    assert "created warm set top of echo: 3 instances, every 300 s" in capsys.readouterr().out

    second = tmp_path / "top.csv"
    second.write_bytes(GOOD_CSV)
    call_command(
        "predcache", "warmset", "add", "echo", "top", "--file", str(second), "--parameters", '{"k": 2}'
    )
    assert "replaced warm set top of echo: 2 instances, every 300 s" in capsys.readouterr().out
    warm_set = WarmSet.objects.get(model=http_model, name="top")
    assert (warm_set.parameters, warm_set.instances[1]["species"]) == ({"k": 2}, "007")

    WarmRun.objects.create(model=http_model, warm_set=warm_set, source="warm set top", requested_by="t")
    WarmRun.objects.filter(warm_set=warm_set).update(status="finished", total=2, done=2, computed=2)
    call_command("predcache", "warmset", "list", "echo")
    header, row = capsys.readouterr().out.strip().splitlines()
    assert (
        " ".join(header.split()) == "MODEL SET INSTANCES SCHEDULE LAST RUN STATUS DONE COMPUTED CACHED ERRORS"
    )
    assert row.split()[:6] == ["echo", "top", "2", "every", "300", "s"]
    assert row.split()[-5:] == ["finished", "2/2", "2", "0", "0"]


@pytest.mark.parametrize("name,data", [("bad.jsonl", BAD_JSONL), ("bad.csv", BAD_CSV)])
def test_warmset_add_refuses_a_bad_file_and_keeps_the_set(http_model, tmp_path, name, data):
    good = tmp_path / "good.jsonl"
    good.write_bytes(GOOD_JSONL)
    call_command("predcache", "warmset", "add", "echo", "top", "--file", str(good))
    bad = tmp_path / name
    bad.write_bytes(data)

    with pytest.raises(CommandError, match=rf"{name}: line \d+: .*; line \d+: "):
        call_command("predcache", "warmset", "add", "echo", "top", "--file", str(bad), "--every", "60")
    with pytest.raises(CommandError, match=rf"{name}: line "):
        call_command("predcache", "warmset", "add", "echo", "other", "--file", str(bad))

    assert list(WarmSet.objects.values_list("name", "instance_count", "every_seconds")) == [("top", 3, None)]


@pytest.mark.parametrize(
    "flags,message",
    [
        (("--every", "5"), "At least 10 seconds"),
        (("--cron", "61 * * * *"), "cron"),
        (("--parameters", "[1]"), "must be a JSON object"),
    ],
)
def test_warmset_add_refuses_bad_settings(http_model, tmp_path, flags, message):
    good = tmp_path / "good.jsonl"
    good.write_bytes(GOOD_JSONL)
    with pytest.raises(CommandError, match=message):
        call_command("predcache", "warmset", "add", "echo", "top", "--file", str(good), *flags)
    assert not WarmSet.objects.exists()


# --- the admin's upload form ------------------------------------------------------------------


def _upload(admin_client, model, name, data, **fields):
    return admin_client.post(
        "/admin/caching/warmset/add/",
        {
            "model": str(model.pk),
            "name": "from-admin",
            "file": SimpleUploadedFile(name, data),
            "parameters": "null",
            "every_seconds": "",
            "cron": "",
            **fields,
        },
    )


def test_admin_upload_stores_the_set(admin_client, http_model):
    response = _upload(admin_client, http_model, "top.csv", GOOD_CSV, every_seconds="600")
    assert response.status_code == 302, response.content[:3000]
    warm_set = WarmSet.objects.get(name="from-admin")
    assert (warm_set.instance_count, warm_set.every_seconds) == (2, 600)

    page = admin_client.get(f"/admin/caching/warmset/{warm_set.pk}/change/")
    assert b"no warm runs yet" in page.content and b"setosa" in page.content
    listing = admin_client.get("/admin/caching/warmset/")
    assert b"from-admin" in listing.content and b"every 600 s" in listing.content


@pytest.mark.parametrize(
    "name,data,lines", [("bad.jsonl", BAD_JSONL, [2, 4, 5, 6]), ("bad.csv", BAD_CSV, [3, 4])]
)
def test_admin_upload_of_a_bad_file_shows_each_line_and_stores_nothing(
    admin_client, http_model, name, data, lines
):
    response = _upload(admin_client, http_model, name, data)
    assert response.status_code == 200
    page = response.content.decode()
    for line in lines:
        assert f"{name}: line {line}: " in page
    assert not WarmSet.objects.exists()


def test_admin_refuses_a_file_of_another_kind_and_parameters_that_are_not_an_object(admin_client, http_model):
    assert b"File extension" in _upload(admin_client, http_model, "top.txt", GOOD_JSONL).content
    refused = _upload(admin_client, http_model, "top.jsonl", GOOD_JSONL, parameters="[1]")
    assert b"The parameters must be a JSON object" in refused.content
    assert not WarmSet.objects.exists()


def test_admin_change_without_a_file_keeps_the_instances(admin_client, http_model):
    assert _upload(admin_client, http_model, "top.jsonl", GOOD_JSONL).status_code == 302
    warm_set = WarmSet.objects.get()
    response = admin_client.post(
        f"/admin/caching/warmset/{warm_set.pk}/change/",
        {"model": str(http_model.pk), "name": "from-admin", "parameters": "null", "cron": "0 5 * * *"},
    )
    assert response.status_code == 302, response.content[:3000]
    warm_set.refresh_from_db()
    assert (warm_set.instance_count, warm_set.cron) == (3, "0 5 * * *")
