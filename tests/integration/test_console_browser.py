"""The web console in a real browser: Debian's chromium, headless, driven by Selenium through chromium-driver,
against the real controller process and Open vSwitch. The tests assert what an operator sees (the ports table,
the graph, the details panel), not how the update reached the page (event stream or polling).

``CONSOLE_SCREENSHOT=docs/img/console.png`` also saves the README's screenshot."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ryu_overlay.testing.controller_proc import ControllerProcess
from ryu_overlay.testing.overlay import PORTS, deploy, put

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# headless, and nothing that reaches out to the internet (updates, sync, field trials, QUIC probes)
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--window-size=1400,820")
GARP = ("Ether(src='{mac}', dst='ff:ff:ff:ff:ff:ff')/"
        "ARP(op=1, hwsrc='{mac}', psrc='{ip}', hwdst='00:00:00:00:00:00', pdst='{ip}')")
WAIT = 30.0
ROW = """return Object.fromEntries([...document.querySelectorAll('#ports tr[data-port="' + arguments[0] + '"] td')]
                                .map((td) => [td.dataset.col, td.textContent]));"""
NODE = """const n = window.overlayGraph.getElementById(arguments[0]);
          return n.empty() ? null : {parent: n.parent().empty() ? null : n.parent().id(), classes: n.classes(),
                                     edges: n.connectedEdges().map((e) => e.id())};"""
DETAILS = """const text = (id) => document.getElementById(id).textContent;
             return [text("details-title"), text("details-sync"), Object.fromEntries(
               [...document.querySelectorAll("#details-counters tr")].map((tr) => [tr.cells[0].textContent,
                                                                                 tr.cells[1].textContent]))];"""


@pytest.fixture
def browser(tmp_path: Path, requirements: None) -> Iterator[webdriver.Chrome]:
    """Chromium (headless, a new empty profile) under chromedriver; both stopped at the end."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"the console test needs {missing} (Debian's chromium, chromium-driver): run `make install`")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
        service.stop()


def until(driver: webdriver.Chrome, check: Callable[[], Any], what: str) -> Any:
    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda _: check(), f"the console never showed {what}")


def row(driver: webdriver.Chrome, port: str) -> dict[str, str]:
    out: dict[str, str] = driver.execute_script(ROW, port)
    return out


def node(driver: webdriver.Chrome, element_id: str) -> dict[str, Any] | None:
    out: dict[str, Any] | None = driver.execute_script(NODE, element_id)
    return out


def shown_at(driver: webdriver.Chrome, port: str, hv: str) -> bool:
    """The ports table and the graph both put ``port`` on ``hv`` (in its box)."""
    graph = node(driver, f"port:{port}")
    return row(driver, port).get("hypervisor") == hv and graph is not None and graph["parent"] == f"hv:{hv}"


def click_node(driver: webdriver.Chrome, element_id: str) -> None:
    """Click where the graph draws the node, as a user does: its centre, or for a hypervisor's box
    a point inside its border, below its ports."""
    canvas = driver.find_element(By.ID, "graph")
    box = driver.execute_script("return window.overlayGraph.getElementById(arguments[0]).renderedBoundingBox("
                                "{includeLabels: false});", element_id)
    x = (box["x1"] + box["x2"]) / 2
    y = box["y2"] - 6 if element_id.startswith("hv:") else (box["y1"] + box["y2"]) / 2
    size = canvas.size
    ActionChains(driver).move_to_element_with_offset(canvas, int(x - size["width"] / 2),
                                                     int(y - size["height"] / 2)).click().perform()


def details(driver: webdriver.Chrome) -> tuple[str, str, dict[str, str]]:
    """What the details panel shows: its title, the sync line and the counters (read at once: the
    panel is redrawn as the state changes)."""
    title, sync, counters = driver.execute_script(DETAILS)
    return title, sync, counters


def test_a_new_port_appears_and_a_moved_port_changes_hypervisor_without_a_reload(ctl, make_bed, browser):
    overlay = deploy(ctl, make_bed(2, ctl.ofp_port), ports={k: v for k, v in PORTS.items() if v[3] != "hv3"})
    browser.get(ctl.url + "/")
    until(browser, lambda: shown_at(browser, "a1", "hv1") and shown_at(browser, "r2", "hv2"), "the deployed ports")
    until(browser, lambda: "in-sync" in (node(browser, "hv:hv2") or {}).get("classes", []), "hv2 in sync")
    browser.execute_script("window.sameDocument = true;")  # gone if the page were reloaded

    # a new port, declared through the API, on a VM that then appears on hv1
    put(ctl, "/v1/ports/a4", {"network": "blue", "mac": "02:aa:00:00:00:04", "ips": ["10.1.0.4"],
                              "hypervisor": "hv1", "interface": "tapA4"})
    overlay.bed.add_vm("a4", "hv1", "tapA4", "02:aa:00:00:00:04", ["10.1.0.4"])
    until(browser, lambda: shown_at(browser, "a4", "hv1"), "the new port a4 on hv1")
    assert "member:a4" in (node(browser, "port:a4") or {})["edges"]  # linked to its network
    assert row(browser, "a4") == {"name": "a4", "network": "blue", "hypervisor": "hv1", "interface": "tapA4",
                                  "source": "declared"}

    # a live migration: a2 (allowed to roam: a declared location alone makes a port "declared")
    # leaves hv2 for hv1 and announces itself; the controller learns the move
    net, mac, ips, hv, iface = PORTS["a2"]
    put(ctl, "/v1/ports/a2", {"network": net, "mac": mac, "ips": ips, "hypervisor": hv, "interface": iface,
                              "mobility": "learn"})
    overlay.bed.move_vm("a2", "hv1")
    overlay.send_frame("a2", GARP.format(mac="02:aa:00:00:00:02", ip="10.1.0.2"))
    until(browser, lambda: shown_at(browser, "a2", "hv1"), "a2 moved to hv1")
    assert row(browser, "a2")["source"] == "learned"
    until(browser, lambda: "port a2 moved hv2 → hv1" in browser.find_element(By.ID, "events").text,
          "the move in the event list")

    # clicking the port shows its JSON, its sync state and its counters
    click_node(browser, "hv:hv2")
    until(browser, lambda: details(browser)[:2] == ("hypervisor hv2", "sync: in sync"), "hv2's details")
    assert details(browser)[2]["ports"] == "1"  # r2 alone, now that a2 left
    # and its lines of /metrics, those labelled hypervisor="hv2"
    until(browser, lambda: details(browser)[2].get("ryu_overlay_switch_in_sync") == "1.0", "hv2's /metrics lines")
    counters = details(browser)[2]
    assert float(counters["ryu_overlay_switch_flows"]) > 0 and counters["ryu_overlay_switch_connected"] == "1.0"
    assert "ryu_overlay_answered_in_switch_total{protocol=arp}" in counters
    assert json.loads(browser.find_element(By.ID, "details-json").text) == ctl.api("GET", "/v1/hypervisors/hv2")[1]
    click_node(browser, "port:a2")
    until(browser, lambda: details(browser)[:2] == ("port a2", "sync: in sync"), "a2's details")
    assert json.loads(browser.find_element(By.ID, "details-json").text) == ctl.api("GET", "/v1/ports/a2")[1]
    counters = details(browser)[2]
    assert counters["mobility_seq"] == "1" and counters["recent moves"] == "1"
    if os.environ.get("CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["CONSOLE_SCREENSHOT"])

    # the tenant filter: globex sees its own ports only
    Select(browser.find_element(By.ID, "tenant")).select_by_value("globex")
    until(browser, lambda: node(browser, "port:a1") is None, "acme's ports hidden")
    assert [tr.get_attribute("data-port") for tr in browser.find_elements(By.CSS_SELECTOR, "#ports tbody tr")] \
        == ["r1", "r2"]
    assert node(browser, "port:r1") is not None and node(browser, "net:blue") is None
    assert browser.execute_script("return window.sameDocument;") is True
    # no script error and no blocked resource (a 404 on /v1/events, where it is missing, is not one)
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert [m for m in logged if "Failed to load resource" not in m] == []


def http(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_with_a_rest_token_the_console_asks_for_it_once(tmp_path, requirements, browser):
    ctl = ControllerProcess(tmp_path / "overlay.db", tmp_path / "controller.log", extra_args=("--rest-token", "s3cret"))
    ctl.start()
    try:
        for path, body in (("/v1/hypervisors/hv1", {"dpid": 1, "tunnel_ip": "198.18.0.1"}),
                           ("/v1/networks/blue", {"vni": 5001, "tenant": "acme"}),
                           ("/v1/ports/p1", {"network": "blue", "mac": "02:aa:00:00:00:01",
                                             "hypervisor": "hv1", "interface": "tapP1"})):
            assert http(ctl.url + path, "PUT", body, "s3cret") == 201
        browser.get(ctl.url + "/")
        dialog = browser.find_element(By.ID, "login")
        until(browser, dialog.is_displayed, "the token prompt")
        assert row(browser, "p1") == {}

        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.ID, "login-button").click()
        until(browser, lambda: "refused" in browser.find_element(By.ID, "login-error").text, "the token refused")
        assert row(browser, "p1") == {}

        browser.find_element(By.ID, "token").send_keys("s3cret")
        browser.find_element(By.ID, "login-button").click()
        until(browser, lambda: shown_at(browser, "p1", "hv1"), "p1 once the token is given")
        assert not dialog.is_displayed()
        assert http(ctl.url + "/v1/ports/p2", "PUT", {"network": "blue", "mac": "02:aa:00:00:00:02",
                                                       "hypervisor": "hv1", "interface": "tapP2"}, "s3cret") == 201
        until(browser, lambda: shown_at(browser, "p2", "hv1"), "p2, live, with the token")

        browser.refresh()  # the token is kept for the tab: no second prompt
        until(browser, lambda: shown_at(browser, "p2", "hv1"), "the ports after a reload")
        assert not browser.find_element(By.ID, "login").is_displayed()
        urls = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name);")
        assert urls and not any("s3cret" in u for u in urls)  # the token never travels in a URL
    finally:
        ctl.stop()
