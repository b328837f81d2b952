"""The provider as a person meets it in the Airflow UI, through a real headless Chromium.

The REST tests prove the data is there; these prove the UI renders it the way the provider info
and the plugin declare: the connection form relabelled for Eachlabs with the unused fields hidden,
its "Test Connection" button connecting, the "Eachlabs prediction" button on a finished fill
opening its Eachlabs tab, the tab's before, mask and after images drawn for a succeeded fill and the
reason in plain sight for a rejected one, and the fills page in the navigation, all without a
console error. Screenshots are kept
(``EACHLABS_E2E_SCREENSHOTS``, default ``build/e2e-screenshots``; ``make screenshots`` writes the
README's copies to ``docs/screenshots``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import ADMIN_USER, API_KEY, ROOT, AirflowStack, require

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


def test_the_test_button_of_an_eachlabs_connection(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    """Add an Eachlabs connection through the form (no port: the form hides it), then press its
    "Test Connection" button in the list: the UI posts the row with ``port: 0``, and the toast says
    "Connected to Eachlabs at <host>"."""
    stack = dags_ready
    conn_id = "eachlabs_ui_test"
    host = stack.fast_sim.base_url
    before = stack.fast_sim.counters.executions
    page = browser_page
    page.goto(f"{stack.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_role("combobox").click()
    dialog.get_by_role("combobox").fill("eachlabs")
    page.get_by_role("option", name="Eachlabs").first.click()
    api_key = _label(dialog, "API Key")
    api_key.first.wait_for()
    dialog.locator(f"#{_label(dialog, 'API host').first.get_attribute('for')}").fill(host)
    dialog.locator(f"#{api_key.first.get_attribute('for')}").fill(API_KEY)
    try:
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")
        page.reload()  # the "created" toast gone: the screenshot shows the test's alone
        row = page.get_by_role("row").filter(has_text=conn_id)
        with page.expect_response("**/api/v2/connections/test") as tested:
            row.get_by_role("button", name="Test Connection").click()
        # The row as listed, the key masked; Airflow 3.3's UI sends port 0 (Number(null)) for none.
        sent = {k: v for k, v in tested.value.request.post_data_json.items() if k != "password"}
        assert tested.value.status == 200, f"{tested.value.status} {tested.value.text()} for {sent}"
        toast = page.get_by_role("status").filter(has_text="Test Connection")
        toast.first.wait_for()
        text = toast.first.inner_text()
        page.wait_for_timeout(1000)  # the toast has slid in
        page.screenshot(path=str(SCREENSHOTS / "connection-test.png"))
        assert "Test Connection Successful" in text, text
        assert f"Connected to Eachlabs at {host}" in text, text
        assert stack.fast_sim.counters.executions > before  # the button reached the API
    finally:
        stack.api.request("DELETE", f"/connections/{conn_id}", expect=(204, 404))
    # Airflow 3.2's connection form loads its code editor (Monaco) from a CDN, which this offline
    # machine cannot reach: the failed load, its bare "Event" page error and Monaco's own report of it
    # are the UI's, not ours. Anything else fails the test.
    offline = any("cdn.jsdelivr.net" in error for error in console_errors)
    editor = ("cdn.jsdelivr.net", "Monaco initialization: error")
    ours = [e for e in console_errors if not (offline and (e == "Event" or any(m in e for m in editor)))]
    assert ours == []


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
    if link.get_attribute("target") == "_blank":  # Airflow 3.2 opens every extra link in a new tab
        with page.context.expect_page() as opened:
            link.click()
        landed = opened.value
    else:
        link.click()
        landed = page
    try:
        landed.wait_for_url("**/plugin/eachlabs")
        tab = _eachlabs_frame(landed, "eachlabs/ti/")
        tab.get_by_text(prediction_id).first.wait_for()
    finally:
        if landed is not page:
            landed.close()


def _eachlabs_frame(page: Page, path: str) -> Any:
    """The plugin's page inside the UI's iframe, once its document has loaded."""
    iframe = page.locator(f"iframe[src^='{path}']")  # a relative src: below [api] base_url
    iframe.wait_for()
    frame = iframe.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state("load")
    return frame


@pytest.fixture()
def console_errors(browser_page: Page) -> Iterator[list[str]]:
    """Every console error and uncaught script error while the test runs, from any frame."""
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"{message.text} at {message.location.get('url')}")

    def on_page_error(error: Any) -> None:
        errors.append(str(error))

    browser_page.on("console", on_console)
    browser_page.on("pageerror", on_page_error)
    yield errors
    browser_page.remove_listener("console", on_console)
    browser_page.remove_listener("pageerror", on_page_error)


def _tall_screenshot(page: Page, name: str) -> None:
    """The plugin's pages scroll inside the UI's iframe: a taller window shows them whole."""
    page.set_viewport_size({"width": 1400, "height": 1300})
    try:
        page.wait_for_timeout(300)  # the iframe re-lays out
        page.screenshot(path=str(SCREENSHOTS / name))
    finally:
        page.set_viewport_size({"width": 1400, "height": 900})


def _drawn_widths(frame: Any, selector: str, name: str) -> dict[str, int]:
    """Once every image ``selector`` finds has loaded or failed: each one's natural width (0 when not
    drawn), by ``name``, a JavaScript expression on ``img`` (its kind, key or address)."""
    images = f"Array.from(document.querySelectorAll({selector!r}))"
    frame.wait_for_function(f"() => {images}.every(img => img.complete)")
    return dict(frame.evaluate(f"() => {images}.map(img => [{name}, img.naturalWidth])"))


def test_the_eachlabs_tab_draws_before_mask_and_after(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    """Click the task's "Eachlabs" tab: three images, each drawn (natural width above zero)."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_flux_fill")
    assert stack.api.wait_run("eachlabs_flux_fill", run_id) == "success", stack.logs()
    prediction_id = stack.api.xcom("eachlabs_flux_fill", run_id, "remove_crate", "prediction_id")
    page = browser_page
    page.goto(f"{stack.base_url}/dags/eachlabs_flux_fill/runs/{run_id}/tasks/remove_crate")
    page.get_by_role("link", name="Eachlabs", exact=True).click()
    tab = _eachlabs_frame(page, "eachlabs/ti/")
    tab.get_by_text(prediction_id).first.wait_for()
    assert _drawn_widths(tab, "img[data-kind]", "img.dataset.kind") == {
        "before": 512,
        "mask": 512,
        "after": 512,
    }
    assert tab.get_by_text("success", exact=True).first.is_visible()
    _tall_screenshot(page, "eachlabs-tab-success.png")
    assert tab.evaluate("() => document.documentElement.dataset.theme") == "light"
    page.evaluate("() => localStorage.setItem('theme', 'dark')")  # the UI's own theme setting
    try:
        page.reload()
        tab = _eachlabs_frame(page, "eachlabs/ti/")
        tab.get_by_text(prediction_id).first.wait_for()
        assert tab.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert tab.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(15, 20, 26)"
        _tall_screenshot(page, "eachlabs-tab-dark.png")
    finally:
        page.evaluate("() => localStorage.setItem('theme', 'light')")
    assert console_errors == []


def test_the_eachlabs_tab_of_a_rejected_fill_says_why(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    stack.fast_sim.inject("create", "fail", error_code="PROVIDER_REJECTED", error_message="flagged input")
    try:
        run_id = stack.api.trigger("eachlabs_flux_fill")
        assert stack.api.wait_run("eachlabs_flux_fill", run_id) == "failed"
    finally:
        stack.fast_sim.clear_faults()
    page = browser_page
    page.goto(f"{stack.base_url}/dags/eachlabs_flux_fill/runs/{run_id}/tasks/remove_crate/plugin/eachlabs")
    tab = _eachlabs_frame(page, "eachlabs/ti/")
    failure = tab.locator(".failure")
    failure.wait_for()
    assert "The prediction failed (PROVIDER_REJECTED)" in failure.inner_text()
    assert "content policy rejected the input" in failure.inner_text()
    assert tab.get_by_text("Not shown: the prediction failed, so it has no output").is_visible()
    assert _drawn_widths(tab, "img[data-kind]", "img.dataset.kind") == {"before": 512, "mask": 512}
    _tall_screenshot(page, "eachlabs-tab-failure.png")
    assert console_errors == []


def test_the_eachlabs_tab_of_a_batch_shows_its_outputs(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    """One batch task: its counts, and a grid of its outputs, each drawn."""
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    run_id = stack.api.trigger("eachlabs_batch_operator")
    assert stack.api.wait_run("eachlabs_batch_operator", run_id, 240) == "success", stack.logs()
    page = browser_page
    page.goto(f"{stack.base_url}/dags/eachlabs_batch_operator/runs/{run_id}/tasks/fill_all")
    page.get_by_role("link", name="Eachlabs", exact=True).click()
    tab = _eachlabs_frame(page, "eachlabs/ti/")
    assert tab.locator("#stored").inner_text() == "3"
    widths = _drawn_widths(tab, ".grid img", "img.alt")
    assert len(widths) == 3 and all(width > 0 for width in widths.values()), widths
    _tall_screenshot(page, "eachlabs-batch-tab.png")
    assert console_errors == []


def test_the_fills_page_in_the_navigation(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    """Browse > Eachlabs fills: the figures, and a thumbnail drawn for each succeeded fill shown."""
    page = browser_page
    page.goto(f"{dags_ready.base_url}/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Eachlabs fills").click()
    page.wait_for_url("**/plugin/eachlabs-fills")
    fills = _eachlabs_frame(page, "eachlabs/")
    assert int(fills.locator("#bought").inner_text()) >= 2
    widths = _drawn_widths(fills, "img.thumb", "img.src")
    assert widths and all(width > 0 for width in widths.values()), widths
    # An output that can no longer be read (a fill of another API host, its output never stored) is
    # drawn as "no image" with the reason; the example's stored outputs are real thumbnails.
    answers = {src: page.request.get(src) for src in widths}
    kinds = {src: answer.headers["content-type"] for src, answer in answers.items()}
    example = [src for src in kinds if "/eachlabs_flux_fill/" in src]
    assert example and all(kinds[src] in ("image/png", "image/jpeg") for src in example), kinds
    for src, answer in answers.items():
        if kinds[src] == "image/svg+xml":
            assert "no image</text>" in answer.text() and "<title>" in answer.text(), answer.text()
    _tall_screenshot(page, "eachlabs-fills.png")
    assert console_errors == []


def test_a_fill_is_reviewed_in_the_eachlabs_tab_and_listed_in_required_actions(
    browser_page: Page, dags_ready: AirflowStack, console_errors: list[str]
) -> None:
    """The review form in the tab answers through Airflow's HITL REST API with the browser's own
    login: a re-fill with a new prompt buys one more fill, approval stores it."""
    from tests.e2e.test_review import DAG_ID, TASK_ID, waiting_for_review

    if importlib.util.find_spec("airflow.models.task_state_store") is None:
        pytest.skip("waits in Airflow 3.3's awaiting_input (3.2 defers to a HITLTrigger)")

    stack = dags_ready
    sim = stack.fast_sim
    stack.use_simulator(sim)
    known = set(sim.predictions)
    run_id = stack.api.trigger(DAG_ID)
    first = waiting_for_review(stack, run_id, 1)["outcome"]["prediction_id"]
    page = browser_page
    page.goto(f"{stack.base_url}/required_actions")
    page.get_by_text(f"Review the fill of {TASK_ID}").first.wait_for()
    _tall_screenshot(page, "required-actions.png")

    page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/{TASK_ID}/plugin/eachlabs")
    tab = _eachlabs_frame(page, "eachlabs/ti/")
    tab.locator("#review-form").wait_for()
    assert _drawn_widths(tab, "img[data-kind]", "img.dataset.kind") == {
        "before": 512,
        "mask": 512,
        "after": 512,
    }
    _tall_screenshot(page, "eachlabs-tab-review.png")
    tab.locator("textarea[name=prompt]").fill("a green meadow, the crate gone")
    tab.locator("button[data-choice='Re-fill']:enabled").click()  # enabled 3 s after the page loads
    tab.get_by_text("Re-fill: sent; the task resumes.").wait_for()
    second = waiting_for_review(stack, run_id, 2)["outcome"]["prediction_id"]
    assert set(sim.predictions) - known == {first, second}
    assert sim.predictions[second].input["prompt"] == "a green meadow, the crate gone"

    page.reload()
    tab = _eachlabs_frame(page, "eachlabs/ti/")
    tab.get_by_text(second).first.wait_for()
    tab.locator("button[data-choice='Approve']:enabled").click()
    tab.get_by_text("Approve: sent; the task resumes.").wait_for()
    assert stack.api.wait_run(DAG_ID, run_id, 120) == "success", stack.logs()
    assert stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")["prediction_id"] == second
    assert console_errors == []
