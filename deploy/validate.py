"""Offline validation of generated manifests, as strict as the services that take them.

* KServe objects (``serving.kserve.io``): ``jsonschema`` against the CRDs' own
  ``openAPIV3Schema`` (shipped in ``deploy/schemas/kserve/``), made strict the way the API
  server is: an object with ``properties`` and no ``x-kubernetes-preserve-unknown-fields``
  accepts no other field (the server would prune or reject it), and
  ``x-kubernetes-int-or-string`` accepts an integer or a string.
* Core Kubernetes objects: ``kubernetes-validate`` in strict mode for ``K8S_VERSION``;
  a kind it has no schema for is an error, not a warning.
* Anything else (a group with no schema shipped here) is refused: nothing goes out unchecked.
* Azure ML YAML: see ``tritonkit.deploy.azureml.validate_azureml``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from tritonkit.errors import ManifestError

K8S_VERSION = "1.31"  # AKS's supported versions include it; kubernetes-validate ships it
SCHEMAS = Path(__file__).parent / "schemas" / "kserve"
KSERVE_CRDS = {
    "InferenceService": "serving.kserve.io_inferenceservices.yaml",
    "ServingRuntime": "serving.kserve.io_servingruntimes.yaml",
    "ClusterServingRuntime": "serving.kserve.io_clusterservingruntimes.yaml",
}
# metadata is only {type: object} in a CRD; the API server checks it as ObjectMeta.
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_META_FIELDS = {"name", "namespace", "labels", "annotations"}


def strict_schema(schema: Any) -> Any:
    """A copy of a CRD's ``openAPIV3Schema`` that rejects unknown fields and honours
    ``x-kubernetes-int-or-string``."""
    schema = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if (
            "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for value in node.values():
            visit(value)

    visit(schema)
    return schema


@cache
def _kserve_schema(kind: str, api_version: str) -> dict[str, Any]:
    import yaml

    crd = yaml.safe_load((SCHEMAS / KSERVE_CRDS[kind]).read_text())
    version = api_version.split("/", 1)[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return dict(strict_schema(v["schema"]["openAPIV3Schema"]))
    served = ", ".join(f"serving.kserve.io/{v['name']}" for v in crd["spec"]["versions"])
    raise ManifestError(f"{kind} has no apiVersion {api_version} (the CRD serves {served})")


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    return f"{obj.get('kind', '?')}/{meta.get('name', '?')}"


def _path(parts: Iterable[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(top)"


def _check_metadata(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise ManifestError(f"{_where(obj)}: metadata is missing or not a mapping")
    unknown = set(meta) - _META_FIELDS
    if unknown:
        raise ManifestError(f"{_where(obj)}: metadata has unknown field(s) {sorted(unknown)}")
    name = meta.get("name")
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        raise ManifestError(f"{_where(obj)}: metadata.name {name!r} is not a DNS-1123 name")
    for field in ("labels", "annotations"):
        pairs = meta.get(field, {})
        if not isinstance(pairs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in pairs.items()
        ):
            raise ManifestError(f"{_where(obj)}: metadata.{field} must map strings to strings")


def validate_kserve(obj: dict[str, Any]) -> None:
    """Check a KServe object against its CRD, unknown fields rejected.

    Raises:
        ManifestError: a kind or apiVersion the CRDs do not define, or the first place
            where the object does not match (path and reason).
    """
    import jsonschema

    kind = obj.get("kind")
    if kind not in KSERVE_CRDS:
        raise ManifestError(f"{_where(obj)}: no KServe CRD for kind {kind!r}")
    schema = _kserve_schema(str(kind), str(obj.get("apiVersion")))
    _check_metadata(obj)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path)
    )
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ManifestError(f"{_where(obj)}: {_path(best.absolute_path)}: {best.message}")


def validate_core(obj: dict[str, Any], version: str = K8S_VERSION) -> None:
    """Check a core Kubernetes object with kubernetes-validate, strict, for ``version``.

    Raises:
        ManifestError: no schema for the kind (an error here, not a warning), or the first
            place where the object does not match.
    """
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise ManifestError(
            f"{_where(obj)}: {_path(exc.path)}: {exc.message} (Kubernetes {exc.version})"
        ) from exc
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{_where(obj)}: {exc.message}") from exc
    except kubernetes_validate.VersionNotSupportedError as exc:
        raise ManifestError(exc.message) from exc


# Kubernetes' own API groups whose names hold a dot: kubernetes-validate has their schemas.
BUILTIN_DOTTED_GROUPS = {"networking.k8s.io", "rbac.authorization.k8s.io"}


def validate_object(obj: dict[str, Any], version: str = K8S_VERSION) -> None:
    """Check one object with the validator its apiVersion calls for.

    Raises:
        ManifestError: not a Kubernetes object, a group with no schema here, or invalid.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("apiVersion"), str):
        raise ManifestError(f"{_where(obj) if isinstance(obj, dict) else obj!r}: no apiVersion")
    if not isinstance(obj.get("kind"), str):
        raise ManifestError(f"{_where(obj)}: no kind")
    group = obj["apiVersion"].rpartition("/")[0]
    if group == "serving.kserve.io":
        validate_kserve(obj)
    elif "." not in group or group in BUILTIN_DOTTED_GROUPS:  # core, apps, autoscaling, ...
        validate_core(obj, version)
    else:
        raise ManifestError(
            f"{_where(obj)}: no schema for {obj['apiVersion']} shipped here; it would go "
            "out unchecked"
        )


def validate_manifests(objects: Iterable[dict[str, Any]], version: str = K8S_VERSION) -> None:
    """Check every object; names must be unique per kind.

    Raises:
        ManifestError: the first invalid object, or two objects of one kind and name.
    """
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        validate_object(obj, version)
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise ManifestError(f"{_where(obj)} appears twice")
        seen.add(key)
