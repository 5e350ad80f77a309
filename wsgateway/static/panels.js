/*
 * The side panels (library and info: columns on wide screens, drawers on narrow ones),
 * the info panel's content (summary, label / macro images, all properties) and the
 * lightbox that enlarges an associated image.
 */
import { $, el } from "./dom.js";
import { errorMessage } from "./errors.js";
import { basename, fmtBytes, fmtInt, fmtMpp, vendorLabel } from "./format.js";
import { PRIO_CONTROL } from "./ws_client.js";

/**
 * data: SlideData; slideEntry(path): the slide list's {name, size, ...} for a path;
 * onLayout(): the viewer area changed size.
 */
export function createPanels({ data, slideEntry, onLayout }) {
  const panels = { library: $("library"), info: $("info-panel") };
  const panelButtons = { library: $("library-toggle"), info: $("info-toggle") };
  const scrim = $("scrim");
  const narrow = window.matchMedia("(max-width: 900px)");

  // ------------------------------------------------------------ side panels
  function setPanel(name, open) {
    document.body.classList.toggle(name + "-closed", !open);
    document.body.classList.toggle(name + "-open", open);
    panelButtons[name].setAttribute("aria-expanded", String(open));
    if (open && narrow.matches) {
      const other = name === "library" ? "info" : "library";
      document.body.classList.remove(other + "-open");
      document.body.classList.add(other + "-closed");
      panelButtons[other].setAttribute("aria-expanded", "false");
    }
    scrim.hidden = !(narrow.matches && (document.body.classList.contains("library-open") || document.body.classList.contains("info-open")));
    // OSD notices container size changes on its own; nudge it for the transition end.
    setTimeout(onLayout, 220);
  }
  const panelOpen = (name) => !document.body.classList.contains(name + "-closed");
  for (const name of Object.keys(panels)) {
    panelButtons[name].addEventListener("click", () => setPanel(name, !panelOpen(name)));
  }
  scrim.addEventListener("click", () => { setPanel("library", false); setPanel("info", false); });
  function initPanels() {
    if (narrow.matches) {
      // Small screens: panels are drawers; the home gallery / viewer gets the space.
      setPanel("info", false);
      setPanel("library", false);
    } else {
      setPanel("library", true);
      setPanel("info", true);
    }
  }
  narrow.addEventListener ? narrow.addEventListener("change", initPanels) : narrow.addListener(initPanels);
  initPanels();

  // ------------------------------------------------------------- info panel
  const assocUrls = [];
  let generation = 0;   // associated images of an older rendering are dropped

  /** The slide's readable name (the listing's, else its file name) over its id. */
  function renderName(path) {
    const entry = slideEntry(path);
    const name = (entry && entry.name) || basename(path);
    $("info-name").textContent = name;
    $("info-path").textContent = path;
    $("info-path").hidden = path === name;
  }

  /** info null: nothing open (path null) or still loading (path given). */
  function renderInfo(info, path) {
    generation++;
    for (const u of assocUrls.splice(0)) URL.revokeObjectURL(u);
    const content = $("info-content");
    if (!info) {
      content.hidden = !path;
      $("info-empty").hidden = !!path;
      if (path) {
        renderName(path);
        $("info-summary").replaceChildren(el("div", { class: "muted" }, "Loading…"));
        $("info-associated").replaceChildren();
        $("info-props-body").replaceChildren();
        $("info-props-count").textContent = "";
      }
      return;
    }
    content.hidden = false;
    $("info-empty").hidden = true;
    renderName(path);
    $("info-summary").replaceChildren(...summaryRows(info, path));
    renderAssociated(info, path);
    renderProperties(info.properties || {});
  }

  function summaryRows(info, path) {
    const rows = [];
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") rows.push(el("dt", null, k), el("dd", null, v)); };
    add("Vendor", vendorLabel(info.vendor) || "Unknown");
    add("Dimensions", fmtInt(info.width) + " × " + fmtInt(info.height) + " px");
    if (Number.isFinite(info.mpp_x)) {
      const mx = fmtMpp(info.mpp_x), my = fmtMpp(info.mpp_y);
      add("Resolution", my && info.mpp_y !== info.mpp_x ? mx.replace(" µm/px", "") + " × " + my : mx);
      const wmm = (info.width * info.mpp_x) / 1000;
      const hmm = (info.height * (Number.isFinite(info.mpp_y) ? info.mpp_y : info.mpp_x)) / 1000;
      add("Physical size", wmm.toFixed(2) + " × " + hmm.toFixed(2) + " mm");
    } else {
      add("Resolution", "Not calibrated");
    }
    if (info.objective_power) add("Objective", info.objective_power + "×");
    if (Array.isArray(info.level_dimensions) && info.level_dimensions.length) {
      const ld = info.level_dimensions;
      const down = ld[ld.length - 1][0] ? Math.round(ld[0][0] / ld[ld.length - 1][0]) : 1;
      rows.push(el("dt", null, "Pyramid"), el("dd", {
        title: ld.map((d, i) => "level " + i + ": " + fmtInt(d[0]) + " × " + fmtInt(d[1])).join("\n"),
      }, ld.length + (ld.length === 1 ? " level" : " levels") + (ld.length > 1 ? " (1× – " + down + "×)" : "")));
    }
    add("Tiles", (info.tile_size || "?") + " px, overlap " + (info.overlap || 0) + ", " + (info.format || "jpeg").toUpperCase());
    const entry = slideEntry(path);
    if (entry && entry.size) add("File size", fmtBytes(entry.size));
    return rows;
  }

  function renderAssociated(info, path) {
    const assoc = $("info-associated");
    const names = (info.associated || []).filter((n) => n !== "thumbnail");
    const order = { label: 0, macro: 1 };
    names.sort((a, b) => (order[a] ?? 9) - (order[b] ?? 9) || a.localeCompare(b));
    if (!names.length) {
      assoc.replaceChildren(el("p", { class: "muted" }, "This slide has no label or macro image."));
      return;
    }
    assoc.replaceChildren();
    const mine = generation;
    for (const name of names) {
      const fig = el("figure", { class: "assoc loading" },
        el("button", { class: "assoc-img", type: "button", title: "Enlarge " + name }),
        el("figcaption", null, name));
      assoc.append(fig);
      data.associated(path, name, 256, PRIO_CONTROL).then((url) => {
        if (mine !== generation) { if (url) URL.revokeObjectURL(url); return; }
        fig.classList.remove("loading");
        if (!url) { fig.classList.add("none"); return; }
        assocUrls.push(url);
        const btn = fig.querySelector(".assoc-img");
        btn.append(el("img", { src: url, alt: name + " image" }));
        btn.addEventListener("click", () => openLightbox(path, name, url));
      }).catch((err) => {
        fig.classList.remove("loading");
        fig.classList.add("none");
        fig.querySelector("figcaption").textContent = name + " (unavailable)";
        fig.title = errorMessage(err);
      });
    }
  }

  function renderProperties(props) {
    const keys = Object.keys(props).sort();
    $("info-props-count").textContent = String(keys.length);
    $("info-props-body").replaceChildren(...keys.map((k) => el("tr", { dataset: { search: (k + " " + props[k]).toLowerCase() } },
      el("th", { scope: "row" }, ...breakable(k)), el("td", null, String(props[k])))));
    filterProps();
  }

  // Property names like "openslide.level[0].tile-width": allow line breaks after separators.
  function breakable(text) {
    const out = [];
    for (const part of text.split(/(?<=[.\]_-])/)) {
      if (out.length) out.push(document.createElement("wbr"));
      out.push(part);
    }
    return out;
  }

  function filterProps() {
    const q = $("props-filter").value.trim().toLowerCase();
    for (const row of $("info-props-body").children) row.hidden = !!q && !row.dataset.search.includes(q);
  }
  $("props-filter").addEventListener("input", filterProps);

  // --------------------------------------------------------------- lightbox
  const lightbox = $("lightbox");
  let lightboxUrl = null;
  function openLightbox(path, name, smallUrl) {
    $("lightbox-title").textContent = name;
    const img = $("lightbox-img");
    img.src = smallUrl;
    img.alt = name + " image";
    lightbox.hidden = false;
    $("lightbox-close").focus();
    data.associated(path, name, 1024, PRIO_CONTROL).then((url) => {
      if (lightbox.hidden || !url) { if (url) URL.revokeObjectURL(url); return; }
      if (lightboxUrl) URL.revokeObjectURL(lightboxUrl);
      lightboxUrl = url;
      img.src = url;
    }).catch(() => {});
  }
  function closeLightbox() {
    lightbox.hidden = true;
    if (lightboxUrl) { URL.revokeObjectURL(lightboxUrl); lightboxUrl = null; }
  }
  $("lightbox-close").addEventListener("click", closeLightbox);
  lightbox.addEventListener("click", (ev) => { if (ev.target === lightbox) closeLightbox(); });

  return {
    setPanel,
    renderInfo,
    renderName,
    lightboxOpen: () => !lightbox.hidden,
    closeLightbox,
  };
}
