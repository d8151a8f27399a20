"""Workflow tooling, host-free: ComfyUI UI-format workflows checked offline, converted to the API
(prompt) format, and built from the node schemas.

* :mod:`.schema`: node schemas (the pack's classes, the core-node snapshots ``core_schemas*.json``
  of each supported host), the frontend's widget layout, value and link-type rules;
* :mod:`.graph`: the link graph of a saved workflow, and :class:`~.graph.WorkflowBuilder`, which
  writes the shipped workflows (``example_workflows/make_workflows.py``) and the tests' graphs;
* :mod:`.check`: :func:`~.check.check_workflow` / :func:`~.check.check_files`;
* :mod:`.api`: :func:`~.api.ui_to_api`;
* :mod:`.cli`: ``python -m orbitforge check-workflow``.

Nothing here imports ComfyUI; the pack's nodes are read through ``orbitforge.nodes`` only when a
schema lookup needs them.
"""
