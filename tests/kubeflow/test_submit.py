"""submit / schedule through kfp.Client.

No Kubeflow Pipelines API server can run on this machine, so kfp.Client talks over real HTTP to a small test
double of the KFP v2beta1 REST API on loopback that records what it receives."""
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2


class FakeKfpApi(BaseHTTPRequestHandler):
    experiments: dict = {}
    runs: list = []
    recurring_runs: list = []

    def log_message(self, *args):
        pass

    def _reply(self, payload, status=200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if url.path == "/apis/v2beta1/experiments":
            wanted = json.dumps(parse_qs(url.query).get("filter", [""])[0])
            found = [e for e in self.experiments.values() if json.dumps(e["display_name"])[1:-1] in wanted]
            return self._reply({"experiments": found, "total_size": len(found)})
        if url.path.startswith("/apis/v2beta1/experiments/"):
            return self._reply(self.experiments[url.path.rsplit("/", 1)[1]])
        return self._reply({"error": f"unexpected GET {self.path}"}, 404)

    def do_POST(self):
        body = self._body()
        path = urlparse(self.path).path
        if path == "/apis/v2beta1/experiments":
            experiment = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}"}
            self.experiments[experiment["experiment_id"]] = experiment
            return self._reply(experiment)
        if path == "/apis/v2beta1/runs":
            self.runs.append(body)
            return self._reply({**body, "run_id": f"run-{len(self.runs)}"})
        if path == "/apis/v2beta1/recurringruns":
            self.recurring_runs.append(body)
            return self._reply({**body, "recurring_run_id": f"rr-{len(self.recurring_runs)}"})
        return self._reply({"error": f"unexpected POST {self.path}"}, 404)


@pytest.fixture
def kfp_host():
    FakeKfpApi.experiments, FakeKfpApi.runs, FakeKfpApi.recurring_runs = {}, [], []
    server = HTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "pipeline.yaml"
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--image", "img:1", "--out", str(path),
                    "--set", "labels=[a, b]", "--pipeline-root", "gs://p/root"], check=True, capture_output=True)
    return str(path)


def test_submit_creates_the_experiment_and_a_run_of_the_compiled_spec(kfp_host, package):
    from pipeline.kubeflow_runner import submit
    run_id = submit(package, kfp_host, experiment="video", run_name="try-1")
    assert run_id == "run-1"
    (run,) = FakeKfpApi.runs
    with open(package) as f:
        # What KFP receives is the spec as a protobuf message: ``enableCache: false`` (the input-fingerprint task)
        # is proto3's default and is not sent, which KFP reads as false all the same.
        sent = json_format.ParseDict(run["pipeline_spec"], pipeline_spec_pb2.PipelineSpec())
        assert sent == json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
        assert not sent.root.dag.tasks["input-fingerprint"].caching_options.enable_cache
    assert run["display_name"] == "try-1"
    assert run["experiment_id"] == "exp-1"
    assert [e["display_name"] for e in FakeKfpApi.experiments.values()] == ["video"]


def test_schedule_creates_a_cron_recurring_run_that_never_overlaps(kfp_host, package):
    from pipeline.kubeflow_runner import schedule
    recurring_id = schedule(package, kfp_host, experiment="video", cron="0 0 3 * * *", job_name="nightly")
    assert recurring_id == "rr-1"
    (recurring,) = FakeKfpApi.recurring_runs
    assert recurring["display_name"] == "nightly"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(recurring["max_concurrency"]) == 1
    assert recurring["mode"] == "ENABLE"
    assert recurring["no_catchup"] is True                      # a paused schedule does not backfill every interval
    tasks = recurring["pipeline_spec"]["root"]["dag"]["tasks"]
    assert set(tasks) >= {"Trainer", "Pusher"}
    # the compiled caching options, untouched: steps cached, the input-fingerprint task never
    assert tasks["Trainer"]["cachingOptions"]["enableCache"] is True
    assert not tasks["input-fingerprint"].get("cachingOptions", {}).get("enableCache")


def test_schedule_without_cache_runs_every_step(kfp_host, package):
    from pipeline.kubeflow_runner import schedule
    schedule(package, kfp_host, experiment="video", cron="0 0 3 * * *", job_name="nightly", cache=False)
    (recurring,) = FakeKfpApi.recurring_runs
    tasks = recurring["pipeline_spec"]["root"]["dag"]["tasks"]
    assert not any(t.get("cachingOptions", {}).get("enableCache") for t in tasks.values())


def test_schedule_rejects_a_five_field_cron(package):
    from pipeline.config import ConfigError
    from pipeline.kubeflow_runner import schedule
    with pytest.raises(ConfigError, match="6 fields"):
        schedule(package, "http://127.0.0.1:9", experiment="video", cron="0 3 * * *", job_name="nightly")
