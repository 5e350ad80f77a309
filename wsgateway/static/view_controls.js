/*
 * Controls over the open slide's view: toolbar (zoom, fit, 1:1, rotate), magnification
 * presets, zoom readout, scale bar, full screen.
 */
import { $, el } from "./dom.js";
import { fmtLength } from "./format.js";

const NICE_UM = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
const MAGNIFICATIONS = [1.25, 2.5, 5, 10, 20, 40, 80];

/**
 * getViewer(): the OpenSeadragon viewer or null; getViewport(): its viewport while a
 * slide is open, else null; getInfo(): the open slide's info or null.
 */
export function createViewControls({ getViewer, getViewport, getInfo }) {
  const vp = getViewport;
  $("zoom-in").addEventListener("click", () => { const v = vp(); if (v) { v.zoomBy(2); v.applyConstraints(); } });
  $("zoom-out").addEventListener("click", () => { const v = vp(); if (v) { v.zoomBy(0.5); v.applyConstraints(); } });
  $("zoom-home").addEventListener("click", () => { const v = vp(); if (v) v.goHome(); });
  $("zoom-native").addEventListener("click", () => { const v = vp(); if (v) v.zoomTo(v.imageToViewportZoom(1)); });
  $("rotate").addEventListener("click", () => { const v = vp(); if (v) v.setRotation((v.getRotation() + 90) % 360); });

  function objectivePower() {
    const info = getInfo();
    const o = info && parseFloat(info.objective_power);
    return Number.isFinite(o) && o > 0 ? o : null;
  }

  /** Buttons for the usual objectives that the zoom range reaches (none if uncalibrated). */
  function renderMagPresets(info) {
    const box = $("mag-presets");
    box.replaceChildren();
    const obj = parseFloat(info && info.objective_power);
    if (!Number.isFinite(obj) || obj <= 0) {
      box.hidden = true;
      box.previousElementSibling.hidden = true;
      return;
    }
    box.hidden = false;
    box.previousElementSibling.hidden = false;
    const viewer = getViewer();
    const v = viewer && viewer.viewport;
    const maxMag = v ? obj * v.viewportToImageZoom(v.getMaxZoom()) : obj * 2;
    const minMag = v ? obj * v.viewportToImageZoom(v.getMinZoom()) : obj / 64;
    for (const m of MAGNIFICATIONS) {
      if (m > maxMag * 1.001) break;
      if (m < minMag * 0.999) continue;
      box.append(el("button", {
        class: "tool mag", type: "button", title: "Zoom to " + m + "× (equivalent objective)",
        onclick: () => { const v = vp(); if (v) v.zoomTo(v.imageToViewportZoom(m / obj)); },
      }, (m < 10 ? m : String(m)) + "×"));
    }
  }

  function updateReadout() {
    const v = vp();
    const out = $("zoom-readout");
    if (!v) { out.textContent = ""; return; }
    const imageZoom = v.viewportToImageZoom(v.getZoom(true));   // screen px per slide px
    const obj = objectivePower();
    if (obj) {
      const mag = obj * imageZoom;
      out.textContent = (mag >= 10 ? mag.toFixed(1) : mag.toFixed(2)) + "×";
      out.title = "Equivalent magnification (scanned at " + obj + "×)";
    } else {
      out.textContent = (imageZoom * 100 >= 10 ? Math.round(imageZoom * 100) : (imageZoom * 100).toFixed(1)) + "%";
      out.title = "Zoom relative to the scanned resolution";
    }
  }

  function updateScalebar() {
    const bar = $("scalebar");
    const v = vp();
    const info = getInfo();
    const mpp = info && info.mpp_x;
    if (!v || !Number.isFinite(mpp) || mpp <= 0) { bar.hidden = true; return; }
    const imageZoom = v.viewportToImageZoom(v.getZoom(true));   // CSS px per slide px
    const umPerCssPx = mpp / imageZoom;
    const maxPx = Math.min(160, Math.max(60, getViewer().container.clientWidth * 0.25));
    let chosen = NICE_UM[0];
    for (const u of NICE_UM) {
      if (u / umPerCssPx <= maxPx) chosen = u;
      else break;
    }
    const px = chosen / umPerCssPx;
    bar.hidden = false;
    bar.querySelector(".scalebar-bar").style.width = px.toFixed(1) + "px";
    bar.querySelector(".scalebar-label").textContent = fmtLength(chosen);
  }

  // Full screen: the Fullscreen API where allowed, else a CSS "pseudo" full screen.
  const area = $("viewer-area");
  const fsButton = $("fullscreen");
  const isPseudoFullscreen = () => area.classList.contains("pseudo-fullscreen");
  function isFullscreen() {
    return document.fullscreenElement === area || document.webkitFullscreenElement === area || isPseudoFullscreen();
  }
  function toggleFullscreen() {
    if (isFullscreen()) {
      if (isPseudoFullscreen()) area.classList.remove("pseudo-fullscreen");
      else if (document.exitFullscreen) document.exitFullscreen().catch(() => {});
      else if (document.webkitExitFullscreen) document.webkitExitFullscreen();
    } else {
      const req = area.requestFullscreen || area.webkitRequestFullscreen;
      if (req) {
        Promise.resolve(req.call(area)).catch(() => area.classList.add("pseudo-fullscreen")).then(syncFs);
      } else {
        area.classList.add("pseudo-fullscreen");
      }
    }
    syncFs();
  }
  function syncFs() {
    const fs = isFullscreen();
    fsButton.setAttribute("aria-pressed", String(fs));
    fsButton.title = fs ? "Exit full screen (Esc)" : "Full screen";
    document.body.classList.toggle("is-fullscreen", fs);
    const viewer = getViewer();
    if (viewer) viewer.forceResize();
  }
  fsButton.addEventListener("click", toggleFullscreen);
  document.addEventListener("fullscreenchange", syncFs);
  document.addEventListener("webkitfullscreenchange", syncFs);

  return { renderMagPresets, updateReadout, updateScalebar, toggleFullscreen, isPseudoFullscreen };
}
