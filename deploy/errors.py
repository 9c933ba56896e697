"""Errors of ``tritonkit.deploy``: the classes live in ``tritonkit.errors``; this module adds
the one for manifests.

    UsageError
    └── ManifestError   a generated manifest (KServe, Kubernetes, Azure ML) that would be
                        refused, or an option that would produce one
"""

from __future__ import annotations

from tritonkit.errors import DeployError, UsageError


class ManifestError(UsageError):
    """A manifest that its schema or its service would refuse (one line: which object, where)."""


__all__ = ["DeployError", "ManifestError", "UsageError"]
