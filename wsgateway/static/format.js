/* Number, size and path formatting for the viewer's labels. */

export const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");

export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
}

export function fmtMpp(v) {
  if (!Number.isFinite(v)) return null;
  return (v < 0.1 ? v.toFixed(4) : v.toFixed(3)).replace(/0+$/, "").replace(/\.$/, "") + " µm/px";
}

export function fmtLength(um) {
  if (um >= 1000) {
    const mm = um / 1000;
    return (mm >= 10 ? mm.toFixed(0) : mm.toFixed(mm % 1 === 0 ? 0 : 1)) + " mm";
  }
  return (um >= 1 ? String(+um.toFixed(um % 1 === 0 ? 0 : 1)) : String(+um.toPrecision(2))) + " µm";
}

export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
}

export function percentile(values, p) {
  if (!values.length) return NaN;
  const s = values.slice().sort((a, b) => a - b);
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[idx];
}

const VENDORS = {
  aperio: "Aperio", hamamatsu: "Hamamatsu", leica: "Leica", mirax: "3DHISTECH (MIRAX)",
  philips: "Philips", sakura: "Sakura", trestle: "Trestle", ventana: "Ventana",
  "generic-tiff": "Generic TIFF", dicom: "DICOM", zeiss: "Zeiss",
};

/** OpenSlide's vendor id as people know it. */
export function vendorLabel(v) {
  if (!v) return null;
  return VENDORS[v] || v;
}

export function dirname(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

export function basename(path) {
  const i = path.lastIndexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}
