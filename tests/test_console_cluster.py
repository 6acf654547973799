"""`quorumdb up --prometheus` as a user sees it: the web console in a real browser,
`quorumdb top` in a terminal, Prometheus scraping every node, `status --json`'s metrics URLs.

One `quorumdb up` for the module. The browser is Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver (scripts/install-observability installs both; the test is skipped
without them). Screenshots go to $QUORUMDB_TEST_ARTIFACTS (default: the test's temporary
directory) and their paths are printed. Every wait is bounded; every process started is stopped
by its PID (tmux: the session this test made, by name).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from quorumdb import config as config_mod
from tools import observe
from tests.test_cli import UP_READY_TIMEOUT_S, UpProcess, run_cli, wait_all_gone
from tests.util import free_base_port, require

pytestmark = pytest.mark.cluster

WAIT_S = 45.0  # a page update, a failover, a restart, a Prometheus scrape: each well within this


def until(what: str, check, timeout_s: float = WAIT_S, pause_s: float = 0.3):
    """check() until it returns something true; that value. Fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as error:  # noqa: BLE001 - a page still loading, a port not open yet
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(pause_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    base = free_base_port()
    data_dir = tmp_path_factory.mktemp("console") / "data"
    process = UpProcess(data_dir, base, "--prometheus")
    pids: dict[str, int] = {}
    try:
        process.wait_for("QuorumDB is ready", UP_READY_TIMEOUT_S)
        pids = process.node_pids()
        cluster = config_mod.load(data_dir / config_mod.CONFIG_FILE)
        yield process, cluster
    finally:
        if process.process.poll() is None:
            process.terminate_and_wait()
        process.force_stop(pids)
        assert wait_all_gone(pids) == []


STALE_RETRIES_MAX = 20  # the page redraws every poll; a read is retried at most this often


def console_post(cluster, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, JSON answer, headers) of a POST to the console, as any HTTP client would send it."""
    request = urllib.request.Request(f"http://127.0.0.1:{cluster.base_port + 55}/api/chaos",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def supervisor_states(cluster) -> dict[str, str]:
    """Each node's state as `quorumdb up`'s supervisor reports it, read through the console's
    watch view (open without a token; the supervisor's own gRPC port wants one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.base_port + 55}/api/state", timeout=10) as answer:
        view = json.loads(answer.read())["view"]
    return {node["name"]: node["state"] for node in view["nodes"]}


def test_up_prints_the_console_metrics_and_prometheus(up):
    process, cluster = up
    text = process.text()
    console_line = next(line for line in text.splitlines() if line.startswith("console: http://"))
    assert console_line.startswith(f"console: http://127.0.0.1:{cluster.base_port + 55}/")
    assert f"metrics: http://127.0.0.1:{cluster.base_port + 40}/metrics .. :{cluster.base_port + 54}" in text
    assert re.search(r"^prometheus: (http://127\.0\.0\.1:\d+/ \(pid \d+|not started: no `prometheus` binary)", text,
                     re.M), text


def test_status_json_lists_a_metrics_url_per_node_that_answers(up):
    _, cluster = up
    result = run_cli("status", "--data-dir", str(cluster.data_dir), "--json")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)
    assert len(nodes) == 15
    for node in nodes:
        assert node["metrics_url"] == f"http://127.0.0.1:{cluster.metrics_port(node['name'])}/metrics"
        with urllib.request.urlopen(node["metrics_url"], timeout=5) as answer:
            samples = observe.parse_metrics(answer.read().decode())
        assert observe.value(samples, "quorumdb_node_info", node=node["name"], service=node["service"],
                             az=node["az"]) == 1.0


def test_prometheus_scrapes_every_node(up):
    process, cluster = up
    require("prometheus: not started" not in process.text(), "Debian's prometheus", "bash scripts/install-observability")
    port = cluster.base_port + config_mod.PROMETHEUS_PORT_OFFSET

    def query(expression: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.request.quote(expression)}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())["data"]["result"]

    targets = until("Prometheus to scrape all 15 nodes", lambda: (
        r if len(r := query("up == 1")) == 15 else None), timeout_s=60)
    assert {t["metric"]["node"] for t in targets} == {node.name for node in cluster.nodes}
    leaders = until("Prometheus to see the leader", lambda: query("quorumdb_adjudicator_is_leader == 1"))
    assert [leader["metric"]["node"] for leader in leaders] == ["adjudicator-az1"]


def test_top_in_a_terminal(up):
    _, cluster = up
    require(shutil.which("tmux"), "tmux", "bash scripts/install-observability")
    session = f"quorumdb-top-{os.getpid()}"
    command = f"{sys.executable} -m tools.cli top --data-dir {cluster.data_dir} --interval 0.5"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "170", "-y", "40", command],
                   check=True, timeout=10)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                  timeout=10).stdout

        shown = until("top to show every node and the leader", lambda: (
            s if "leader: adjudicator-az1 (epoch" in (s := screen()) and "commits/s" in s
            and all(n.name in s for n in cluster.nodes) and "cpu %" in s else None))
        print(shown)
        row = next(line for line in shown.splitlines() if line.startswith(" storage-az1-a "))
        assert "| segment " in row and "| ok " in row
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], timeout=10, check=False)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    require(binary and driver, "Debian's chromium and chromium-driver", "bash scripts/install-observability")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(30)
    chrome.set_script_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_console_in_a_browser_kills_the_leader_and_restarts_it_with_a_token(up, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, cluster = up
    artifacts = pathlib.Path(os.environ.get("QUORUMDB_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        path = artifacts / f"console-{name}.png"
        browser.save_screenshot(str(path))
        print(f"screenshot: {path}")

    def stable(read):
        """read() again when the page re-rendered the element between finding and reading it
        (a card whose shape changes at a poll, a node going down, is replaced)."""
        for _ in range(STALE_RETRIES_MAX):
            try:
                return read()
            except StaleElementReferenceException:
                time.sleep(0.1)
        return read()

    def card(name: str):
        return browser.find_element(By.CSS_SELECTOR, f'[data-node="{name}"]')

    def card_attribute(name: str, attribute: str) -> str | None:
        return stable(lambda: card(name).get_attribute(attribute))

    def leader_card() -> str | None:
        def read():
            leaders = browser.find_elements(By.CSS_SELECTOR, '[data-role="leader"][data-up="true"]')
            return leaders[0].get_attribute("data-node") if len(leaders) == 1 else None
        return stable(read)

    def press(action: str, target: str, hold_s: float = 0.0) -> str:
        """Click the card's button (held down for hold_s, as a slow hand does); the page's answer."""
        result = browser.find_element(By.ID, "action-result")
        browser.execute_script("arguments[0].textContent = ''", result)
        def button():
            return card(target).find_element(By.CSS_SELECTOR, f'button[data-action="{action}"]')
        if hold_s:
            ActionChains(browser).click_and_hold(stable(button)).pause(hold_s).release().perform()
        else:
            stable(lambda: button().click())
        return until(f"the page to report {action} {target}", lambda: (
            t if (t := result.text) and not t.endswith("...") else None))

    browser.get(f"http://127.0.0.1:{cluster.base_port + 55}/")
    until("the page to show 15 nodes up and a leader", lambda: (
        len(browser.find_elements(By.CSS_SELECTOR, '[data-node][data-up="true"]')) == 15 and leader_card()))
    assert leader_card() == "adjudicator-az1"
    assert "leader adjudicator-az1 (epoch" in stable(lambda: browser.find_element(By.ID, "summary").text)
    shot("1-loaded")
    # The page redraws every second in place: a button stays the same element across polls, so a
    # press that spans a redraw still clicks (a button replaced between press and release does not).
    kill_button = stable(lambda: card("adjudicator-az1").find_element(By.CSS_SELECTOR, 'button[data-action="kill"]'))
    time.sleep(2.5)
    assert kill_button.get_attribute("data-target") == "adjudicator-az1"  # stale: raises

    # Watching needs no token; acting does. The page says so while its token field is empty.
    assert "need a token" in stable(lambda: browser.find_element(By.ID, "auth-mode").text)
    status, answer, headers = console_post(cluster, {"action": "kill", "target": "adjudicator-az1"})
    assert status == 401 and "quorumdb token" in answer["error"], answer
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, answer, _ = console_post(cluster, {"action": "kill-leader"},
                                     {"Authorization": "Bearer qdb1.1.forged", "X-QuorumDB-User": "admin"})
    assert status == 401 and "token refused" in answer["error"], answer

    # Without a valid token the page is refused and nothing changes.
    browser.find_element(By.ID, "token").clear()
    # Held for 1.5 s, across a redraw: the press must still reach the page.
    refused = press("kill", "adjudicator-az1", hold_s=1.5)
    assert refused.startswith("refused (401)"), refused
    browser.find_element(By.ID, "token").send_keys("qdb1.9999999999.forged")
    assert press("kill", "adjudicator-az1").startswith("refused (401)")
    assert supervisor_states(cluster)["adjudicator-az1"] == "running"
    time.sleep(1.5)  # a poll or two: the page must still show it up
    assert card_attribute("adjudicator-az1", "data-up") == "true"

    token = run_cli("token", "--user", "admin", "--data-dir", str(cluster.data_dir)).stdout.strip()
    browser.find_element(By.ID, "token").clear()
    browser.find_element(By.ID, "token").send_keys(token)
    killed = press("kill", "adjudicator-az1")
    assert killed.startswith("killed adjudicator-az1 (pid "), killed
    # The page keeps the token for this tab only (sessionStorage), as typed.
    assert browser.execute_script("return sessionStorage.getItem('quorumdb-token')") == token
    assert browser.execute_script("return localStorage.getItem('quorumdb-token')") is None
    until("the killed leader to show as down", lambda: card_attribute("adjudicator-az1", "data-up") == "false")
    new_leader = until("a new leader to appear", lambda: (l if (l := leader_card()) not in (None, "adjudicator-az1")
                                                          else None))
    assert new_leader in ("adjudicator-az2", "adjudicator-az3")
    assert "killed" in stable(lambda: card("adjudicator-az1").text)
    until("the leader election in the event timeline", lambda: (
        f"leader elected: {new_leader}" in stable(lambda: browser.find_element(By.ID, "events").text)))
    shot("2-leader-killed")

    restarted = press("restart", "adjudicator-az1")
    assert restarted.startswith("restarted adjudicator-az1 (was down, pid "), restarted
    until("the restarted node to show as up", lambda: card_attribute("adjudicator-az1", "data-up") == "true")
    assert card_attribute("adjudicator-az1", "data-role") == "standby"  # a live leader exists: it follows
    assert leader_card() == new_leader
    shot("3-restarted")
