"""The viewer page driven by headless Chromium against the real system.

Covers: slide browser (groups, thumbnails, filter), tiles over the websocket
(and drawn on the canvas), zooming to finer DeepZoom levels, view restore from
the URL hash, reconnecting after the gateway restarts, and a screenshot.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"browser tests need the system Chromium at {CHROMIUM}"),
]

Server = Any  # conftest.Server: .base, .stats(), .procs, .flags

COUNTERS = "() => Object.assign({}, window.tilerouter, {viewer: undefined})"

# Sample the OpenSeadragon output canvas: fraction of painted pixels and the spread
# of their luminance (a blank or single-colour canvas has spread ~0).
CANVAS_STATS = """() => {
  const v = window.tilerouter && window.tilerouter.viewer;
  if (!v || !v.drawer || !v.drawer.canvas) return null;
  const src = v.drawer.canvas;
  if (!src.width || !src.height) return null;
  const c = document.createElement('canvas');
  c.width = src.width; c.height = src.height;
  const ctx = c.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(src, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let n = 0, painted = 0, sum = 0, sum2 = 0;
  const colours = new Set();
  const step = 7;
  for (let y = 0; y < c.height; y += step) {
    for (let x = 0; x < c.width; x += step) {
      const i = (y * c.width + x) * 4;
      n++;
      if (d[i + 3] < 200) continue;
      painted++;
      const l = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += l; sum2 += l * l;
      colours.add((d[i] >> 3) << 10 | (d[i + 1] >> 3) << 5 | (d[i + 2] >> 3));
    }
  }
  const mean = painted ? sum / painted : 0;
  const variance = painted ? Math.max(0, sum2 / painted - mean * mean) : 0;
  return {painted: painted / n, std: Math.sqrt(variance), colours: colours.size};
}"""


def counters(page: Any) -> dict[str, Any]:
    return page.evaluate(COUNTERS)


def poll(page: Any, predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll a Python predicate over the page with a deadline (Playwright calls are bounded)."""
    return wait_for(lambda: predicate(page), timeout, what=what, interval=0.1)


def open_slide(page: Any, server: Server, path: str) -> None:
    page.goto(f"{server.base}/")
    page.locator(f'.slide-card[data-path="{path}"]').click()
    page.wait_for_function("() => window.tilerouter && window.tilerouter.tilesReceived > 0",
                           timeout=20_000)


def canvas_painted(page: Any) -> dict[str, Any] | None:
    stats = page.evaluate(CANVAS_STATS)
    if stats and stats["painted"] > 0.2 and stats["std"] > 8 and stats["colours"] > 20:
        return stats
    return None


def settled(page: Any, quiet_s: float = 0.6, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the viewer is fully loaded and no tile arrived for ``quiet_s`` seconds."""
    page.wait_for_function(
        """(quiet) => {
          const t = window.tilerouter, v = t && t.viewer;
          if (!v || !v.world.getItemCount() || !v.world.getItemAt(0).getFullyLoaded()) return false;
          const n = t.tilesReceived + t.tileErrors;
          if (window.__trLastN !== n) { window.__trLastN = n; window.__trLastAt = Date.now(); }
          return Date.now() - window.__trLastAt > quiet * 1000;
        }""",
        arg=quiet_s, timeout=timeout * 1000, polling=100)
    return counters(page)


# --------------------------------------------------------------------------- tests

def test_slide_list_shows_slides_grouped_by_folder(page: Any, server: Server) -> None:
    page.goto(f"{server.base}/")
    cards = page.locator("#slide-list .slide-card")
    poll(page, lambda p: cards.count() == 2, what="two slide cards")
    paths = sorted(cards.evaluate_all("els => els.map(e => e.dataset.path)"))
    assert paths == ["alpha.tiff", "cases/beta.tiff"]

    groups = page.locator("#slide-list .slide-group")
    assert sorted(groups.evaluate_all("els => els.map(e => e.dataset.folder)")) == ["", "cases"]
    sub_group = page.locator('#slide-list .slide-group[data-folder="cases"]')
    assert sub_group.locator(".slide-card").count() == 1
    assert "beta.tiff" in sub_group.inner_text()

    # Each card gets a thumbnail (blob URL fetched over the websocket) and its info.
    poll(page, lambda p: p.locator("#slide-list .slide-card .thumb img").count() == 2,
         what="thumbnails")
    srcs = page.locator("#slide-list .slide-card .thumb img").evaluate_all(
        "els => els.map(e => [e.src, e.naturalWidth])")
    assert all(src.startswith("blob:") for src, _ in srcs), srcs
    poll(page, lambda p: all(n > 0 for _, n in p.locator("#slide-list .thumb img").evaluate_all(
        "els => els.map(e => [e.src, e.naturalWidth])")), what="thumbnails decoded")
    poll(page, lambda p: "4,000 × 3,000" in p.locator('.slide-card[data-path="alpha.tiff"]')
         .inner_text(), what="dimensions on the card")
    card_text = page.locator('.slide-card[data-path="alpha.tiff"]').inner_text()
    assert "0.25 µm/px" in card_text

    # The filter box narrows the list.
    page.fill("#slide-filter", "beta")
    poll(page, lambda p: p.locator("#slide-list .slide-card:visible").count() == 1,
         what="filter to one card")
    assert page.locator("#slide-list .slide-card:visible").get_attribute("data-path") == \
        "cases/beta.tiff"
    page.fill("#slide-filter", "")
    poll(page, lambda p: p.locator("#slide-list .slide-card:visible").count() == 2,
         what="filter cleared")

    # Connection badge reports a live socket.
    assert page.get_attribute("#conn-status", "data-state") == "open"


def test_open_slide_loads_tiles_over_websocket(page: Any, server: Server) -> None:
    before = server.stats()["routing"]["replies"]
    http_tiles: list[str] = []
    page.on("request", lambda r: http_tiles.append(r.url) if "/dz/" in r.url else None)

    open_slide(page, server, "cases/beta.tiff")
    stats = poll(page, canvas_painted, what="tiles painted on the canvas")
    c = counters(page)
    assert c["tilesReceived"] > 0 and c["tilesRequested"] >= c["tilesReceived"]
    assert c["tileErrors"] == 0
    assert c["socketState"] == "open"
    assert stats["painted"] > 0.2
    assert not http_tiles, f"tiles must come over the websocket, not HTTP: {http_tiles[:3]}"

    # The router saw (at least) those tiles.
    wait_for(lambda: server.stats()["routing"]["replies"] >= before + c["tilesReceived"], 10,
             what="router replies to increase")

    # Side panel, scale bar, URL hash.
    assert page.inner_text("#info-name") == "beta.tiff"
    summary = page.inner_text("#info-summary")
    assert "4,000 × 3,000 px" in summary and "0.25 µm/px" in summary
    assert page.locator("#scalebar").is_visible()
    assert page.inner_text("#scalebar .scalebar-label").strip().endswith(("µm", "mm"))
    poll(page, lambda p: "slide=cases%2Fbeta.tiff" in p.evaluate("location.hash")
         and "zoom=" in p.evaluate("location.hash"), what="hash to name the slide and view")


def test_zoom_requests_finer_levels_and_hash_restores_view(page: Any, server: Server) -> None:
    open_slide(page, server, "alpha.tiff")
    base = settled(page)
    max_level = page.evaluate("() => tilerouter.viewer.source.maxLevel")
    assert 0 <= base["lastLevel"] < max_level

    received = base["tilesReceived"]
    page.evaluate("""() => {
      const vp = tilerouter.viewer.viewport;
      // viewport y runs 0..height/width (0.75 here): 0.21 is 28% of the slide height
      vp.panTo(new OpenSeadragon.Point(0.37, 0.21), true);
      vp.zoomTo(vp.imageToViewportZoom(1.0), null, true);
    }""")
    poll(page, lambda p: counters(p)["lastLevel"] > base["lastLevel"], what="a finer level")
    zoomed = settled(page)
    assert zoomed["lastLevel"] == max_level          # native resolution = highest level
    assert zoomed["tilesReceived"] > received
    assert zoomed["tileErrors"] == 0
    poll(page, canvas_painted, what="zoomed tiles painted")

    # The hash follows the view (throttled) and a reload restores it.
    poll(page, lambda p: "x=0.37000&y=0.28000" in p.evaluate("location.hash"),
         what="hash to follow the pan")
    want = page.evaluate("() => tilerouter.viewer.viewport.getZoom()")
    page.reload()
    page.wait_for_function("() => window.tilerouter && tilerouter.viewer && "
                           "tilerouter.viewer.world.getItemCount() > 0")
    poll(page, lambda p: abs(p.evaluate("() => tilerouter.viewer.viewport.getZoom()") - want)
         < want * 0.01, what="zoom restored from the hash")
    centre = page.evaluate("() => tilerouter.viewer.viewport.getCenter()")
    assert abs(centre["x"] - 0.37) < 0.01
    assert abs(centre["y"] - 0.21) < 0.01


def test_reconnects_after_gateway_restart(page: Any, components: Server) -> None:
    srv = components
    page.goto(f"{srv.base}/#slide=alpha.tiff&x=0.3&y=0.4&zoom=2")
    page.wait_for_function("() => window.tilerouter && tilerouter.tilesReceived > 0")
    before = settled(page)
    assert before["reconnects"] == 0

    # Kill the gateway: the page must say it is reconnecting.
    srv.procs.stop("gateway", signal.SIGTERM)
    page.wait_for_selector('#conn-status[data-state="reconnecting"]', timeout=10_000)
    assert page.locator("#conn-status").is_visible()
    assert counters(page)["socketState"] == "reconnecting"

    # Pan while it is down: requests queue up client-side.
    page.evaluate("() => tilerouter.viewer.viewport.panBy(new OpenSeadragon.Point(0.2, 0.1))")

    # A new gateway on the same port; the page reconnects by itself.
    srv.procs.spawn("gateway", ["-m", "wsgateway.cli", *srv.gateway_flags])
    page.wait_for_selector('#conn-status[data-state="open"]', timeout=30_000)
    c = counters(page)
    assert c["reconnects"] >= 1 and c["socketState"] == "open"

    # The queued tiles arrive, and a new pan loads more.
    after_reconnect = settled(page, timeout=30)
    page.evaluate("() => tilerouter.viewer.viewport.panBy(new OpenSeadragon.Point(-0.35, 0.1))")
    poll(page, lambda p: counters(p)["tilesReceived"] > after_reconnect["tilesReceived"],
         what="tiles after reconnecting")
    final = settled(page, timeout=30)
    assert final["tilesReceived"] > before["tilesReceived"]
    assert final["tileErrors"] == 0
    poll(page, canvas_painted, what="canvas painted after reconnecting")


def test_hands_off_to_a_sibling_gateway_without_an_error(page: Any, components: Server
                                                         ) -> None:
    """A second gateway joins the port; the page's gateway is told to stop while tiles are
    in flight: the page follows its reconnect notice to the sibling at once, never shows
    "reconnecting", and no tile fails."""
    srv = components
    page.goto(f"{srv.base}/#slide=alpha.tiff&x=0.6&y=0.3&zoom=3")
    page.wait_for_function("() => window.tilerouter && tilerouter.tilesReceived > 0")
    # the page's one websocket is on "gateway", alone on the port until the sibling comes
    log = srv.procs.logdir / "gateway-2.log"
    srv.procs.spawn("gateway-2", ["-m", "wsgateway.cli", *srv.gateway_flags])
    wait_for(lambda: b"gateway listening" in log.read_bytes(), 30, what="sibling listening")
    page.evaluate("""() => {
      const el = document.getElementById("conn-status");
      window.__trStates = [];
      new MutationObserver(() => window.__trStates.push(el.dataset.state))
        .observe(el, {attributes: true, attributeFilter: ["data-state"]});
    }""")
    before = counters(page)
    page.evaluate("() => tilerouter.viewer.viewport.panBy(new OpenSeadragon.Point(0.3, 0.2))")
    srv.procs.stop("gateway", signal.SIGTERM)  # returns once it has exited
    poll(page, lambda p: counters(p)["handoffs"] == 1, what="hand-off")
    final = settled(page, timeout=30)
    assert final["tilesReceived"] > before["tilesReceived"]
    assert final["tileErrors"] == 0 and final["socketState"] == "open"
    assert "reconnecting" not in page.evaluate("() => window.__trStates")
    srv.procs.spawn("gateway", ["-m", "wsgateway.cli", *srv.gateway_flags])  # as it was


def test_live_panel_and_screenshot(page: Any, server: Server) -> None:
    open_slide(page, server, "alpha.tiff")
    settled(page)
    page.evaluate("""() => {
      const vp = tilerouter.viewer.viewport;
      vp.zoomTo(vp.getHomeZoom() * 1.6, null, true);
      vp.panTo(new OpenSeadragon.Point(0.42, 0.36), true);
    }""")
    page.click("#stats-toggle")
    page.wait_for_function("() => document.getElementById('st-workers').textContent !== '–'")
    settled(page)
    poll(page, canvas_painted, what="tiles painted")
    assert page.inner_text("#st-workers") == "2"
    assert page.inner_text("#st-affinity").endswith("%")
    assert page.inner_text("#st-p50").endswith("ms")
    assert page.locator("#st-worker-table tbody tr").count() == 2
    assert page.get_attribute("#stats-toggle", "aria-pressed") == "true"

    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "viewer.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000  # docs/viewer.png is taken from the demo by hand
