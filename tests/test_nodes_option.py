"""Issue 14: `run --nodes N` (or [cluster] node_count) asks for an N-node cluster and the job on
all N nodes; a bad count is one line naming the option."""

from quickstart import __main__ as cli
from quickstart.config import load_settings
from quickstart.steps import cluster_parameters, job_parameters
from tests.test_cli import (  # noqa: F401 (azure_config, sample: fixtures)
    JobScript,
    allocating_cluster,
    azure_config,
    no_sleep,
    patched_sdk,
    sample,
    script_job,
)


def test_nodes_sets_the_clusters_and_the_jobs_node_count(azure_config, sample, monkeypatch):  # noqa: F811
    no_sleep(monkeypatch)
    with patched_sdk() as azure:
        allocating_cluster(azure)
        script_job(azure, JobScript(["running", "succeeded"], [b"epoch 1\n", b""]))
        assert cli.main(["run", "--config", azure_config, "--nodes", "2"]) == 0
    cluster = azure.batchai.clusters.create.call_args.args[3]
    assert cluster.scale_settings.manual.target_node_count == 2
    assert azure.batchai.jobs.create.call_args.args[4].node_count == 2


def test_the_config_key_alone_does_the_same(tmp_path):
    config = tmp_path / "config.ini"
    config.write_text("[cluster]\nnode_count = 3\n")
    settings = load_settings(str(config), environ={})
    assert settings.node_count == 3
    assert job_parameters(settings, type("Cluster", (), {"id": "c"})()).node_count == 3
    service = type("FileService", (), {"primary_endpoint": "account.file.example"})()
    assert cluster_parameters(settings, service).scale_settings.manual.target_node_count == 3


def test_a_bad_node_count_is_one_line_naming_the_option(capsys):
    assert cli.main(["run", "--nodes", "0"]) == 2
    assert capsys.readouterr().err == "config error: --nodes: must be at least 1\n"
