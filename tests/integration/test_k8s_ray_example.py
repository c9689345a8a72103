"""The KubeRay example (examples/k8s/ray/) validates like the other manifests (issue 15).

The Job is core Kubernetes: validated strictly with kubernetes-validate. A RayCluster is a custom
resource kubernetes-validate has no schema for: its pod templates (most of it) are validated
strictly as core ``PodTemplate`` objects, its own fields against the KubeRay ``ray.io/v1`` field
names, and the two manifests against each other (address, ports, image, room for the workers).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

RAY_DIR = Path(__file__).resolve().parents[2] / "examples" / "k8s" / "ray"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# KubeRay ray.io/v1 RayCluster fields (RayClusterSpec, HeadGroupSpec, WorkerGroupSpec).
CLUSTER_SPEC = {
    "rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec",
    "workerGroupSpecs", "headServiceAnnotations", "suspend", "managedBy",
    "gcsFaultToleranceOptions",
}  # fmt: skip
HEAD_SPEC = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_SPEC = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams",
    "template", "scaleStrategy", "numOfHosts", "suspend",
}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((RAY_DIR / name).read_text())
    return doc


def pod_template(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
            "template": template}  # fmt: skip


def check_cluster(cluster: dict[str, Any], version: str) -> None:
    """Raises (kubernetes_validate.ValidationError or AssertionError) on any problem."""
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert set(spec) <= CLUSTER_SPEC, set(spec) - CLUSTER_SPEC
    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_SPEC, set(head) - HEAD_SPEC
    groups = spec["workerGroupSpecs"]
    for group in groups:
        assert set(group) <= WORKER_SPEC, set(group) - WORKER_SPEC
    for where, params in [("head", head["rayStartParams"])] + [
        (g["groupName"], g["rayStartParams"]) for g in groups
    ]:
        # map[string]string in the CRD: an unquoted number is rejected by the API server.
        assert all(isinstance(v, str) for v in params.values()), where
    templates = [("head", head["template"])] + [(g["groupName"], g["template"]) for g in groups]
    for name, template in templates:
        kubernetes_validate.validate(pod_template(template, name), version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_job_is_valid_kubernetes(version: str) -> None:
    kubernetes_validate.validate(load("diagnose-ray-job.yaml"), version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_raycluster_is_valid(version: str) -> None:
    check_cluster(load("raycluster.yaml"), version)


def test_job_and_cluster_fit_together() -> None:
    cluster, job = load("raycluster.yaml"), load("diagnose-ray-job.yaml")
    pod = job["spec"]["template"]["spec"]
    args = " ".join(pod["containers"][0]["args"])
    assert "pathprobe diagnose" in args
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert job["metadata"]["namespace"] == namespace
    # KubeRay names the head's Service <cluster>-head-svc; Ray Client listens on 10001.
    address = re.search(r"--ray (\S+)", args)
    assert address is not None
    assert address.group(1) == f"ray://{name}-head-svc.{namespace}.svc.cluster.local:10001"
    head = cluster["spec"]["headGroupSpec"]
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert 10001 in ports
    # Room for every worker: one CPU each on the worker nodes, none on the head.
    workers = re.search(r"--workers (\d+)", args)
    assert workers is not None
    cpus = sum(int(g["rayStartParams"]["num-cpus"]) * g["replicas"]
               for g in cluster["spec"]["workerGroupSpecs"])  # fmt: skip
    assert int(workers.group(1)) <= cpus
    assert head["rayStartParams"]["num-cpus"] == "0"
    # One image (one Python, one Ray) on the driver and every node, and that Ray is rayVersion.
    images = {pod["containers"][0]["image"], head["template"]["spec"]["containers"][0]["image"]}
    images |= {c["image"] for g in cluster["spec"]["workerGroupSpecs"]
               for c in g["template"]["spec"]["containers"]}  # fmt: skip
    assert len(images) == 1
    dockerfile = (RAY_DIR / "Dockerfile").read_text()
    assert f"ray[client]=={cluster['spec']['rayVersion']}" in dockerfile
    assert "'.[ray]'" in dockerfile


def test_validation_catches_a_broken_raycluster() -> None:
    good = load("raycluster.yaml")
    typo = copy.deepcopy(good)
    typo["spec"]["workerGroupSpecs"][0]["replica"] = 3
    with pytest.raises(AssertionError):
        check_cluster(typo, VERSIONS[-1])
    unquoted = copy.deepcopy(good)
    unquoted["spec"]["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = 1
    with pytest.raises(AssertionError):
        check_cluster(unquoted, VERSIONS[-1])
    bad_pod = copy.deepcopy(good)
    bad_pod["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        check_cluster(bad_pod, VERSIONS[-1])
