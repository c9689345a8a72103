"""The Kubernetes examples validate against real Kubernetes schemas (kubernetes-validate ships
them), strictly: unknown fields are errors, so a typo cannot hide behind "valid YAML"."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S_DIR = Path(__file__).resolve().parents[2] / "examples" / "k8s"
# An older and the newest schema this kubernetes-validate knows: the manifests must hold on both.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        loaded = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        docs += [(f"{path.name}:{d['kind']}/{d['metadata']['name']}", d) for d in loaded]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    return next(doc for _, doc in documents() if doc["kind"] == kind)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_layout_is_complete() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"Deployment", "Service", "Job", "ConfigMap", "Secret"} <= kinds
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    assert {"model", "nginx", "pathprobe-agent"} <= set(containers)
    agent = containers["pathprobe-agent"]
    assert "SYS_PTRACE" in agent["securityContext"]["capabilities"]["add"]
    job_args = " ".join(by_kind("Job")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "pathprobe diagnose" in job_args
    for hop in ("direct=", "proxy=", "lb="):
        assert hop in job_args
    assert (K8S_DIR / "Dockerfile").read_text().count("FROM ") == 1


def test_validation_catches_a_broken_manifest() -> None:
    broken = copy.deepcopy(by_kind("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    missing = copy.deepcopy(by_kind("Service"))
    missing["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(missing, VERSIONS[-1], strict=True)
