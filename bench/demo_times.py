"""Per-component wall time of the demo pipeline, from a run's ML Metadata store.

The benchmark does not run the 9-minute demo: it reads the newest *executed* (not cached) run of every
component from ``runs/demo/metadata.sqlite`` (what `make demo` writes), or from any metadata store given.
"""
from __future__ import annotations

import datetime
import os

COMPLETE = 3   # metadata_store_pb2.Execution.COMPLETE (CACHED executions took no time)


def component_seconds(metadata_path: str) -> dict:
    """{component: seconds} of each component's newest completed execution, and when the newest finished."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    if not os.path.isfile(metadata_path):
        raise FileNotFoundError(f"no metadata store at {metadata_path!r} (run `make demo` first)")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    newest: dict[str, object] = {}
    for execution in store.get_executions():
        if execution.last_known_state != COMPLETE:
            continue
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        if not nodes:
            continue
        node = nodes[0].rsplit(".", 1)[-1]
        if node not in newest or execution.create_time_since_epoch > newest[node].create_time_since_epoch:
            newest[node] = execution
    if not newest:
        raise ValueError(f"no completed component execution in {metadata_path!r}")
    seconds = {node: (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3 for node, e in newest.items()}
    finished = max(e.last_update_time_since_epoch for e in newest.values()) / 1e3
    order = sorted(seconds, key=lambda n: newest[n].create_time_since_epoch)
    return {"source": metadata_path,
            "finished_utc": datetime.datetime.fromtimestamp(finished, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "component_seconds": {n: round(seconds[n], 1) for n in order},
            "total_seconds": round(sum(seconds.values()), 1)}
