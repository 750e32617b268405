"""A manual run from the Prefect UI, in a real browser (issues 6, 13), with the processes started
exactly as the README starts them (`niftytune server --home var`, `niftytune serve --home var`,
nothing exported; tests/flows/readme_processes.py): on the deployment's page, Run -> Custom run,
fill the generated form's plain fields, submit; the run completes in the serve process and its
four artifacts show in the UI. Screenshots go to test-artifacts/ (the form, the completed run's
artifacts, each artifact)."""
from __future__ import annotations

import re
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

from adapters_registry import Registry
from tests.flows.conftest import ARTIFACTS_DIR, log_tail, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AS_OF = date(2025, 3, 28)  # a Friday session
TICKERS = ["^NSEI", "TCS.NS"]
MAX_STEPS = 2  # the profile says 4: a non-default value, and a quicker run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.readme_server,  # run on its own, after the rest (`make test`)
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser: {CHROMIUM} is missing "
                       "(apt-get install chromium; .ci/run installs it)"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="no browser driver: the playwright module is "
                                 "not installed (pip install playwright; .ci/run installs it)")


def form_property(page, label: str):
    """The generated form's block for one parameter field, found by its label (a plain field)."""
    return page.locator(f"xpath=//span[contains(@class, 'schema-form-property__label')]"
                        f"[normalize-space()='{label} (Optional)']/ancestor::div[contains(concat(' ', "
                        f"normalize-space(@class), ' '), ' schema-form-property ')][1]")


def fill_custom_run_form(page, run_name: str, profile: Path) -> None:
    """Run name, as_of (date picker), tickers (list), profile (text), max_steps (number): each
    a plain input under its label, no type to pick first (issue 13)."""
    page.locator(".flow-run-name-input input").fill(run_name)
    as_of = form_property(page, "As Of")
    as_of.locator(".p-date-button__control").click()
    page.locator(".p-date-picker input").fill(AS_OF.isoformat())
    page.get_by_role("button", name="Apply").click()
    tickers = form_property(page, "Tickers")
    for i, symbol in enumerate(TICKERS):
        tickers.get_by_role("button", name="Add item").click()
        tickers.locator("input, textarea").nth(i).fill(symbol)
    form_property(page, "Profile").locator("textarea").fill(str(profile))
    form_property(page, "Max Steps").locator("input").fill(str(MAX_STEPS))


def flow_run_id(served, run_name: str) -> str:
    """The id of the flow run the form created, once the API lists it."""
    def find() -> str | None:
        runs = served.server.post("/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        return runs[0]["id"] if runs else None

    return wait_for(f"flow run {run_name} created from the UI", find, 30, log=served.log)


def wait_for_final_state(served, run_name: str, timeout: float = 300) -> dict:
    """The run's record once it is final; fails with the serve log when it is not Completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = served.server.post("/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
        if runs and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert runs[0]["state_type"] == "COMPLETED", f"{runs[0]['state_name']}: {log_tail(served.log)}"
            return runs[0]
        time.sleep(2)
    pytest.fail(f"run {run_name} not final within {timeout:.0f} s; serve log tail:\n{log_tail(served.log)}")


ARTIFACT_KEYS = ("daily-retrain-decision", "market-coverage", "answer-accuracy", "registered-version")


def screenshot(page, name: str) -> Path:
    path = ARTIFACTS_DIR / f"ui-{name}.png"
    page.screenshot(path=path, full_page=True, animations="disabled")
    return path


def check_form_is_plain_fields(page) -> None:
    """Issue 13: no field opens on a "None" type tab, and the form is titled for an operator."""
    playwright.expect(page.get_by_text("Run settings", exact=True)).to_be_visible()
    assert page.get_by_text("Property is type None").count() == 0
    playwright.expect(form_property(page, "Max Steps").locator("input")).to_be_visible()


def artifact_shows(page, key: str):
    """What each artifact's page shows once it has rendered."""
    return {"daily-retrain-decision": page.get_by_role("heading", name=re.compile(rf"daily-retrain {AS_OF}: ")),
            "market-coverage": page.locator("table").get_by_text("TCS.NS", exact=True),
            "answer-accuracy": page.locator("table").get_by_text("probes", exact=True),
            "registered-version": page.get_by_text("Folder (copy the path", exact=False)}[key].first


def open_artifacts(page, server_url: str, run_id: str, run_name: str, shots: list[Path]) -> None:
    """The run's Artifacts tab lists the four keys; each opens readable (one screenshot each);
    the key link under *Artifact* opens that key's history across runs."""
    page.get_by_text("Artifacts", exact=True).click()
    for key in ARTIFACT_KEYS:
        page.get_by_text(key, exact=True).last.wait_for()
    shots.append(screenshot(page, "custom-run-completed"))
    for key in ARTIFACT_KEYS:
        page.goto(f"{server_url}/runs/flow-run/{run_id}")
        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text(key, exact=True).last.click()
        page.wait_for_url(re.compile(r"/artifacts/artifact/"))
        artifact_shows(page, key).wait_for()
        if key == "market-coverage":
            check_coverage_fits(page)
        shots.append(screenshot(page, f"artifact-{key}"))
    page.get_by_role("link", name="registered-version", exact=True).first.click()  # the key, right column
    page.wait_for_url(re.compile(r"/artifacts/key/"))
    page.get_by_text(run_name, exact=True).first.wait_for()  # the key's history lists this run
    shots.append(screenshot(page, "artifact-key-history"))


def check_coverage_fits(page) -> None:
    """Issue 13: the coverage table was 2,053 px wide in a 702 px pane; now it fits its pane."""
    widths = page.locator("table").first.evaluate("t => [t.scrollWidth, t.parentElement.clientWidth]")
    assert widths[0] <= widths[1], f"coverage table {widths[0]} px wide in a {widths[1]} px pane"


def screenshot_log_end(page) -> Path:
    """The end of the run's logs (scores, decision), scrolled into view."""
    page.get_by_text("Logs", exact=True).first.click()
    page.get_by_text("decision: ", exact=False).first.scroll_into_view_if_needed()
    return screenshot(page, "custom-run-logs-end")


def test_custom_run_from_the_ui_completes_and_shows_its_four_artifacts(served_deployment, fast_profile, capsys):
    served, run_name = served_deployment, f"ui-custom-run-{uuid.uuid4().hex[:6]}"
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    for old in ARTIFACTS_DIR.glob("ui-*.png"):  # only this run's screenshots are reported
        old.unlink()
    shots: list[Path] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1800})  # a ~700 px artifact pane
        page.set_default_timeout(30_000)
        try:
            # 1. The deployment's page: Run -> Custom run opens the parameter form.
            page.goto(f"{served.server.url}/deployments/deployment/{served.id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run", exact=True).click()
            check_form_is_plain_fields(page)
            fill_custom_run_form(page, run_name, fast_profile)
            shots.append(screenshot(page, "custom-run-form"))
            page.get_by_role("button", name="Submit").click()
            page.wait_for_url(re.compile(rf"/deployments/deployment/{served.id}(\?|$)"))  # back: created
            # 2. The run's page (found by the name we gave it: the deployment's run list may lag).
            run_id = flow_run_id(served, run_name)
            page.goto(f"{served.server.url}/runs/flow-run/{run_id}")
            record = wait_for_final_state(served, run_name)
            playwright.expect(page.locator(".page-heading .state-badge").first).to_have_text(
                "Completed", timeout=30_000)
            shots.append(screenshot(page, "custom-run-logs"))
            shots.append(screenshot_log_end(page))
            # 3. Its four artifacts; the decision names the session and the outcome.
            open_artifacts(page, served.server.url, run_id, run_name, shots)
            page.goto(f"{served.server.url}/runs/flow-run/{run_id}")
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("daily-retrain-decision", exact=True).last.click()
            playwright.expect(page.get_by_role("heading", name=re.compile(
                rf"daily-retrain {AS_OF}: (promoted|rejected)"))).to_be_visible()
        finally:
            shots.append(screenshot(page, "custom-run-last-page"))
            browser.close()
            with capsys.disabled():
                print(f"\n[browser test] screenshots: {', '.join(str(s) for s in shots if s.exists())}")
    params = record["parameters"]["params"]  # what the form sent, as the server recorded it
    assert {k: params.get(k) for k in ("as_of", "tickers", "max_steps", "profile", "home")} == {
        "as_of": str(AS_OF), "tickers": TICKERS, "max_steps": MAX_STEPS, "profile": str(fast_profile),
        "home": str(served.home)}
    assert [v for v in Registry(served.home).list() if f"-{AS_OF:%Y%m%d}-" in v.version]


def test_a_skipped_day_reads_as_of_its_own_date_with_its_reason_in_the_logs(served_deployment, capsys):
    # Issue 13: a skip on 2019-11-30 was titled "daily-retrain 2019-11-29: skipped", and its
    # reason reached only the terminal.
    served = served_deployment
    run = served.create_run(name=f"ui-skip-{uuid.uuid4().hex[:6]}", as_of="2019-11-30", source="synthetic")
    assert served.wait_final(run["id"], timeout=120)["state_type"] == "COMPLETED"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1200})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{served.server.url}/runs/flow-run/{run['id']}")
            page.get_by_text("skipped: not a trading day (Saturday)", exact=True).first.wait_for()
            shots = [screenshot(page, "skip-run-logs")]
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("daily-retrain-decision", exact=True).last.click()
            playwright.expect(page.get_by_role("heading", name="daily-retrain 2019-11-30: skipped")).to_be_visible()
            page.get_by_text("the last NSE session before it: 2019-11-29", exact=False).first.wait_for()
            shots.append(screenshot(page, "artifact-skip-decision"))
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\n[browser test] screenshots: {', '.join(str(s) for s in shots)}")
