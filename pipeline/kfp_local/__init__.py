"""Run a compiled Kubeflow Pipelines v2 spec on this machine the way the open-source KFP backend would.

``runner``: the KFP driver/launcher semantics (ExecutorInput, placeholders, cache keys, trigger policies).
``kube_api``: a Kubernetes API stand-in (TFJob, pods, logs) whose replicas are real local processes.
"""
