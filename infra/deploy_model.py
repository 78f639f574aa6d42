"""Upload a model to Vertex AI and deploy it to the stack's endpoint (no Pulumi resource does this).

    .venv/bin/python infra/deploy_model.py --project P --region us-central1 \\
        --endpoint "$(pulumi -C infra stack output vertex_endpoint)" \\
        --artifact-uri gs://BUCKET/iris/ --display-name iris

prints the endpoint, the uploaded model and the deployed model id, and the predcache command
that registers the endpoint; with ``--register-as NAME --job JOB`` it runs that command in the
stack's Cloud Run job (``gcloud run jobs execute``). Needs google-cloud-aiplatform and
Application Default Credentials allowed to upload and deploy models.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# scikit-learn 1.5 on CPU: the artifact directory holds model.joblib (or model.pkl) saved with
# that scikit-learn version. Other frameworks: Vertex AI's list of prebuilt prediction containers.
DEFAULT_CONTAINER_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/sklearn-cpu.1-5:latest"


@dataclass(frozen=True)
class Deployment:
    """What one run uploaded and deployed."""

    endpoint: str  # as predcache registers it (the name given, completed to a resource name)
    model: str  # the uploaded Model's resource name
    model_version_id: str
    deployed_model_id: str


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked: replicas, traffic and the artifact location."""
    parser = argparse.ArgumentParser(description="Upload a model to Vertex AI and deploy it to an endpoint.")
    parser.add_argument("--project", required=True, help="Google Cloud project ID")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument(
        "--endpoint",
        required=True,
        help="the endpoint: projects/P/locations/L/endpoints/E (the Pulumi export) or its ID",
    )
    parser.add_argument("--artifact-uri", required=True, help="gs:// directory holding the model file")
    parser.add_argument("--display-name", required=True, help="name of the model in Vertex AI")
    parser.add_argument("--container-image", default=DEFAULT_CONTAINER_IMAGE, help="serving container")
    parser.add_argument("--machine-type", default="n1-standard-2")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=1)
    parser.add_argument(
        "--traffic-percentage",
        type=int,
        default=100,
        help="share of the endpoint's traffic for the new model; the others keep the rest in proportion",
    )
    parser.add_argument("--parent-model", help="upload as a new version of this Model (ID or resource name)")
    parser.add_argument("--service-account", help="the identity the deployed model runs as")
    parser.add_argument("--register-as", metavar="NAME", help="register the endpoint with predcache as NAME")
    parser.add_argument("--job", help="with --register-as: the Cloud Run job that runs manage.py")
    args = parser.parse_args(argv)
    if not args.artifact_uri.startswith("gs://"):
        parser.error("--artifact-uri must be a gs:// directory")
    if args.min_replicas < 1 or args.max_replicas < args.min_replicas:
        parser.error("replicas: need 1 <= --min-replicas <= --max-replicas")
    if not 0 <= args.traffic_percentage <= 100:
        parser.error("--traffic-percentage must be between 0 and 100")
    if args.register_as and not args.job:
        parser.error("--register-as needs --job (the stack's Cloud Run job for manage.py)")
    args.endpoint = endpoint_resource_name(args.endpoint, project=args.project, region=args.region)
    return args


def endpoint_resource_name(endpoint: str, *, project: str, region: str) -> str:
    """``endpoint`` as a full resource name (an ID alone is completed with project and region)."""
    if endpoint.startswith("projects/"):
        return endpoint
    return f"projects/{project}/locations/{region}/endpoints/{endpoint}"


def deploy(args: argparse.Namespace, aiplatform: Any) -> Deployment:
    """Upload the artifact as a Model and deploy it to the endpoint; blocks until both are done."""
    aiplatform.init(project=args.project, location=args.region)
    model = aiplatform.Model.upload(
        display_name=args.display_name,
        artifact_uri=args.artifact_uri,
        serving_container_image_uri=args.container_image,
        parent_model=args.parent_model,
        sync=True,
    )
    endpoint = aiplatform.Endpoint(args.endpoint)
    endpoint.deploy(
        model=model,
        deployed_model_display_name=args.display_name,
        machine_type=args.machine_type,
        min_replica_count=args.min_replicas,
        max_replica_count=args.max_replicas,
        traffic_percentage=args.traffic_percentage,
        service_account=args.service_account,
        sync=True,
    )
    return Deployment(
        endpoint=args.endpoint,
        model=model.resource_name,
        model_version_id=str(model.version_id or ""),
        deployed_model_id=_deployed_model_id(endpoint, model),
    )


def _deployed_model_id(endpoint: Any, model: Any) -> str:
    """The id the endpoint gave this model version (older versions may be deployed beside it)."""
    for deployed in endpoint.list_models():
        same_model = deployed.model.split("@", 1)[0] == model.resource_name
        if same_model and str(deployed.model_version_id or "") == str(model.version_id or ""):
            return str(deployed.id)
    raise RuntimeError(f"{model.resource_name} is not among the models deployed to {endpoint.resource_name}")


def upsert_args(name: str, deployment: Deployment) -> list[str]:
    """The manage.py arguments that register the endpoint with predcache (idempotent)."""
    return [
        "manage.py",
        "predcache",
        "models",
        "upsert",
        name,
        "--backend",
        "vertex",
        "--target",
        deployment.endpoint,
    ]


def job_command(args: argparse.Namespace, deployment: Deployment) -> list[str]:
    """gcloud running ``manage.py predcache models upsert`` in the stack's Cloud Run job.

    The job's container command is ``python``; ``--args`` replaces its arguments for this
    execution only (gcloud splits them at commas, which no name or target contains).
    """
    return [
        "gcloud", "run", "jobs", "execute", args.job,
        f"--project={args.project}", f"--region={args.region}", "--wait",
        "--args=" + ",".join(upsert_args(args.register_as, deployment)),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported here: `--help` and the tests need no Google libraries.
    aiplatform = importlib.import_module("google.cloud.aiplatform")
    deployment = deploy(args, aiplatform)
    print(f"endpoint:          {deployment.endpoint}")
    print(f"model:             {deployment.model} (version {deployment.model_version_id or '-'})")
    print(f"deployed model id: {deployment.deployed_model_id}")
    name = args.register_as or "NAME"
    print("register it with predcache (once per endpoint; the cache follows later deployments itself):")
    print("  python " + shlex.join(upsert_args(name, deployment)))
    if args.register_as:
        command = job_command(args, deployment)
        print("running: " + shlex.join(command), flush=True)
        return subprocess.run(command, check=False).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
