"""Figures for the local cloud's portal (issue 16): server render times and line-to-browser delay.

    .venv/bin/python tests/bench/bench_portal.py [--repeats 20]

Prints, for a local cloud embedded in this process with a world made by the real SDK clients
(tests/localcloud/portal/world.py) and its one real job's record copied to reach 10, 100 and
1,000 jobs (records as the Batch AI surface stores them):

* the server-side render time (median of --repeats, in-process, no network) of the overview
  (first page of 50 jobs) and of the job page, beside the same run's baseline: the ARM
  ``jobs.list`` route answering the same jobs in-process (what the API does with them);
* in headless Chromium: the delay from the job writing a line (its own timestamp in the line)
  to the line being in the page's DOM, median and max over --repeats lines, beside the same
  run's baseline of one /portal/job/log fetch from the page (round trip).

Goals: overview at 1,000 jobs < 100 ms; a line visible within 1 s.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from werkzeug.test import EnvironBuilder  # noqa: E402
from werkzeug.wrappers import Request  # noqa: E402

from quickstart.localcloud import LocalCloud  # noqa: E402
from quickstart.localcloud.batchai.schema import JOB_TYPE  # noqa: E402
from quickstart.localcloud.portal.login import COOKIE  # noqa: E402
from tests.localcloud.portal.browser import MISSING, start_chromium  # noqa: E402
from tests.localcloud.portal.world import make_world, start_job  # noqa: E402

SIZES = (10, 100, 1000)


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = fn()
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
        response.get_data()
    return statistics.median(times) * 1000


def portal_request(cloud, session_id: str, path: str) -> Request:
    builder = EnvironBuilder(path=path, base_url=cloud.base_url)
    builder.headers["Cookie"] = f"{COOKIE}={session_id}"
    return Request(builder.get_environ())


def copy_job(store, job, count: int) -> None:
    """Store ``count`` finished copies of ``job``'s record, named job0001..."""
    with store.transaction():
        for n in range(count):
            body = copy.deepcopy(job.body)
            name = f"{job.name}{n:04d}"
            body["name"] = name
            body["id"] = body["id"].rsplit("/", 1)[0] + "/" + name
            body["properties"]["executionState"] = "succeeded"
            extra = {**job.extra, "handle": None}
            store.put_resource(body["id"], JOB_TYPE, name, body, extra)


def render_figures(cloud, env, repeats: int) -> list[tuple]:
    portal = cloud.context.portal
    session_id = portal.sessions.exchange(portal.sessions._token)
    job = cloud.context.store.get_resource(env.job_id)
    experiment_id = job.body["id"].rsplit("/jobs/", 1)[0]
    rows = []
    have = 1
    for size in SIZES:
        copy_job(cloud.context.store, job, size - have)
        job = cloud.context.store.get_resource(env.job_id)
        have = size
        overview = median_ms(lambda: portal(portal_request(cloud, session_id, "/portal/")), repeats)
        page = median_ms(
            lambda: portal(portal_request(cloud, session_id, f"/portal/job?id={env.job_id}")),
            repeats,
        )
        arm = median_ms(lambda: portal.arm("GET", experiment_id + "/jobs"), repeats)
        rows.append((size, overview, page, arm))
    return rows


WAIT_FOR_NEXT_LINE = """
const done = arguments[arguments.length - 1];
const pane = document.getElementById("stdout");
const before = pane.textContent.length;
const timer = setInterval(() => {
  const text = pane.textContent;
  if (text.length > before) {
    const fresh = text.slice(before);
    const end = fresh.indexOf("\\n");
    if (end >= 0) { clearInterval(timer); done([Date.now() / 1000, fresh.slice(0, end)]); }
  }
}, 2);
"""

ONE_FETCH = """
const done = arguments[arguments.length - 1];
const started = performance.now();
fetch("/portal/job/log?id=" + encodeURIComponent(arguments[0]) + "&stdout.txt=999999999")
  .then(r => r.text()).then(() => done(performance.now() - started));
"""


def delay_figures(cloud, env, tmp: Path, repeats: int):
    job_id = start_job(env, "delayjob", epochs=1, pause=0.1, tick=0.37)
    driver = start_chromium(cloud, tmp / "profile")
    try:
        from quickstart.localcloud.portal import login_url

        driver.get(login_url(cloud.state_dir, cloud.base_url))
        driver.get(f"{cloud.base_url}/portal/job?id={job_id}")
        driver.set_script_timeout(10)
        delays = []
        while len(delays) < repeats:
            seen, line = driver.execute_async_script(WAIT_FOR_NEXT_LINE)
            if line.startswith("tick "):
                delays.append(seen - float(line.split()[2]))
        fetches = [driver.execute_async_script(ONE_FETCH, job_id) for _ in range(repeats)]
    finally:
        driver.quit()
        env.client.jobs.terminate("myresourcegroup", "myworkspace", "myexperiment", "delayjob")
    return delays, fetches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        cloud = LocalCloud(tmp / "localcloud", cluster_allocation_delay=0.1).start()
        try:
            env = make_world(cloud, tmp)
            env.job_id = start_job(env, "benchjob", epochs=2, pause=0.1, tick=0.05)
            time.sleep(1.0)  # some log and two epochs to draw
            env.client.jobs.terminate("myresourcegroup", "myworkspace", "myexperiment", "benchjob")
            print("jobs  overview ms  job page ms  ARM jobs.list ms (baseline)  overview/list")
            for size, overview, page, arm in render_figures(cloud, env, args.repeats):
                print(
                    f"{size:5d}  {overview:11.1f}  {page:11.1f}  {arm:28.1f}  {overview / arm:13.2f}"
                )
            if MISSING:
                print(f"line-to-browser delay: skipped, {MISSING}")
                return 0
            delays, fetches = delay_figures(cloud, env, tmp, args.repeats)
            median = statistics.median(delays) * 1000
            fetch = statistics.median(fetches)
            print(
                f"line-to-browser delay over {len(delays)} lines: median {median:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms; one log fetch from the page (baseline): "
                f"median {fetch:.1f} ms; delay/fetch {median / fetch:.1f}"
            )
        finally:
            cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
