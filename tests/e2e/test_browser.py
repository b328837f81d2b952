"""The provider as a person meets it in the Airflow UI, through a real headless Chromium.

The REST tests prove the data is there; these prove the UI renders it the way the provider info
declares: the connection form relabelled for Eachlabs with the unused fields hidden, and the
"Eachlabs prediction" button on a finished fill pointing at its prediction. Screenshots are kept
(``EACHLABS_E2E_SCREENSHOTS``, default ``build/e2e-screenshots``; ``make screenshots`` writes the
README's copies to ``docs/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import ADMIN_USER, ROOT, AirflowStack, require

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("EACHLABS_E2E_CHROMIUM", "/usr/bin/chromium"))
# The closed network: no update, sync, QUIC or first-run traffic, and a profile of our own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("EACHLABS_E2E_SCREENSHOTS", ROOT / "build" / "e2e-screenshots"))
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser_page(dags_ready: AirflowStack) -> Iterator[Page]:
    """A logged-in page in a fresh Chromium profile; the browser is closed (and its PID gone) after."""
    require(CHROMIUM.exists(), f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright package is not installed (pip install playwright)")
        raise
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="eachlabs-e2e-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                args=CHROMIUM_ARGS,  # the fresh profile goes in as --user-data-dir
                headless=True,
                viewport={"width": 1400, "height": 900},
            )
            context.set_default_timeout(TIMEOUT_MS)
            try:
                page = context.new_page()
                _login(page, dags_ready)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _login(page: Page, stack: AirflowStack) -> None:
    """The simple auth manager's login form, filled as a person would."""
    page.goto(f"{stack.base_url}/")
    page.wait_for_url("**/auth/login**")
    page.screenshot(path=str(SCREENSHOTS / "login.png"))
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[type=password]").fill(stack.password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(f"{stack.base_url}/")


def _label(page: Page, text: str) -> Any:
    return page.locator("label", has_text=text)


def test_new_eachlabs_connection_form(browser_page: Page, dags_ready: AirflowStack) -> None:
    """Type ``eachlabs``: "API Key" and "API host" fields with our labels; login, port, schema hidden."""
    page = browser_page
    page.goto(f"{dags_ready.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").click()
    dialog.get_by_role("combobox").fill("eachlabs")
    page.get_by_role("option", name="Eachlabs").first.click()
    api_key = _label(dialog, "API Key")
    api_key.first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "connection-form.png"), full_page=True)
    # The relabelled password field is a masked input, found through its own label.
    key_input = dialog.locator(f"#{api_key.first.get_attribute('for')}")
    assert key_input.get_attribute("type") == "password"
    assert _label(dialog, "API host").first.is_visible()
    placeholder = dialog.locator("input[placeholder='https://api.eachlabs.ai']")
    assert placeholder.count() == 1
    for hidden in ("Login", "Port", "Schema"):
        assert _label(dialog, hidden).filter(has_text=f"^{hidden}$").count() == 0, hidden
        assert not dialog.get_by_label(hidden, exact=True).is_visible(), hidden
    # The provider's own fields (conn-fields) are offered, under Airflow's "Extra Fields".
    extra = dialog.get_by_text("Extra Fields")
    if extra.count():
        extra.first.click()
    for own in ("Request timeout (seconds)", "Retries per request"):
        assert _label(dialog, own).count() >= 1, own


def test_eachlabs_prediction_link_on_a_finished_fill(browser_page: Page, dags_ready: AirflowStack) -> None:
    """A finished fill's Details tab shows the "Eachlabs prediction" button, pointing at its prediction."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_flux_fill")
    assert stack.api.wait_run("eachlabs_flux_fill", run_id) == "success", stack.logs()
    prediction_id = stack.api.xcom("eachlabs_flux_fill", run_id, "remove_crate", "prediction_id")
    page = browser_page
    task_url = f"{stack.base_url}/dags/eachlabs_flux_fill/runs/{run_id}/tasks/remove_crate"
    page.goto(task_url)
    page.get_by_text(f"Created Eachlabs prediction {prediction_id}").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "task-log.png"))
    page.goto(f"{task_url}/details")
    link = page.get_by_role("link", name="Eachlabs prediction")
    link.wait_for()
    href = link.get_attribute("href")
    assert (
        href == f"/dags/eachlabs_flux_fill/runs/{quote(run_id, safe='')}/tasks/remove_crate/plugin/eachlabs"
    ), href
    page.screenshot(path=str(SCREENSHOTS / "prediction-link.png"))
