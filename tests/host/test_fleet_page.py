"""The stand-in's live fleet page in a real headless browser (Debian's chromium, driven by playwright).

The simulated firmware works the jobs; a second thing (a paho client) publishes retained
telemetry and never takes a job, so a job for it stays QUEUED until the page cancels it. The
page is never reloaded: everything it shows arrives over its event stream. A screenshot is
saved to build/fleet-page.png.
"""

import json
import urllib.request
from pathlib import Path

import pytest

from tests.host.e2e import Rig
from tools.standin.device import Device

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "build" / "fleet-page.png"
# the machine's network is closed: nothing that phones home, no GPU, no sandbox (root in CI)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is in requirements.txt: make setup"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: make setup installs it (apt-get install chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    rig = Rig(tmp_path_factory.mktemp("fleet")).start()
    yield rig
    rig.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with playwright.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


def _execution(page, job_id: str, thing: str):
    return page.locator(f'[data-execution="{job_id}/{thing}"] [data-status]')


def test_fleet_page_is_live_creates_and_cancels_jobs(rig, browser):
    expect = playwright.expect
    esp32 = rig.device("fleet-esp32")
    sensor = Device.connect(rig.aws, "fleet-sensor", subscribe=[])
    try:
        telemetry = {"uptime": 321, "temp_c": 21.5, "app": "sensor-1"}
        sensor.client.publish("logi2/device/fleet-sensor", json.dumps(telemetry), qos=1, retain=True)

        page = browser.new_page()
        errors: list = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(rig.aws.control.fleet_url)
        expect(page.locator("#live")).to_have_text("live", timeout=10_000)
        expect(page.locator('[data-thing="fleet-esp32"] [data-connected]')).to_have_attribute(
            "data-connected", "yes"
        )
        expect(page.locator('[data-thing="fleet-sensor"] .telemetry')).to_contain_text(
            "temp_c=21.5", timeout=10_000
        )

        # a job that keeps the device busy, and one queued behind it: QUEUED -> IN_PROGRESS -> SUCCEEDED
        rig.aws.create_job(
            "pulse", {"operation": "gpio.pulse", "pin": "RELAY1", "value": 1, "ms": 2500}, ["fleet-esp32"]
        )
        rig.aws.create_job("after-pulse", {"operation": "diag.echo", "message": "next"}, ["fleet-esp32"])
        expect(_execution(page, "pulse", "fleet-esp32")).to_have_attribute(
            "data-status", "IN_PROGRESS", timeout=15_000
        )
        expect(page.locator('[data-execution="pulse/fleet-esp32"] .details')).to_contain_text(
            "step=pulsing", timeout=10_000
        )
        queued = _execution(page, "after-pulse", "fleet-esp32")
        expect(queued).to_have_attribute("data-status", "QUEUED")
        expect(queued).to_have_attribute("data-status", "SUCCEEDED", timeout=20_000)
        expect(_execution(page, "pulse", "fleet-esp32")).to_have_attribute("data-status", "SUCCEEDED")
        expect(page.locator('[data-job="pulse"] [data-job-status]')).to_have_attribute(
            "data-job-status", "COMPLETED"
        )

        # create a job from the page: the firmware runs it
        page.fill("#job-id", "from-the-page")
        page.select_option("#targets", label="fleet-esp32")
        page.fill("#document", '{"operation": "diag.echo", "message": "clicked"}')
        page.click("#create-job")
        expect(page.locator("#message")).to_have_text("created from-the-page")
        expect(_execution(page, "from-the-page", "fleet-esp32")).to_have_attribute(
            "data-status", "SUCCEEDED", timeout=20_000
        )
        assert rig.aws.describe_execution("from-the-page", "fleet-esp32")["status"] == "SUCCEEDED"

        # a bad document is refused on the page, in words
        page.fill("#job-id", "bad-doc")
        page.fill("#document", "{not json")
        page.click("#create-job")
        expect(page.locator("#message")).to_contain_text("not JSON")

        # create one for the sensor (which takes no jobs), then cancel it from the page
        page.fill("#job-id", "to-cancel")
        page.select_option("#targets", label="fleet-sensor")
        page.fill("#document", '{"operation": "diag.echo", "message": "never run"}')
        page.click("#create-job")
        expect(_execution(page, "to-cancel", "fleet-sensor")).to_have_attribute("data-status", "QUEUED")
        page.click('[data-cancel="to-cancel"]')
        expect(_execution(page, "to-cancel", "fleet-sensor")).to_have_attribute("data-status", "CANCELED")
        expect(page.locator('[data-job="to-cancel"] [data-job-status]')).to_have_attribute(
            "data-job-status", "CANCELED"
        )
        assert rig.aws.describe_job("to-cancel")["status"] == "CANCELED"
        assert rig.aws.describe_job("to-cancel")["comment"] == "canceled from the fleet page"

        # the device going away shows too
        sensor.close()
        expect(page.locator('[data-thing="fleet-sensor"] [data-connected]')).to_have_attribute(
            "data-connected", "no"
        )
        expect(page.locator('[data-thing="fleet-sensor"]')).to_contain_text("CLIENT_INITIATED_DISCONNECT")
        page.wait_for_timeout(300)  # let the clock tick once
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert SCREENSHOT.stat().st_size > 10_000
        assert errors == []
        page.close()
    finally:
        sensor.close()
        esp32.stop()


def test_make_run_keep_prints_the_fleet_page(rig, tmp_path, capsys, monkeypatch):
    from tools import run

    def stop(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(run.time, "sleep", stop)
    run.keep_up(rig.aws, tmp_path)
    url = rig.aws.control.fleet_url
    assert (
        f"fleet page (devices, jobs, executions, live; create and cancel jobs): {url}"
        in capsys.readouterr().out
    )
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/html") and b"<title>Fleet" in answer.read()
