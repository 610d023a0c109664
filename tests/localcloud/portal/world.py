"""A small Batch AI world for the portal's tests and benchmarks, made with the real SDK clients:
a resource group, the share, a workspace, a ready cluster, an experiment, and a job running a
short fake training script that prints the recipe's ``Finished Epoch`` lines, then ticks until
it is stopped. Names, tags, parameters and output carry planted HTML that must never run."""

from __future__ import annotations

import sys
from pathlib import Path

import azure.mgmt.batchai.models as models

from tests.localcloud.batchai.test_batchai import EXP, RG, SHARE, WS, job_params, sdk_env

PLANTED_SCRIPT = "<script>window.__planted = 1</script>"
PLANTED_IMG = '"><img src=x onerror="window.__planted = 2">'
SECRET_VALUE = "s3cr3t-value-never-shown"
PLANTED_FILE = '"><img src=x onerror="window.__planted = 4">.txt'

FAKE_TRAINING = (
    """\
import os, sys, time
epochs, pause = int(sys.argv[1]), float(sys.argv[2])
print(PLANTED_SCRIPT, flush=True)
print(PLANTED_IMG, file=sys.stderr, flush=True)
print("the secret is", os.environ.get("TOKEN"), flush=True)
open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_MODEL"], PLANTED_FILE), "w").write("planted")
tick, epoch, started = 0, 0, time.time()
while True:
    tick += 1
    print("tick %d %.6f" % (tick, time.time()), flush=True)
    release = os.path.join(os.environ["AZ_BATCHAI_INPUT_SAMPLE"], "release-epoch-%d" % (epoch + 1))
    if epoch < epochs and (
        os.path.exists(release) if pause < 0 else time.time() - started >= pause * (epoch + 1)
    ):
        epoch += 1
        print("Finished Epoch[%d of %d]: [Training] loss = %.6f * 60000, metric = %.2f%% * "
              "60000 1.000s (60000.0 samples/s);" % (epoch, epochs, 1.0 / epoch, 30.0 / epoch),
              file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("TICK", "0.2")))
""".replace("PLANTED_SCRIPT", repr(PLANTED_SCRIPT))
    .replace("PLANTED_IMG", repr(PLANTED_IMG))
    .replace("PLANTED_FILE", repr(PLANTED_FILE))
)


def make_world(cloud, tmp_path: Path):
    env = sdk_env(cloud, tmp_path)
    env.resources.resource_groups.create_or_update(
        RG, {"location": "eastus", "tags": {"note": PLANTED_SCRIPT, "owner": PLANTED_IMG}}
    )
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINING)
    env.files.create_file_from_path(SHARE, "mnistcntksample", "fake_train.py", str(script))
    return env


def start_job(env, name: str, epochs: int = 3, pause: float = 0.3, tick: float = 0.2) -> str:
    """Submit the fake training job; returns its ARM id as the store keys it (lower case).
    It finishes an epoch every ``pause`` seconds, or with ``pause < 0`` when the test releases
    it (``release_epoch``)."""
    command = (
        f"{sys.executable} $AZ_BATCHAI_INPUT_SAMPLE/fake_train.py {epochs} {pause} "
        f"# {PLANTED_SCRIPT}"
    )
    params = job_params(
        env.cluster.id,
        command,
        environment_variables=[
            models.EnvironmentVariable(name="NOTE", value=PLANTED_IMG),
            models.EnvironmentVariable(name="TICK", value=str(tick)),
        ],
        secrets=[models.EnvironmentVariableWithSecretValue(name="TOKEN", value=SECRET_VALUE)],
    )
    job = env.client.jobs.create(RG, WS, EXP, name, params).result()
    return job.id.lower()


def release_epoch(env, epoch: int) -> None:
    """Let a job started with ``pause < 0`` finish epoch ``epoch``."""
    (env.share_dir / "mnistcntksample" / f"release-epoch-{epoch}").write_text("go")
