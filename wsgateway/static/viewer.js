/*
 * tilerouter viewer: wires the modules together and owns the open slide (the
 * OpenSeadragon viewer, opening / closing, the URL hash).
 *
 * ES modules served as they are, no build step. Needs OpenSeadragon 6.x loaded from
 * /osd/openseadragon.min.js by a classic script before this one.
 *
 * URL hash: #slide=<urlencoded path>&x=<0..1>&y=<0..1>&zoom=<viewport zoom>
 *   x / y are the view centre as fractions of the slide width / height,
 *   zoom is OpenSeadragon's viewport zoom (1 = slide width fits the viewer).
 */
import { $, throttle } from "./dom.js";
import { describe } from "./errors.js";
import { basename } from "./format.js";
import { createPanels } from "./panels.js";
import { SlideData } from "./slide_data.js";
import { createSlideBrowser } from "./slide_browser.js";
import { counters, initStatsPanel } from "./stats.js";
import { VIEWER_JOB_TIMEOUT_MS, buildTileSource, reviveFailedTiles } from "./tile_source.js";
import { createViewControls } from "./view_controls.js";
import { WsClient } from "./ws_client.js";

const OSD = window.OpenSeadragon;
const HASH_THROTTLE_MS = 300;

const client = new WsClient((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
const data = new SlideData(client);

let current = null;              // {path, info, opened}
let viewer = null;
let pendingView = null;          // view to apply once the slide opened
let viewRestored = false;
let openToken = 0;

// ------------------------------------------------------------ connection badge
const connEl = $("conn-status");
function renderConn(state) {
  counters.socketState = state;
  counters.reconnects = client.reconnects;
  counters.handoffs = client.handoffs;
  connEl.dataset.state = state;
  const label = connEl.querySelector(".conn-label");
  if (state === "open") {
    label.textContent = "Connected";
    connEl.title = "Connected to the tile server";
  } else {
    label.textContent = client.everOpened ? "Reconnecting…" : "Connecting…";
    connEl.title = "Connection lost — reconnecting automatically; pending tiles will be re-requested";
  }
  $("st-reconnects").textContent = String(counters.reconnects);
}
client.onState(renderConn);
renderConn(client.state);

// ------------------------------------------------------------------ the parts
const browser = createSlideBrowser({
  client, data, onOpen: navigateToSlide,
  // a slide opened from the URL before the list came: now its readable name is known
  onListed: () => { if (current) { renderTitle(current.path); panels.renderName(current.path); } },
});
const controls = createViewControls({
  getViewer: () => viewer,
  getViewport: () => (viewer && current && current.opened ? viewer.viewport : null),
  getInfo: () => (current && current.info) || null,
});
const panels = createPanels({
  data,
  slideEntry: (path) => browser.entry(path),
  onLayout: () => { if (viewer) { viewer.forceResize(); controls.updateScalebar(); } },
});
initStatsPanel(client);

// ------------------------------------------------------------------- the viewer
function ensureViewer() {
  if (viewer) return viewer;
  viewer = OSD({
    element: $("osd"),
    prefixUrl: "/osd/images/",
    showNavigationControl: false,
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    navigatorSizeRatio: 0.17,
    navigatorMaintainSizeRatio: true,
    navigatorAutoFade: false,
    navigatorBackground: "#0d1014",
    navigatorBorderColor: "#4a5261",
    navigatorDisplayRegionColor: "#4f8cff",
    animationTime: 0.45,
    springStiffness: 9,
    blendTime: 0.1,
    immediateRender: false,
    visibilityRatio: 0.3,
    constrainDuringPan: false,
    minZoomImageRatio: 0.5,
    maxZoomPixelRatio: 2,
    zoomPerScroll: 1.3,
    zoomPerClick: 2,
    imageLoaderLimit: 0,        // the websocket client does its own queueing / prioritisation
    maxTilesPerFrame: 6,
    timeout: VIEWER_JOB_TIMEOUT_MS,
    tileRetryMax: 0,
    crossOriginPolicy: false,
    preserveImageSizeOnResize: true,
    gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true, flickEnabled: true },
    gestureSettingsTouch: { pinchRotate: false, flickEnabled: true },
    keyboardNavEnabled: true,
  });
  counters.viewer = viewer;

  reviveFailedTiles(viewer);
  viewer.addHandler("open", onViewerOpen);
  viewer.addHandler("open-failed", (ev) => showViewerError(ev.message || "The viewer could not open the slide."));
  const onView = () => { controls.updateScalebar(); controls.updateReadout(); scheduleHashUpdate(); };
  viewer.addHandler("viewport-change", onView);
  viewer.addHandler("animation-finish", onView);
  viewer.addHandler("resize", () => { controls.updateScalebar(); controls.updateReadout(); });
  viewer.addHandler("rotate", onView);
  return viewer;
}

function showViewerError(msg) {
  if (viewer) viewer.close();
  document.body.classList.remove("slide-ready");
  $("scalebar").hidden = true;
  $("zoom-readout").textContent = "";
  $("viewer-loading").hidden = true;
  $("viewer-error").hidden = false;
  $("viewer-error-msg").textContent = msg;
}

function navigateToSlide(path) {
  const hash = "#slide=" + encodeURIComponent(path);
  if (!current || current.path !== path) {
    history.pushState(null, "", hash);
  }
  applyLocation();
  if (window.matchMedia("(max-width: 900px)").matches) panels.setPanel("library", false);
}

function parseHash() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const num = (k) => {
    const v = params.get(k);
    if (v === null || v === "") return null;
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  };
  return { slide: params.get("slide"), x: num("x"), y: num("y"), zoom: num("zoom") };
}

function applyLocation() {
  const h = parseHash();
  if (!h.slide) {
    if (current) closeSlide();
    return;
  }
  const view = h.x !== null && h.y !== null && h.zoom !== null && h.zoom > 0 ? { x: h.x, y: h.y, zoom: h.zoom } : null;
  if (current && current.path === h.slide) {
    if (view && current.opened) applyView(view, false);
    else if (view) pendingView = view;
    return;
  }
  openSlide(h.slide, view);
}

function closeSlide() {
  openToken++;
  client.failQueued((r) => r.msg.op === "tile", "cancelled");
  current = null;
  counters.slide = null;
  document.body.classList.remove("slide-ready");
  if (viewer) viewer.close();
  document.body.classList.add("no-slide");
  $("empty-state").hidden = false;
  $("viewer-loading").hidden = true;
  $("viewer-error").hidden = true;
  $("scalebar").hidden = true;
  $("zoom-readout").textContent = "";
  $("slide-title").textContent = "";
  document.title = "tilerouter · slide viewer";
  panels.renderInfo(null);
  browser.markActive(null);
}

/** The listing's readable name for a slide (a PACS series: patient · accession ·
 * description), else its file name; the id stays in the tooltip and the URL. */
function slideName(path) {
  const entry = browser.entry(path);
  return (entry && entry.name) || basename(path);
}

function renderTitle(path) {
  $("slide-title").textContent = slideName(path);
  $("slide-title").title = path;
  document.title = slideName(path) + " · tilerouter";
}

function openSlide(path, view) {
  const token = ++openToken;
  // Tiles of the previous slide that are still waiting client-side are not needed anymore.
  client.failQueued((r) => r.msg.op === "tile" && r.msg.slide !== path, "cancelled");
  current = { path, info: null, opened: false };
  counters.slide = path;
  pendingView = view;
  viewRestored = false;
  document.body.classList.remove("no-slide");
  $("empty-state").hidden = true;
  $("viewer-error").hidden = true;
  $("viewer-loading").hidden = false;
  $("scalebar").hidden = true;
  renderTitle(path);
  browser.markActive(path);
  panels.renderInfo(null, path);

  data.info(path).then((info) => {
    if (token !== openToken) return;
    current.info = info;
    panels.renderInfo(info, path);
    ensureViewer();
    viewer.open(buildTileSource(client, path, info));
  }).catch((err) => {
    if (token !== openToken) return;
    showViewerError(describe(err, path));
    panels.renderInfo(null);
  });
}

function onViewerOpen() {
  if (!current) return;
  current.opened = true;
  document.body.classList.add("slide-ready");
  $("viewer-loading").hidden = true;
  controls.renderMagPresets(current.info);
  if (pendingView) {
    applyView(pendingView, true);
    pendingView = null;
  }
  viewRestored = true;
  controls.updateScalebar();
  controls.updateReadout();
  scheduleHashUpdate();
  try { viewer.canvas.focus({ preventScroll: true }); } catch (e) { /* ignore */ }
}

function imageAspect() {
  const info = current && current.info;
  return info && info.width ? info.height / info.width : 1;
}

function applyView(view, immediately) {
  if (!viewer || !viewer.viewport) return;
  const vp = viewer.viewport;
  const x = Math.min(1.5, Math.max(-0.5, view.x));
  const y = Math.min(1.5, Math.max(-0.5, view.y));
  vp.zoomTo(Math.min(vp.getMaxZoom(), Math.max(vp.getMinZoom(), view.zoom)), null, immediately);
  vp.panTo(new OSD.Point(x, y * imageAspect()), immediately);
}

function writeHash() {
  if (!current || !viewer || !viewer.viewport || !viewRestored) return;
  const vp = viewer.viewport;
  const c = vp.getCenter(false);
  const z = vp.getZoom(false);
  const hash = "#slide=" + encodeURIComponent(current.path) +
    "&x=" + c.x.toFixed(5) + "&y=" + (c.y / imageAspect()).toFixed(5) + "&zoom=" + (+z.toPrecision(5));
  if (location.hash !== hash) history.replaceState(history.state, "", hash);
}
const scheduleHashUpdate = throttle(writeHash, HASH_THROTTLE_MS);

window.addEventListener("hashchange", applyLocation);
window.addEventListener("popstate", applyLocation);
$("brand-link").addEventListener("click", (ev) => {
  ev.preventDefault();
  if (current) { history.pushState(null, "", location.pathname + location.search); closeSlide(); }
  panels.setPanel("library", true);
});
$("viewer-error-retry").addEventListener("click", () => {
  if (!current) return;
  const p = current.path;
  current = null;
  data.forgetInfo(p);
  openSlide(p, pendingView);
});

// -------------------------------------------------------------------- keyboard
document.addEventListener("keydown", (ev) => {
  const target = ev.target;
  const typing = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable);
  if (ev.key === "Escape") {
    if (panels.lightboxOpen()) { panels.closeLightbox(); ev.preventDefault(); return; }
    if (controls.isPseudoFullscreen()) { controls.toggleFullscreen(); return; }
  }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "/") { ev.preventDefault(); panels.setPanel("library", true); browser.focusFilter(); }
});

// ------------------------------------------------------------------------ boot
window.addEventListener("resize", () => { controls.updateScalebar(); });
browser.load();
applyLocation();
