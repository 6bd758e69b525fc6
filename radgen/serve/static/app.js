// radgen web page: upload → POST /v1/reports → draft report with low-confidence sentences
// highlighted, attention overlay toggle, copy/download, model card. No external resources.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { file: null, result: null, heatmap: null, sentenceHeatmaps: [], token: sessionStorage.getItem("radgenToken") || "" };

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", !!isError);
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) {
      return response.statusText || "request failed";
    }
  }

  function needToken() {
    $("token-row").hidden = false;
    $("token-input").focus();
  }

  // ---- model card --------------------------------------------------------------------------
  const CARD_FIELDS = [
    ["name", "Model"], ["description", "Description"], ["trained_on", "Trained on"],
    ["intended_use", "Intended use"], ["limitations", "Limitations"], ["based_on", "Based on"],
    ["section", "Writes section"], ["parameters", "Parameters"], ["metrics", "Metrics"], ["disclaimer", "Disclaimer"],
  ];

  function showCard(card) {
    const dl = $("card");
    dl.textContent = "";
    for (const [key, label] of CARD_FIELDS) {
      if (card[key] === undefined || card[key] === null || card[key] === "") continue;
      let value = card[key];
      if (key === "parameters") value = Number(value).toLocaleString("en-US");
      else if (typeof value === "object") value = JSON.stringify(value);
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      dd.id = "card-" + key;
      dl.append(dt, dd);
    }
    if (card.architecture) {
      const dt = document.createElement("dt");
      dt.textContent = "Architecture";
      const dd = document.createElement("dd");
      const a = card.architecture;
      dd.textContent = [a.encoder, a.connector, a.decoder].join(" → ") + (a.peft && a.peft !== "none" ? " (" + a.peft + ")" : "");
      dl.append(dt, dd);
    }
  }

  async function loadCard() {
    const response = await fetch("/v1/model", { headers: headers() });
    if (response.status === 401) { needToken(); return; }
    if (!response.ok) { setStatus("Model card: " + (await errorText(response)), true); return; }
    showCard(await response.json());
  }

  // ---- report ------------------------------------------------------------------------------
  function renderSentences(container, text, sentences) {
    container.textContent = "";
    if (!text) {
      container.textContent = "(this model does not write this section)";
      container.classList.add("empty");
      return;
    }
    container.classList.remove("empty");
    const threshold = parseFloat($("threshold").value);
    sentences.forEach((s, index) => {
      const span = document.createElement("span");
      span.dataset.index = String(index);
      span.className = "sentence" + (s.confidence < threshold ? " low" : "");
      span.title = "confidence " + s.confidence.toFixed(2);
      span.dataset.confidence = String(s.confidence);
      span.textContent = s.text;
      container.append(span, document.createTextNode(" "));
    });
  }

  // While the overlay is on, hovering a sentence shows that sentence's own attention map.
  function overlayOn() { return !$("overlay").hidden && state.heatmap; }
  function showSentenceMap(event) {
    const span = event.target.closest(".sentence");
    const png = span && state.sentenceHeatmaps[Number(span.dataset.index)];
    if (!overlayOn() || !png) return;
    $("overlay").src = "data:image/png;base64," + png;
    $("overlay-caption").textContent = "Attention while writing: \u201c" + span.textContent + "\u201d";
  }
  function showReportMap() {
    if (!overlayOn()) return;
    $("overlay").src = "data:image/png;base64," + state.heatmap;
    $("overlay-caption").textContent = "Attention over the whole report (hover a sentence for its own map)";
  }

  function showReport() {
    const r = state.result;
    renderSentences($("findings"), r.findings, r.findings ? r.sentences : []);
    renderSentences($("impression"), r.impression, r.impression ? r.sentences : []);
    $("overall").textContent = r.confidence >= 0.01 ? r.confidence.toFixed(2) : r.confidence.toExponential(1);
    renderFindings(r.finding_probs, r.findings_predicted || []);
    // retrieval-guided decoding: say whose wording the decoder could borrow (the findings stay the head's)
    $("guide-note").hidden = !r.guide_study_id;
    $("guide-note").textContent = r.guide_study_id ? "Wording guided by stored report " + r.guide_study_id +
      " (the training study with the nearest indication); the findings are the image head's." : "";
    $("lateral-note").hidden = !r.lateral_read;
    $("report").hidden = false;
    $("heatmap-toggle").disabled = false;
  }

  function renderFindings(probs, named) {
    const body = $("finding-table").querySelector("tbody");
    body.textContent = "";
    $("finding-panel").hidden = !probs;
    if (!probs) return;
    Object.entries(probs).sort((a, b) => b[1] - a[1]).forEach(([name, p]) => {
      const row = document.createElement("tr");
      const label = document.createElement("td");
      label.textContent = name;
      if (named.includes(name)) label.className = "named";
      const value = document.createElement("td");
      value.textContent = p.toFixed(2);
      const bar = document.createElement("td");
      const fill = document.createElement("span");
      fill.className = "bar";
      fill.style.width = Math.round(p * 100) + "px";
      bar.appendChild(fill);
      row.append(label, value, bar);
      body.appendChild(row);
    });
  }

  function reportText() {
    const r = state.result;
    return "FINDINGS:\n" + (r.findings || "(not generated)") + "\n\nIMPRESSION:\n" + (r.impression || "(not generated)") +
      "\n\n-- Draft generated by radgen model " + (r.model && r.model.name) + ". Not for clinical use.\n";
  }

  async function requestReport(withHeatmap) {
    const form = new FormData();
    form.append("file", state.file);
    form.append("heatmap", withHeatmap ? "true" : "false");
    form.append("indication", $("indication-input").value.slice(0, 500));
    const lateral = $("lateral-input").files[0];
    if (lateral) form.append("lateral", lateral);
    const response = await fetch("/v1/reports", { method: "POST", body: form, headers: headers() });
    if (response.status === 401) { needToken(); throw new Error("this server needs an access token"); }
    if (!response.ok) throw new Error(response.status + ": " + (await errorText(response)));
    return response.json();
  }

  async function analyse(file) {
    state.file = file;
    state.result = null;
    state.heatmap = null;
    state.sentenceHeatmaps = [];
    $("overlay-caption").textContent = "";
    $("report").hidden = true;
    $("overlay").hidden = true;
    $("heatmap-toggle").checked = false;
    $("heatmap-toggle").disabled = true;
    const preview = $("preview");
    const raster = /\.(png|jpe?g)$/i.test(file.name) || /^image\/(png|jpeg)$/.test(file.type);
    if (raster) {
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      $("no-preview").hidden = true;
    } else {
      preview.hidden = true;
      $("no-preview").hidden = false;
    }
    setStatus("Writing draft report for " + file.name + "…");
    try {
      state.result = await requestReport(false);
      showReport();
      setStatus("Draft report ready.");
    } catch (err) {
      setStatus(err.message, true);
    }
  }

  async function toggleHeatmap() {
    const on = $("heatmap-toggle").checked;
    if (!on) {
      $("overlay").hidden = true;
      $("overlay-caption").textContent = "";
      $("preview").hidden = !$("preview").src;
      return;
    }
    if (!state.heatmap) {
      setStatus("Computing attention overlay…");
      try {
        const result = await requestReport(true);
        state.heatmap = result.heatmap;
        state.sentenceHeatmaps = result.sentences.map((s) => s.heatmap);
      } catch (err) {
        setStatus(err.message, true);
        $("heatmap-toggle").checked = false;
        return;
      }
      setStatus("Attention overlay ready.");
    }
    $("overlay").hidden = false;
    $("preview").hidden = true;
    $("no-preview").hidden = true;
    showReportMap();
  }

  async function copyReport() {
    const text = reportText();
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {  // clipboard API needs a secure context; fall back to a selected textarea
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    $("copy-status").textContent = "Copied.";
  }

  function downloadReport() {
    const blob = new Blob([reportText()], { type: "text/plain" });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "radgen-draft-report.txt";
    document.body.append(link);
    link.click();
    link.remove();
  }

  // ---- wiring ------------------------------------------------------------------------------
  $("file-input").addEventListener("change", (e) => { if (e.target.files.length) analyse(e.target.files[0]); });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) analyse(e.dataTransfer.files[0]);
  });
  // a lateral chosen (or cleared) after the frontal image: the report is written again with it
  $("lateral-input").addEventListener("change", () => { if (state.file) analyse(state.file); });
  $("heatmap-toggle").addEventListener("change", toggleHeatmap);
  for (const id of ["findings", "impression"]) {
    $(id).addEventListener("mouseover", showSentenceMap);
    $(id).addEventListener("mouseout", showReportMap);
  }
  $("threshold").addEventListener("input", () => { if (state.result) showReport(); });
  $("copy-button").addEventListener("click", copyReport);
  $("download-button").addEventListener("click", downloadReport);
  $("token-save").addEventListener("click", () => {
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("radgenToken", state.token);
    $("token-row").hidden = true;
    loadCard();
    if (state.file) analyse(state.file);
  });
  loadCard();
})();
