"""infra/deploy_model.py: its command line and the aiplatform calls it makes (a fake module, no cloud)."""

from __future__ import annotations

import importlib.util
import sys
import types
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tests.support.processes import REPO

ENDPOINT = "projects/my-proj/locations/us-central1/endpoints/4242"
MODEL = "projects/123456/locations/us-central1/models/77"
IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-3:latest"
REQUIRED = [
    "--project", "my-proj", "--region", "us-central1", "--endpoint", ENDPOINT,
    "--artifact-uri", "gs://my-bucket/iris/", "--display-name", "iris",
]  # fmt: skip


def _load_deploy_model() -> ModuleType:
    # infra/ is a Pulumi program, not a package: load the script by its path.
    spec = importlib.util.spec_from_file_location(
        "predcache_deploy_model", REPO / "infra" / "deploy_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


deploy_model = _load_deploy_model()


class FakeAiplatform:
    """Stands in for google.cloud.aiplatform: records the calls, answers like the SDK."""

    def __init__(self, deployed: list[Any]) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.module = types.ModuleType("google.cloud.aiplatform")
        fake = self

        class Model:
            @staticmethod
            def upload(**kwargs: Any) -> Any:
                fake.calls.append(("Model.upload", kwargs))
                return SimpleNamespace(resource_name=MODEL, version_id="2")

        class Endpoint:
            def __init__(self, endpoint_name: str) -> None:
                fake.calls.append(("Endpoint", endpoint_name))
                self.resource_name = "projects/123456/locations/us-central1/endpoints/4242"

            def deploy(self, **kwargs: Any) -> None:
                fake.calls.append(("Endpoint.deploy", kwargs))

            def list_models(self) -> list[Any]:
                return deployed

        self.module.init = lambda **kwargs: fake.calls.append(("init", kwargs))  # type: ignore[attr-defined]
        self.module.Model = Model  # type: ignore[attr-defined]
        self.module.Endpoint = Endpoint  # type: ignore[attr-defined]


@pytest.fixture
def aiplatform(monkeypatch: pytest.MonkeyPatch) -> FakeAiplatform:
    # An older version of the same model stays deployed beside the new one.
    fake = FakeAiplatform(
        deployed=[
            SimpleNamespace(id="111", model=MODEL, model_version_id="1"),
            SimpleNamespace(id="222", model=f"{MODEL}@2", model_version_id="2"),
        ]
    )
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", fake.module)
    return fake


def test_defaults_and_an_endpoint_id_completed_to_a_resource_name():
    args = deploy_model.parse_args([*REQUIRED[:5], "4242", *REQUIRED[6:]])
    assert args.endpoint == ENDPOINT
    assert (args.machine_type, args.min_replicas, args.max_replicas, args.traffic_percentage) == (
        "n1-standard-2",
        1,
        1,
        100,
    )
    assert args.container_image == deploy_model.DEFAULT_CONTAINER_IMAGE
    assert args.register_as is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--artifact-uri", "/local/dir"], "gs://"),
        (["--min-replicas", "3", "--max-replicas", "2"], "replicas"),
        (["--min-replicas", "0"], "replicas"),
        (["--traffic-percentage", "101"], "between 0 and 100"),
        (["--register-as", "iris"], "--job"),
    ],
)
def test_bad_command_lines_are_refused(extra, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        deploy_model.parse_args([*REQUIRED, *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_uploads_deploys_and_prints_what_predcache_needs(aiplatform, capsys):
    argv = [
        *REQUIRED,
        "--container-image", IMAGE,
        "--machine-type", "n1-standard-4", "--min-replicas", "2", "--max-replicas", "5",
        "--traffic-percentage", "20", "--service-account", "model@my-proj.iam.gserviceaccount.com",
    ]  # fmt: skip
    assert deploy_model.main(argv) == 0
    deployed_model = aiplatform.calls[3][1].pop("model")
    assert deployed_model.resource_name == MODEL  # what Model.upload returned
    assert aiplatform.calls == [
        ("init", {"project": "my-proj", "location": "us-central1"}),
        (
            "Model.upload",
            {
                "display_name": "iris",
                "artifact_uri": "gs://my-bucket/iris/",
                "serving_container_image_uri": IMAGE,
                "parent_model": None,
                "sync": True,
            },
        ),
        ("Endpoint", ENDPOINT),
        (
            "Endpoint.deploy",
            {
                "deployed_model_display_name": "iris",
                "machine_type": "n1-standard-4",
                "min_replica_count": 2,
                "max_replica_count": 5,
                "traffic_percentage": 20,
                "service_account": "model@my-proj.iam.gserviceaccount.com",
                "sync": True,
            },
        ),
    ]
    out = capsys.readouterr().out
    assert f"endpoint:          {ENDPOINT}" in out
    assert f"model:             {MODEL} (version 2)" in out
    assert "deployed model id: 222" in out
    assert f"python manage.py predcache models upsert NAME --backend vertex --target {ENDPOINT}" in out


def test_register_as_runs_the_upsert_in_the_cloud_run_job(aiplatform, monkeypatch, capsys):
    commands: list[list[str]] = []

    def run(command: list[str], check: bool) -> Any:
        commands.append(command)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(deploy_model.subprocess, "run", run)
    assert deploy_model.main([*REQUIRED, "--register-as", "iris", "--job", "predcache-migrate"]) == 0
    assert commands == [
        [
            "gcloud", "run", "jobs", "execute", "predcache-migrate",
            "--project=my-proj", "--region=us-central1", "--wait",
            f"--args=manage.py,predcache,models,upsert,iris,--backend,vertex,--target,{ENDPOINT}",
        ]
    ]  # fmt: skip
    assert f"upsert iris --backend vertex --target {ENDPOINT}" in capsys.readouterr().out


def test_a_model_missing_from_the_endpoint_after_deploy_is_an_error(monkeypatch):
    fake = FakeAiplatform(deployed=[SimpleNamespace(id="111", model=MODEL, model_version_id="1")])
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform", fake.module)
    with pytest.raises(RuntimeError, match="is not among the models deployed"):
        deploy_model.main(REQUIRED)
