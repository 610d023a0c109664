"""The portal in a real browser: headless Chromium (OS packages) driven by Selenium.

One local cloud, one world and one browser for the module; the tests run in file order, as a
user would: sign in, find the running job, watch it, then terminate it. Screenshots go to
``screenshots/`` beside this file (git-ignored)."""

from __future__ import annotations

import time

import pytest

from quickstart.localcloud import LocalCloud
from quickstart.localcloud.portal import login_url
from tests.localcloud.portal.browser import (
    MISSING,
    console_problems,
    screenshot,
    start_chromium,
)
from tests.localcloud.portal.world import (
    PLANTED_FILE,
    PLANTED_IMG,
    PLANTED_SCRIPT,
    SECRET_VALUE,
    make_world,
    release_epoch,
    start_job,
)

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

EPOCHS = 3
JOB = "portaljob"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("portal")
    cloud = LocalCloud(tmp / "localcloud", cluster_allocation_delay=0.1).start()
    driver = None
    try:
        env = make_world(cloud, tmp)
        workspace_id = env.cluster.id.rsplit("/clusters/", 1)[0]
        env.job_id = f"{workspace_id}/experiments/myexperiment/jobs/{JOB}".lower()
        driver = start_chromium(cloud, tmp / "profile")
        env.driver = driver
        env.base = cloud.base_url
        yield env
    finally:
        if driver is not None:
            driver.quit()
        for job in env.client.jobs.list_by_experiment(
            "myresourcegroup", "myworkspace", "myexperiment"
        ):
            if job.execution_state in ("queued", "running"):
                env.client.jobs.terminate(
                    "myresourcegroup", "myworkspace", "myexperiment", job.name
                ).result()
        cloud.stop()


def wait_until(predicate, timeout=30.0, interval=0.05):
    """The predicate's first true value; an element missing or replaced meanwhile (the page is
    loading) counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out")


def text_of(driver, css):
    """The element's text. A page that re-renders between finding the element and reading it
    (the next page arriving after a click, the live log replacing its text) makes Chrome refuse
    the read as stale; that is read again, briefly, never reported as the page's fault."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By

    for _ in range(50):
        try:
            return driver.find_element(By.CSS_SELECTOR, css).text
        except StaleElementReferenceException:
            pass
        except WebDriverException as error:
            if "does not belong to the document" not in str(error):
                raise
        time.sleep(0.1)
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_without_the_token_nothing_is_shown(world):
    driver = world.driver
    for path in ("/portal/", f"/portal/job?id={world.job_id}", "/portal/calls"):
        driver.get(world.base + path)
        assert "Sign in with the login link" in driver.page_source
        assert JOB not in driver.page_source
    driver.get(world.base + "/portal/login?token=not-the-token")
    assert "This login link is not valid" in driver.page_source
    screenshot(driver, "01-no-token")
    refusals = console_problems(driver)  # read here, so the last test sees only what follows
    assert refusals and all("401" in r or "403" in r for r in refusals), refusals


def test_the_login_link_signs_in_once_and_leaves_the_address_bar(world):
    driver = world.driver
    url = login_url(world.cloud.state_dir, world.base)
    driver.get(url)
    assert driver.current_url == world.base + "/portal/"
    cookie = driver.get_cookie("localcloud_portal")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert driver.execute_script("return document.cookie") == ""  # HttpOnly: no script sees it
    screenshot(driver, "02-overview")
    # the link is used up: a second browser (no cookie) cannot use it again
    from tests.localcloud.portal.browser import start_chromium as again

    other = again(world.cloud, world.cloud.state_dir.parent / "profile-2")
    try:
        other.get(url)
        assert "This login link is not valid" in other.page_source
    finally:
        other.quit()


def test_overview_leads_to_the_running_job(world):
    from selenium.webdriver.common.by import By

    driver = world.driver
    assert start_job(world, JOB, epochs=EPOCHS, pause=-1) == world.job_id  # epochs on release
    driver.get(world.base + "/portal/")
    assert "myresourcegroup" in driver.page_source and "mycluster" in driver.page_source
    assert "batchaiquickstart" in driver.page_source  # the share, with its size
    link = driver.find_element(By.LINK_TEXT, JOB)
    link.click()
    wait_until(lambda: "running" in text_of(driver, "#job-state"))
    assert text_of(driver, "#job-name") == JOB
    driver.execute_script("window.__same_page = true")  # gone if the page reloads


def test_the_log_grows_while_the_job_runs(world):
    driver = world.driver
    ticks = wait_until(lambda: text_of(driver, "#stdout").count("tick "))
    wait_until(lambda: f"tick {ticks + 3} " in text_of(driver, "#stdout"))
    screenshot(driver, "03-job-running")


def test_the_learning_curve_has_one_point_per_finished_epoch(world):
    from selenium.webdriver.common.by import By

    driver = world.driver

    def points(chart):
        return driver.find_elements(By.CSS_SELECTOR, f"#{chart} circle.point")

    assert "No finished epoch yet" in text_of(driver, "#curve")
    for epoch in range(1, EPOCHS + 1):
        release_epoch(world, epoch)
        wait_until(lambda: text_of(driver, "#stderr").count("Finished Epoch") == epoch)
        wait_until(lambda: len(points("loss-chart")) == epoch)
        assert len(points("error-chart")) == epoch
    heights = [float(p.get_attribute("cy")) for p in points("loss-chart")]
    assert heights == sorted(heights)  # the loss falls (1/epoch): each point lower on the chart
    assert driver.execute_script("return window.__same_page") is True  # updated live
    screenshot(driver, "04-learning-curve")


def test_planted_html_is_shown_as_text_and_never_runs(world):
    from selenium.webdriver.common.by import By

    driver = world.driver
    assert driver.execute_script("return window.__planted") is None
    assert PLANTED_SCRIPT in text_of(driver, "#stdout")
    assert PLANTED_IMG in text_of(driver, "#stderr")
    assert PLANTED_SCRIPT in text_of(driver, ".params")  # the command line
    assert '<img src=x onerror=\\"window' in text_of(driver, ".params")  # a variable's value
    assert '"name": "TOKEN",\n      "value": "••••••"' in text_of(driver, ".params")
    driver.refresh()  # the file list is drawn when the page loads
    assert driver.execute_script("return window.__planted") is None
    files = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "a[href^='/portal/job/file']")]
    assert any(f.endswith(PLANTED_FILE) for f in files), files
    driver.get(world.base + "/portal/")
    assert driver.execute_script("return window.__planted") is None
    tags = text_of(driver, ".tags")  # the resource group's tags
    assert PLANTED_SCRIPT in tags and PLANTED_IMG.replace('"', "") in tags.replace('"', "")
    scripts = driver.find_elements(By.TAG_NAME, "script")
    assert [s.get_attribute("src") for s in scripts] == [world.base + "/portal/static/portal.js"]
    assert not driver.find_elements(By.CSS_SELECTOR, "img")


def test_secrets_never_appear(world):
    driver = world.driver
    secrets = (SECRET_VALUE, world.connection["storage_key"], world.connection["client_secret"])
    for path in ("/portal/", f"/portal/job?id={world.job_id}", "/portal/calls"):
        driver.get(world.base + path)
        source = driver.page_source
        assert not [s for s in secrets if s in source], path


def test_api_calls_show_the_sdk_calls_filterable(world):
    from selenium.webdriver.common.by import By

    driver = world.driver
    driver.get(world.base + "/portal/calls?q=jobs%2F" + JOB)
    rows = driver.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
    assert rows and all(JOB in r.text for r in rows)
    assert any("PUT" in r.text and "azure-mgmt-batchai" in r.text for r in rows)
    screenshot(driver, "05-api-calls")


def test_terminate_asks_then_stops_the_job(world):
    from selenium.webdriver.common.by import By

    driver = world.driver
    driver.get(world.base + f"/portal/job?id={world.job_id}")
    driver.find_element(By.ID, "terminate").click()
    wait_until(lambda: "Terminate job" in text_of(driver, "h1"))  # a click does not wait
    screenshot(driver, "06-confirm-terminate")
    driver.find_element(By.ID, "confirm").click()
    wait_until(lambda: "failed" in text_of(driver, "#job-state"))
    assert "JobTerminated" in driver.page_source
    job = world.client.jobs.get("myresourcegroup", "myworkspace", "myexperiment", JOB)
    assert job.execution_state == "failed"
    driver.set_window_size(390, 844)  # a phone
    screenshot(driver, "07-job-terminated-phone")
    driver.set_window_size(1280, 900)


def test_the_cluster_page_shows_nodes_and_their_timeline(world):
    driver = world.driver
    driver.get(world.base + f"/portal/cluster?id={world.cluster.id.lower()}")
    assert "Cluster state: steady Target: 1; Allocated: 1; Idle: 1" in text_of(
        driver, "#status-line"
    )
    assert "idle" in text_of(driver, "ol.timeline")
    screenshot(driver, "08-cluster")


def test_no_console_errors(world):
    assert console_problems(world.driver) == []
