"""Deployment to the GPU VM: the compose stack over SSH, two ways.

``deploy/azure/`` holds the ``az`` script and cloud-init file that create the VM;
``compose.yaml``, ``Dockerfile`` and ``deploy/triton-entrypoint.sh`` define what runs
on it. This package plans and runs the docker commands that put it there.

Beyond one VM: ``kserve`` (KServe on AKS, ``deploy/aks/create_cluster.sh`` makes the
cluster) and ``azureml`` (a managed online endpoint) generate manifests for a Blob
release, which ``validate`` checks offline (CRDs in ``schemas/kserve/``).
"""

from .ssh import DeployPlan, Step, plan_deploy, run_plan

__all__ = ["DeployPlan", "Step", "plan_deploy", "run_plan"]
