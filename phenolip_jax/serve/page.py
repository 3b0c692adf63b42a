"""The serve stage's page: one self-contained HTML document (no build step, no files fetched from elsewhere).

It talks only to the API of serve/server.py: GET /api/info on load, POST /api/predict on submit, and links the
case's download. Every text from the server is set with textContent (never parsed as HTML).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>phenolip_jax: HPO terms for a case</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
  header { background: #1f4e79; color: #fff; padding: 12px 24px; }
  header h1 { font-size: 20px; margin: 0; }
  header p { margin: 4px 0 0; font-size: 13px; opacity: .85; }
  main { padding: 16px 24px; max-width: 1200px; }
  form { background: #fff; border: 1px solid #d5d9e0; border-radius: 6px; padding: 12px 16px;
         display: grid; grid-template-columns: 1fr 1fr; gap: 10px 24px; }
  label { font-weight: 600; font-size: 13px; display: block; margin-bottom: 4px; }
  textarea { width: 100%; box-sizing: border-box; height: 48px; font: inherit; }
  select, input[type=file] { font: inherit; max-width: 100%; }
  button { font: inherit; padding: 6px 18px; background: #1f4e79; color: #fff; border: 0; border-radius: 4px; }
  button:disabled { opacity: .5; }
  #status { margin: 10px 0; color: #555; min-height: 1.2em; }
  .error { background: #fdecea; border: 1px solid #e0a39b; color: #8a1c10; padding: 8px 12px; border-radius: 4px;
           margin: 10px 0; white-space: pre-wrap; }
  .image { background: #fff; border: 1px solid #d5d9e0; border-radius: 6px; margin: 12px 0; padding: 10px 16px;
           display: flex; gap: 16px; align-items: flex-start; }
  .image img { width: 112px; height: 112px; object-fit: cover; image-rendering: pixelated; border-radius: 4px; }
  .image h2 { font-size: 15px; margin: 0 0 6px; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e6e8ec; vertical-align: top; }
  th { background: #eef1f5; }
  td.p { white-space: nowrap; width: 130px; }
  .bar { display: inline-block; height: 8px; background: #2e75b6; margin-right: 6px; vertical-align: middle; }
  .path { color: #5a6270; }
  #download { display: inline-block; margin: 6px 0; }
</style>
</head>
<body>
<header>
  <h1>phenolip_jax: top HPO terms for a case</h1>
  <p id="run">loading the run...</p>
</header>
<main>
  <form id="case">
    <div>
      <label for="files">Images of one case (PNG, JPEG, TIFF, DICOM, ...)</label>
      <input id="files" name="files" type="file" multiple
             accept="image/*,.dcm,.dicom,application/dicom">
    </div>
    <div>
      <label for="organ">Organ system</label>
      <select id="organ" name="organ_system"><option value="">All organ systems</option></select>
    </div>
    <div>
      <label for="note">Note (optional, kept with the case)</label>
      <textarea id="note" name="note" placeholder="e.g. age, sex, what the images show"></textarea>
    </div>
    <div style="align-self: end"><button id="submit" type="submit">Find HPO terms</button></div>
  </form>
  <div id="status" role="status"></div>
  <div id="error" class="error" role="alert" hidden></div>
  <div id="skipped" class="error" hidden></div>
  <a id="download" hidden>Download this case (GA4GH Phenopacket v2, JSON)</a>
  <section id="profile" hidden></section>
  <div id="results"></div>
</main>
<script>
const $ = (id) => document.getElementById(id);
let info = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadInfo() {
  try {
    const r = await fetch("/api/info");
    info = await r.json();
  } catch (e) {
    showError("The server did not answer: " + e);
    return;
  }
  const cal = info.calibrated ? "calibrated (T=" + info.temperature + ")"
                              : "uncalibrated (T=1: a softmax over the candidates, not a confidence)";
  $("run").textContent = info.checkpoint + " | " + info.candidates + " candidate phenotypes | probabilities "
      + cal + " | up to " + info.max_images + " images of " + info.max_upload_mb + " MB";
  for (const o of info.organ_systems) {
    const opt = el("option", o.name + " (" + o.candidates + ")");
    opt.value = o.id;
    $("organ").appendChild(opt);
  }
}

function renderProfile(p) {
  // The case's profile (what the phenopacket holds): present terms, most specific first, and the note's exclusions.
  const box = $("profile");
  box.replaceChildren(el("h2", "Case profile (" + p.aggregate + " over " + p.images.length + " images)"));
  const line = (t, excluded) => {
    const li = el("li", (excluded ? "excluded: " : "") + t.hpo_id + " " + t.name);
    li.dataset.hpo = t.hpo_id;
    const how = [];
    if (t.probability !== undefined) how.push((100 * t.probability).toFixed(1) + "%");
    if (t.note_spans) how.push("note: \u201c" + t.note_spans.join("\u201d, \u201c") + "\u201d");
    if (how.length) li.appendChild(el("span", "  (" + how.join("; ") + ")", "path"));
    return li;
  };
  const list = el("ul");
  list.id = "profile-terms";
  for (const t of p.present) list.appendChild(line(t, false));
  for (const t of p.excluded) list.appendChild(line(t, true));
  if (!p.present.length && !p.excluded.length) list.appendChild(el("li", "no term reaches the case threshold"));
  box.appendChild(list);
  box.hidden = false;
}

function render(c, previews) {
  $("results").replaceChildren();
  renderProfile(c.profile);
  for (const [i, im] of c.images.entries()) {
    const box = el("section", undefined, "image");
    if (previews[im.name]) {
      const img = el("img");
      img.src = previews[im.name];
      img.alt = im.name;
      box.appendChild(img);
    }
    const right = el("div");
    right.style.flex = "1";
    right.appendChild(el("h2", im.name + (c.organ_system ? "  (organ system " + c.organ_system + ")" : "")));
    const t = el("table", undefined, "terms");
    t.id = "terms-" + i;
    const head = el("tr");
    for (const h of ["#", "HPO term", "name", "probability", "organ systems", "place in the hierarchy"])
      head.appendChild(el("th", h));
    t.appendChild(el("thead")).appendChild(head);
    const body = t.appendChild(el("tbody"));
    for (const p of im.predictions) {
      const tr = el("tr");
      tr.dataset.hpo = p.hpo_id;
      tr.appendChild(el("td", String(p.rank)));
      tr.appendChild(el("td", p.hpo_id));
      tr.appendChild(el("td", p.name));
      const td = el("td", undefined, "p");
      const bar = el("span", undefined, "bar");
      bar.style.width = Math.round(60 * p.probability) + "px";
      td.appendChild(bar);
      td.appendChild(document.createTextNode((100 * p.probability).toFixed(1) + "%"));
      tr.appendChild(td);
      tr.appendChild(el("td", p.organ_systems.join("; ")));
      tr.appendChild(el("td", p.path.join(" \\u203a "), "path"));
      body.appendChild(tr);
    }
    right.appendChild(t);
    box.appendChild(right);
    $("results").appendChild(box);
  }
  const skipped = c.skipped.map((s) => s.name + ": " + s.error).join("\\n");
  $("skipped").textContent = skipped ? "Not read:\\n" + skipped : "";
  $("skipped").hidden = !skipped;
  $("download").href = c.download;
  $("download").hidden = false;
}

async function submit(ev) {
  if (ev) ev.preventDefault();
  const files = $("files").files;
  if (!files.length) { showError("Choose one or more images first."); return; }
  const previews = {};
  for (const f of files) previews[f.name] = URL.createObjectURL(f);
  showError("");
  $("submit").disabled = true;
  $("status").textContent = "Reading " + files.length + " image(s)...";
  try {
    const r = await fetch("/api/predict", {method: "POST", body: new FormData($("case"))});
    const body = await r.json().catch(() => ({error: "HTTP " + r.status + " " + r.statusText}));
    if (!r.ok) {
      $("results").replaceChildren();
      $("download").hidden = true;
      $("profile").hidden = true;
      $("skipped").hidden = true;
      showError(body.error || ("HTTP " + r.status));
      $("status").textContent = "";
    } else {
      render(body, previews);
      $("status").textContent = body.images.length + " image(s) over " + body.candidates
          + " candidates in " + body.seconds + " s";
    }
  } catch (e) {
    showError("The server did not answer: " + e);
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
}

$("case").addEventListener("submit", submit);
$("organ").addEventListener("change", () => { if ($("files").files.length) submit(); });
loadInfo();
</script>
</body>
</html>
"""
