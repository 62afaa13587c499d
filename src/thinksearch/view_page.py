"""The HTML, CSS and JavaScript of ``thinksearch view`` (see view.py), kept apart from the data code.

The script builds every element with ``createElement`` and fills it with ``textContent``; it never
assigns ``innerHTML`` from data, which is what keeps model text inert.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:10px 16px}header h1{font-size:17px;margin:0}
nav{display:flex;gap:6px;padding:8px 16px;background:#eceff1;position:sticky;top:0;z-index:2;flex-wrap:wrap;align-items:center}
nav button{border:1px solid #90a4ae;background:#fff;padding:4px 10px;border-radius:4px;cursor:pointer}
nav button.on{background:#37474f;color:#fff}
nav select,nav input{padding:3px 6px}
main{padding:8px 16px}section{display:none}section.on{display:block}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;margin:8px 0;padding:8px 10px}
.head{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap;font-size:12px;color:#555}
.q{font-weight:600;margin:4px 0}
.lbl{font-size:11px;text-transform:uppercase;color:#78909c;margin-top:6px}
pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;font:13px/1.4 ui-monospace,monospace}
.think{color:#607d8b}.call{color:#00695c}.res{color:#5d4037}
.badge{font-size:11px;padding:1px 6px;border-radius:8px;background:#e0e0e0}
.bad{background:#ffcdd2;color:#b71c1c}.ok{background:#c8e6c9;color:#1b5e20}
.pair{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:8px}
.pair>div{border-left:3px solid #b0bec5;padding-left:8px}
table{border-collapse:collapse}td{border:1px solid #ddd;padding:3px 8px}
figure img{max-width:100%}details summary{cursor:pointer;color:#546e7a;font-size:12px}
.count{font-size:12px;color:#555;margin-left:8px}
</style></head>
<body>
<header><h1>__TITLE__</h1></header>
<nav id="nav">
 <button data-tab="rows">Training rows</button>
 <button data-tab="eval">Eval outputs</button>
 <button data-tab="figures">Figures</button>
 <span id="rowtools"><select id="rtype"><option value="">all types</option><option>thinking</option><option>search</option></select>
  <input id="rq" type="search" placeholder="filter text"></span>
 <span id="evaltools"><select id="problem"><option value="">all questions</option></select>
  <select id="model"><option value="">any model</option></select></span>
 <span class="count" id="count"></span>
</nav>
<main>
<section id="rows"><div id="rowlist"></div><div id="rowmore"></div></section>
<section id="eval"><div id="evallist"></div><div id="evalmore"></div></section>
<section id="figures"><div id="summary"></div>__FIGURES__</section>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const PAGE = 100;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function block(parent, label, text, cls) {
  if (text === undefined || text === null || text === "") return;
  parent.appendChild(el("div", "lbl", label));
  parent.appendChild(el("pre", cls || "", text));
}
function rowCard(r) {
  const c = el("div", "card row");
  c.dataset.id = r.id;
  const h = el("div", "head");
  h.appendChild(el("span", "badge", r.type || "row"));
  h.appendChild(el("span", "", r.id + " (line " + r.line + ")"));
  if (r.gates) h.appendChild(el("span", "badge ok", "gates: " + r.gates));
  c.appendChild(h);
  for (const t of r.turns) {
    if (t.role === "user") { c.appendChild(el("div", "q", t.text)); continue; }
    if (t.role === "tool") { block(c, "tool result", t.text, "res"); continue; }
    block(c, "thinking", t.thinking, "think");
    for (const call of t.calls || []) block(c, "call", call, "call");
    block(c, t.role === "assistant" ? "answer" : t.role, t.text);
  }
  if (r.results.length) {
    const d = el("details"); d.appendChild(el("summary", "", r.results.length + " search results (meta)"));
    r.results.forEach((x, i) => d.appendChild(el("pre", "res", "[" + (i + 1) + "] " + (x.title || "") + " — " + (x.snippet || "") + " (" + [x.source, x.date, x.url].filter(Boolean).join(", ") + ")")));
    c.appendChild(d);
  }
  const m = el("details"); m.appendChild(el("summary", "", "gates, verification and other meta"));
  m.appendChild(el("pre", "", r.meta)); c.appendChild(m);
  return c;
}
function evalCard(q) {
  const c = el("div", "card evalq");
  c.dataset.id = q.id;
  const h = el("div", "head");
  h.appendChild(el("span", "badge", q.type));
  if (q.category) h.appendChild(el("span", "badge", q.category));
  h.appendChild(el("span", "", q.id));
  c.appendChild(h);
  c.appendChild(el("div", "q", q.question));
  const pair = el("div", "pair"); pair.style.setProperty("--n", D.models.length);
  for (const name of D.models) {
    const o = q.by[name]; const col = el("div", "");
    col.appendChild(el("div", "lbl", name));
    if (!o) { col.appendChild(el("pre", "", "(not evaluated)")); pair.appendChild(col); continue; }
    const b = el("div", "head");
    for (const p of o.problems) b.appendChild(el("span", "badge bad problem", D.problems[p]));
    if (o.correct === true) b.appendChild(el("span", "badge ok", "correct"));
    b.appendChild(el("span", "", (o.tokens ?? "?") + " tokens, " + (o.finish || "?")));
    col.appendChild(b);
    col.appendChild(el("pre", "output", o.output));
    pair.appendChild(col);
  }
  c.appendChild(pair);
  return c;
}
// A list that renders PAGE items at a time, more when its end scrolls into view.
function lazyList(list, more, items, make) {
  list.replaceChildren(); more.replaceChildren();
  let shown = 0;
  const next = () => {
    const frag = document.createDocumentFragment();
    for (const it of items.slice(shown, shown + PAGE)) frag.appendChild(make(it));
    shown = Math.min(items.length, shown + PAGE);
    list.appendChild(frag);
    more.textContent = shown < items.length ? "showing " + shown + " of " + items.length + " (scroll for more)" : "";
  };
  next();
  if (lazyList.obs) lazyList.obs.disconnect();
  lazyList.obs = new IntersectionObserver(es => { if (es.some(e => e.isIntersecting) && shown < items.length) next(); });
  lazyList.obs.observe(more);
}
const S = {tab: "rows", type: "", q: "", problem: "", model: ""};
function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(S)) if (h.has(k)) S[k] = h.get(k);
}
function writeHash() {
  const h = new URLSearchParams();
  for (const [k, v] of Object.entries(S)) if (v) h.set(k, v);
  history.replaceState(null, "", "#" + h.toString());
}
function render() {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.tab === S.tab);
  for (const s of document.querySelectorAll("section")) s.classList.toggle("on", s.id === S.tab);
  document.getElementById("rowtools").style.display = S.tab === "rows" ? "" : "none";
  document.getElementById("evaltools").style.display = S.tab === "eval" ? "" : "none";
  const count = document.getElementById("count");
  if (S.tab === "rows") {
    const q = S.q.toLowerCase();
    const items = D.rows.filter(r => (!S.type || r.type === S.type) &&
      (!q || JSON.stringify(r.turns).toLowerCase().includes(q) || r.id.toLowerCase().includes(q)));
    count.textContent = items.length + " of " + D.rows.length + " rows";
    lazyList(document.getElementById("rowlist"), document.getElementById("rowmore"), items, rowCard);
  } else if (S.tab === "eval") {
    const names = S.model ? [S.model] : D.models;
    const items = D.evals.filter(q => !S.problem || names.some(n => q.by[n] && q.by[n].problems.includes(S.problem)));
    count.textContent = items.length + " of " + D.evals.length + " questions";
    lazyList(document.getElementById("evallist"), document.getElementById("evalmore"), items, evalCard);
  } else count.textContent = "";
  writeHash();
}
function setup() {
  const prob = document.getElementById("problem");
  for (const [k, v] of Object.entries(D.problems)) { const o = el("option", "", v); o.value = k; prob.appendChild(o); }
  const model = document.getElementById("model");
  for (const n of D.models) { const o = el("option", "", n); o.value = n; model.appendChild(o); }
  const t = document.createElement("table");
  for (const [k, v] of D.summary) { const tr = el("tr"); tr.appendChild(el("td", "", k)); tr.appendChild(el("td", "", v)); t.appendChild(tr); }
  const sum = document.getElementById("summary");
  sum.appendChild(el("h3", "", "Run " + D.run)); if (D.note) sum.appendChild(el("p", "", D.note));
  sum.appendChild(t);
  readHash();
  document.getElementById("rtype").value = S.type; document.getElementById("rq").value = S.q;
  prob.value = S.problem; model.value = S.model;
  for (const b of document.querySelectorAll("nav button")) b.onclick = () => { S.tab = b.dataset.tab; render(); };
  document.getElementById("rtype").onchange = e => { S.type = e.target.value; render(); };
  document.getElementById("rq").oninput = e => { S.q = e.target.value; render(); };
  prob.onchange = e => { S.problem = e.target.value; render(); };
  model.onchange = e => { S.model = e.target.value; render(); };
  render();
}
setup();
</script>
</body></html>
"""
