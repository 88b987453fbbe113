"""The pipeline run twice end to end, once per test session, for test_end_to_end and test_report.

Run 1 (no model in serving yet) is blessed and pushed; run 2 (a deliberately worse model, same data, so ingest,
ClipGen and Transform come from the cache) fails the change threshold. The data are the demo videos plus a few
broken ones per split, so ClipGen's dead-letter path is part of the real run. The report describes the newest run
of a metadata store, so run 1's report is written here, before run 2 exists.
"""
import pytest

from e2e_runs import E2E, REPORT_AFTER_RUN_1, VIDEOS_PER_CLASS, WORSE, add_bad_videos


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.demo_data import generate_demo_data
    from pipeline.local_runner import run_local
    from pipeline.report import build_report
    root = tmp_path_factory.mktemp("e2e")
    data = str(root / "data")
    generate_demo_data(data, videos_per_class=VIDEOS_PER_CLASS, seed=7, class_colours=True)
    add_bad_videos(data)
    paths = [f"data_dir={data}", f"pipeline_root={root / 'root'}", f"metadata_path={root / 'metadata.sqlite'}",
             f"serving_dir={root / 'serving'}"]
    first = run_local(load_config("demo", paths + E2E))
    build_report(str(root), str(root / REPORT_AFTER_RUN_1))
    second = run_local(load_config("demo", paths + E2E + WORSE))
    return root, first, second
