// The dehaze web page: one image in, the service's three outputs shown and offered for download.
//
// It talks only to the public API: POST {root}/dehaze?response=json with the file in the multipart field
// "image" (and, when a key is entered, "Authorization: Bearer <key>"). The JSON answer carries the dehazed image
// (PNG), the 16-bit depth PNG, the FADE scores, the model and the timings. Everything else happens here:
// the depth map is coloured with the service's colour map (service/codec.py; a test keeps the two tables
// equal), and the JPEG and WebP downloads are encoded from the PNG in the browser (quality 0.9, the service's
// default), falling back to the API (?format=...) where the browser cannot encode that format.
//
// The Content-Security-Policy allows scripts, styles and connections to this origin only, and images from
// this origin or blob: URLs: results are shown through object URLs, never through inline data.

const COLORMAP_STOPS = [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0];
const COLORMAP_RGB = [
  [48, 18, 59],
  [70, 107, 227],
  [40, 188, 235],
  [50, 241, 152],
  [164, 252, 60],
  [250, 186, 57],
  [228, 70, 10],
  [122, 4, 3],
];
const LOSSY_QUALITY = 0.9;
const TIMING_LABELS = {
  queue_wait: "Waiting in the queue",
  decode: "Decoding",
  compute: "Network",
  encode: "Encoding",
  density: "Haze score of the output",
  total: "Total on the server",
};
const FORMATS = "PNG, JPEG, WebP, TIFF, BMP or GIF";

const byId = (id) => document.getElementById(id);
const ui = {
  form: byId("upload"),
  drop: byId("drop"),
  file: byId("file"),
  preview: byId("preview"),
  previewImg: byId("preview-img"),
  previewInfo: byId("preview-info"),
  keyRow: byId("key-row"),
  key: byId("api-key"),
  submit: byId("submit"),
  cancel: byId("cancel"),
  progressRow: byId("progress-row"),
  progress: byId("progress"),
  elapsed: byId("elapsed"),
  status: byId("status"),
  error: byId("error"),
  errorTitle: byId("error-title"),
  errorDetail: byId("error-detail"),
  result: byId("result"),
  resultTitle: byId("result-title"),
  compare: byId("compare"),
  compareBefore: byId("compare-before"),
  compareAfter: byId("compare-after"),
  compareRange: byId("compare-range"),
  compareNote: byId("compare-note"),
  inputImg: byId("input-img"),
  outputImg: byId("output-img"),
  depthImg: byId("depth-img"),
  depthLegend: byId("depth-legend"),
  fadeIn: byId("fade-in"),
  fadeOut: byId("fade-out"),
  fadeMeaning: byId("fade-meaning"),
  model: byId("model"),
  size: byId("size"),
  timings: byId("timings"),
  downloads: {
    png: byId("download-png"),
    jpeg: byId("download-jpeg"),
    webp: byId("download-webp"),
    depth: byId("download-depth"),
  },
  downloadNote: byId("download-note"),
};
const root = document.body.dataset.root || "";

const state = {
  file: null, // the chosen File
  busy: false, // a request is in flight: no second one
  request: null, // the XMLHttpRequest in flight
  started: 0, // performance.now() at submit
  timer: 0, // the elapsed-time interval
  generation: 0, // increases with each result, so late conversions of an older result are dropped
  previewUrl: null,
  resultUrls: [],
};

// ---------------------------------------------------------------------------------------------- formatting

function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function formatFade(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "not defined";
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return (dot > 0 ? name.slice(0, dot) : name) || "image";
}

// ------------------------------------------------------------------------------------------ choosing a file

function chooseFile(file) {
  if (state.busy) {
    setStatus("Wait for the current image to finish, or cancel it, before choosing another.");
    return;
  }
  state.file = file;
  hideError();
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  const described = `${file.name || "pasted image"} · ${formatBytes(file.size)}`;
  ui.previewInfo.textContent = described;
  ui.previewImg.hidden = false;
  ui.previewImg.onload = () => {
    ui.previewInfo.textContent = `${described} · ${ui.previewImg.naturalWidth} × ${ui.previewImg.naturalHeight} px`;
  };
  ui.previewImg.onerror = () => {
    ui.previewImg.hidden = true;
    ui.previewInfo.textContent = `${described} · this browser cannot show a preview; the server will check the file.`;
  };
  ui.previewImg.src = state.previewUrl;
  ui.preview.hidden = false;
  ui.submit.disabled = false;
  setStatus("Ready: press Dehaze.");
}

function onDragOver(event) {
  if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
  event.preventDefault(); // without this the browser would open the dropped file instead
  event.dataTransfer.dropEffect = state.busy ? "none" : "copy";
  ui.drop.classList.add("over");
}

function onDrop(event) {
  event.preventDefault();
  ui.drop.classList.remove("over");
  const files = event.dataTransfer ? event.dataTransfer.files : null;
  if (!files || files.length === 0) return;
  chooseFile(files[0]);
  if (files.length > 1 && !state.busy) setStatus("Only the first of the dropped files is used. Ready: press Dehaze.");
}

function onPaste(event) {
  const files = event.clipboardData ? event.clipboardData.files : null;
  if (files && files.length > 0) {
    event.preventDefault();
    chooseFile(files[0]);
  }
}

// ------------------------------------------------------------------------------------------------ sending

function setStatus(text) {
  ui.status.textContent = text;
}

function setBusy(busy) {
  state.busy = busy;
  ui.submit.disabled = busy || !state.file;
  ui.submit.textContent = busy ? "Working…" : "Dehaze";
  ui.file.disabled = busy;
  ui.cancel.hidden = !busy;
  ui.progressRow.hidden = !busy;
  ui.form.setAttribute("aria-busy", String(busy));
  clearInterval(state.timer);
  if (busy) {
    state.started = performance.now();
    ui.elapsed.textContent = "0.0 s";
    state.timer = setInterval(() => {
      ui.elapsed.textContent = `${((performance.now() - state.started) / 1000).toFixed(1)} s`;
    }, 100);
  }
}

function authHeader() {
  const key = ui.key.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function submit(event) {
  event.preventDefault();
  if (state.busy || !state.file) return; // one request at a time, whatever the user clicks or presses
  const file = state.file;
  hideError();
  setBusy(true);
  ui.progress.value = 0;
  setStatus("Uploading…");

  const body = new FormData();
  body.append("image", file, file.name || "image");
  const request = new XMLHttpRequest();
  state.request = request;
  request.open("POST", `${root}/dehaze?response=json`);
  request.setRequestHeader("Accept", "application/json");
  for (const [name, value] of Object.entries(authHeader())) request.setRequestHeader(name, value);
  request.upload.onprogress = (progress) => {
    if (progress.lengthComputable) ui.progress.value = (100 * progress.loaded) / progress.total;
  };
  request.upload.onload = () => {
    ui.progress.removeAttribute("value"); // indeterminate while the server works
    setStatus("Dehazing on the server…");
  };
  request.onload = () => {
    const roundTrip = performance.now() - state.started;
    finish();
    if (request.status === 200) {
      let data;
      try {
        data = JSON.parse(request.responseText);
      } catch {
        showError("The service sent an answer this page cannot read.", request.responseText.slice(0, 200));
        return;
      }
      showResult(data, file, roundTrip).catch((error) => {
        showError("The result could not be shown.", String(error));
      });
    } else {
      showApiError(request.status, request.responseText, request.getResponseHeader("Retry-After"));
    }
  };
  request.onerror = () => {
    finish();
    showError("Could not reach the service.", "Check that it is running and that this page was opened from it.");
  };
  request.onabort = () => {
    finish();
    setStatus("Cancelled. The server drops the job.");
  };
  request.send(body);
}

function finish() {
  state.request = null;
  setBusy(false);
}

function cancel() {
  if (state.request) state.request.abort();
}

// ------------------------------------------------------------------------------------------------- errors

function hideError() {
  ui.error.hidden = true;
  ui.errorTitle.textContent = "";
  ui.errorDetail.textContent = "";
}

function showError(title, detail) {
  ui.errorTitle.textContent = title;
  ui.errorDetail.textContent = detail || "";
  ui.error.hidden = false;
  setStatus("");
}

function serverMessage(text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === "string") return body.error.message;
  } catch {
    // not the service's JSON error (e.g. a proxy's HTML page): show its start as text
  }
  return (text || "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
}

function showApiError(status, text, retryAfter) {
  const message = serverMessage(text);
  const said = message ? ` (The server said: ${message}.)` : "";
  switch (status) {
    case 401:
      ui.keyRow.hidden = false;
      showError("This server needs an API key.", `Enter your key in the “API key” field and press Dehaze again.${said}`);
      ui.key.focus();
      break;
    case 413:
      showError("The image is too large for this server.", `Use a smaller file or fewer pixels.${said}`);
      break;
    case 415:
      showError("This file is not an image the service can read.", `Choose a ${FORMATS} file.${said}`);
      break;
    case 422:
      showError("The image could not be read.", `The file may be damaged or truncated.${said}`);
      break;
    case 503: {
      const seconds = Number.parseInt(retryAfter || "", 10);
      const when = Number.isFinite(seconds) ? `in ${seconds} s` : "in a moment";
      showError("The service is busy.", `Too many images are waiting. Try again ${when}.${said}`);
      break;
    }
    case 504:
      showError(
        "The service did not finish in time.",
        `It may be overloaded, or the image very large; try again later or with a smaller image.${said}`,
      );
      break;
    default:
      showError(`The service answered with an error (HTTP ${status}).`, message || "No details were given.");
  }
}

// ------------------------------------------------------------------------------------------------ results

function keepUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.resultUrls.push(url);
  return url;
}

function base64Blob(text, type) {
  const bytes = atob(text);
  const buffer = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 1) buffer[i] = bytes.charCodeAt(i);
  return new Blob([buffer], { type });
}

function canvasBlob(canvas, type, quality) {
  return new Promise((resolve) => canvas.toBlob(resolve, type, quality));
}

function colormapLut() {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let v = 0; v < 256; v += 1) {
    const x = v / 255;
    let k = 0;
    while (k < COLORMAP_STOPS.length - 2 && x > COLORMAP_STOPS[k + 1]) k += 1;
    const t = (x - COLORMAP_STOPS[k]) / (COLORMAP_STOPS[k + 1] - COLORMAP_STOPS[k]);
    for (let c = 0; c < 3; c += 1) {
      lut[3 * v + c] = Math.round(COLORMAP_RGB[k][c] + t * (COLORMAP_RGB[k + 1][c] - COLORMAP_RGB[k][c]));
    }
  }
  return lut;
}

async function colourDepth(depthPng) {
  // 16-bit grey PNG -> the browser's 8-bit reading of it -> the colour map
  const bitmap = await createImageBitmap(depthPng, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
  const lut = colormapLut();
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const v = 3 * data[i];
    data[i] = lut[v];
    data[i + 1] = lut[v + 1];
    data[i + 2] = lut[v + 2];
    data[i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
  return canvasBlob(canvas, "image/png");
}

function drawLegend() {
  const context = ui.depthLegend.getContext("2d");
  const lut = colormapLut();
  for (let v = 0; v < 256; v += 1) {
    context.fillStyle = `rgb(${lut[3 * v]}, ${lut[3 * v + 1]}, ${lut[3 * v + 2]})`;
    context.fillRect(v, 0, 1, ui.depthLegend.height);
  }
}

async function encodeInBrowser(imageBlob, type) {
  const bitmap = await createImageBitmap(imageBlob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  const blob = await canvasBlob(canvas, type, LOSSY_QUALITY);
  return blob && blob.type === type ? blob : null; // browsers that cannot encode `type` give PNG instead
}

async function encodeOnServer(file, format) {
  const body = new FormData();
  body.append("image", file, file.name || "image");
  const response = await fetch(`${root}/dehaze?format=${format}&response=image`, {
    method: "POST",
    body,
    headers: authHeader(),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${serverMessage(await response.text())}`);
  return response.blob();
}

function setDownload(link, blob, filename) {
  link.href = keepUrl(blob);
  link.download = filename;
  link.removeAttribute("aria-disabled");
  link.dataset.size = String(blob.size);
  link.textContent = `${link.dataset.label} (${formatBytes(blob.size)})`;
}

function pendDownload(link) {
  link.dataset.label = link.dataset.label || link.textContent;
  link.removeAttribute("href");
  link.setAttribute("aria-disabled", "true");
  link.textContent = `${link.dataset.label} (preparing…)`;
}

async function prepareLossy(generation, file, imageBlob, format, type) {
  const link = ui.downloads[format];
  const name = `${stem(file.name || "image")}-dehazed.${format === "jpeg" ? "jpg" : format}`;
  try {
    let blob = await encodeInBrowser(imageBlob, type);
    if (!blob) blob = await encodeOnServer(file, format);
    if (generation === state.generation) setDownload(link, blob, name);
  } catch (error) {
    if (generation !== state.generation) return;
    link.textContent = `${link.dataset.label} (not available)`;
    ui.downloadNote.textContent = `The ${format.toUpperCase()} version could not be made: ${error}`;
    ui.downloadNote.hidden = false;
  }
}

function fadeMeaning(before, after) {
  const lead = "FADE estimates how hazy a photo looks: lower means less haze.";
  if (typeof before !== "number" || typeof after !== "number") {
    return `${lead} It is not defined for this image (e.g. a flat, featureless picture).`;
  }
  if (after < before) {
    const drop = before > 0 ? ` (${Math.round((100 * (before - after)) / before)} % lower)` : "";
    return `${lead} Dehazing took it from ${before.toFixed(3)} to ${after.toFixed(3)}${drop}.`;
  }
  return `${lead} It did not go down here (${before.toFixed(3)} → ${after.toFixed(3)}): the photo may hold little haze.`;
}

function showTimings(timings, roundTrip) {
  ui.timings.replaceChildren();
  const rows = Object.entries(TIMING_LABELS)
    .filter(([key]) => typeof timings[key] === "number")
    .map(([key, label]) => [label, timings[key]]);
  rows.push(["Round trip from this page", roundTrip]);
  for (const [label, ms] of rows) {
    const term = document.createElement("dt");
    term.textContent = label;
    const value = document.createElement("dd");
    value.textContent = formatMs(ms);
    ui.timings.append(term, value);
  }
}

function setCompare(percent) {
  ui.compare.style.setProperty("--pos", `${percent}%`);
  ui.compareRange.value = String(percent);
  ui.compareRange.setAttribute("aria-valuetext", `${Math.round(percent)} % hazy, ${Math.round(100 - percent)} % dehazed`);
}

function onComparePointer(event) {
  if (event.type === "pointermove" && !ui.compare.hasPointerCapture(event.pointerId)) return;
  if (event.type === "pointerdown") ui.compare.setPointerCapture(event.pointerId);
  const box = ui.compare.getBoundingClientRect();
  const percent = Math.min(100, Math.max(0, (100 * (event.clientX - box.left)) / box.width));
  setCompare(Math.round(percent));
}

async function showResult(data, file, roundTrip) {
  state.generation += 1;
  const generation = state.generation;
  delete ui.result.dataset.ready;
  for (const url of state.resultUrls) URL.revokeObjectURL(url);
  state.resultUrls = [];

  const imageType = data.image_media_type || "image/png";
  const imageBlob = base64Blob(data.image, imageType);
  const depthBlob = base64Blob(data.depth, "image/png");
  const inputUrl = keepUrl(file);
  const outputUrl = keepUrl(imageBlob);

  ui.compareNote.hidden = true;
  ui.compareBefore.onerror = () => {
    ui.compareNote.textContent = "This browser cannot show the input's format, so only the output is shown.";
    ui.compareNote.hidden = false;
  };
  ui.compareBefore.src = inputUrl;
  ui.compareAfter.src = outputUrl;
  ui.inputImg.src = inputUrl;
  ui.outputImg.src = outputUrl;
  ui.depthImg.src = keepUrl(await colourDepth(depthBlob).catch(() => depthBlob)); // grey if it cannot be coloured
  ui.compare.style.setProperty("--aspect", String(data.width / data.height));
  setCompare(50);

  ui.fadeIn.textContent = formatFade(data.fade_in);
  ui.fadeOut.textContent = formatFade(data.fade_out);
  ui.fadeMeaning.textContent = fadeMeaning(data.fade_in, data.fade_out);
  const licence = data.model.licence ? `, licence ${data.model.licence}` : ""; // absent from an older API
  ui.model.textContent = `${data.model.name} (version ${data.model.version}${licence})`;
  ui.size.textContent = `${data.width} × ${data.height} px`;
  showTimings(data.timings || {}, roundTrip);

  const name = stem(file.name || "image");
  ui.downloadNote.hidden = true;
  for (const link of Object.values(ui.downloads)) pendDownload(link);
  const extension = imageType.split("/")[1] === "jpeg" ? "jpg" : imageType.split("/")[1];
  setDownload(ui.downloads.png, imageBlob, `${name}-dehazed.${extension}`);
  setDownload(ui.downloads.depth, depthBlob, `${name}-depth16.png`);
  ui.result.hidden = false;
  setStatus(`Done in ${formatMs(roundTrip)}.`);
  ui.resultTitle.focus();
  await Promise.all([
    prepareLossy(generation, file, imageBlob, "jpeg", "image/jpeg"),
    prepareLossy(generation, file, imageBlob, "webp", "image/webp"),
  ]);
  if (generation === state.generation) ui.result.dataset.ready = "true";
}

// ------------------------------------------------------------------------------------------------- wiring

function start() {
  if (document.body.dataset.authRequired === "true") ui.keyRow.hidden = false;
  ui.file.addEventListener("change", () => {
    if (ui.file.files && ui.file.files.length > 0) chooseFile(ui.file.files[0]);
  });
  ui.form.addEventListener("submit", submit);
  ui.cancel.addEventListener("click", cancel);
  document.addEventListener("dragover", onDragOver);
  document.addEventListener("dragleave", (event) => {
    if (event.target === document.documentElement || !event.relatedTarget) ui.drop.classList.remove("over");
  });
  document.addEventListener("drop", onDrop);
  document.addEventListener("paste", onPaste);
  ui.compareRange.addEventListener("input", () => setCompare(Number(ui.compareRange.value)));
  for (const type of ["pointerdown", "pointermove"]) ui.compare.addEventListener(type, onComparePointer);
  drawLegend();
  document.body.dataset.ready = "true";
}

start();
