// The analysts' page: sends the article to POST /v1/score (the same API as every client) and
// draws the answer. No framework, no other origin: this file is compiled into the server.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "stance.apiKey";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "href" || k === "id" || k === "tabindex") e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// Signed, two decimals, a true minus sign; the sign of the rounded value (no "−0.00").
const fmt = (x) => {
  const r = Math.round(x * 100) / 100;
  return (r >= 0 ? "+" : "−") + Math.abs(r).toFixed(2);
};
const pct = (x) => Math.round(x * 100) + "%";

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

/// The article to send: a JSONL record (its first non-blank line) or plain text.
function article() {
  const raw = $("article").value;
  const first = raw.split("\n").find((l) => l.trim() !== "") || "";
  let a;
  if (first.trim().startsWith("{")) {
    try {
      a = JSON.parse(first);
    } catch (e) {
      throw new Error("the input starts with { but its first line is not a JSON record: " + e.message);
    }
    if (typeof a !== "object" || a === null || typeof a.text !== "string") {
      throw new Error("a JSONL record needs a \"text\" string");
    }
  } else {
    a = { id: "", text: raw };
  }
  const actors = parseActors($("actors").value);
  if (actors.length) a.actors = actors;
  return a;
}

/// "Name: alias, alias" lines; the name itself is matched too.
function parseActors(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
    const [name, rest = ""] = line.split(/:(.*)/s);
    const aliases = [name.trim(), ...rest.split(",").map((s) => s.trim()).filter(Boolean)];
    return { name: name.trim(), aliases: [...new Set(aliases)] };
  });
}

async function call(method, path, body) {
  const r = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) });
  const v = await r.json().catch(() => ({ code: "internal", message: "the answer is not JSON (HTTP " + r.status + ")" }));
  if (!r.ok) {
    if (r.status === 401) $("key-box").open = true;
    throw new Error(v.message + " (HTTP " + r.status + ", " + v.code + ")");
  }
  return v;
}

async function score(ev) {
  ev.preventDefault();
  const error = $("error");
  error.hidden = true;
  let a;
  try {
    a = article();
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(KEY_STORE, $("key").value);
  $("score").disabled = true;
  $("status").textContent = "Scoring…";
  const started = performance.now();
  try {
    const result = await call("POST", "/v1/score", a);
    render(result, a);
    $("status").textContent = "Scored " + result.sentences.length + " sentences in " + Math.round(performance.now() - started) + " ms.";
  } catch (e) {
    error.textContent = e.message;
    error.hidden = false;
    $("status").textContent = "";
  } finally {
    $("score").disabled = false;
  }
}

function tip(lines) {
  return el("span", { class: "tip", role: "tooltip" }, ...lines.flatMap((l, i) => (i ? [el("br"), l] : [l])));
}

function probs(p) {
  return "negative " + pct(p.negative) + " · neutral " + pct(p.neutral) + " · positive " + pct(p.positive);
}

/// One sentence with its mentions highlighted. Offsets are Unicode scalar (char_*) offsets,
/// so the text is cut as code points, not UTF-16 units.
function sentenceBody(s) {
  const chars = Array.from(s.text);
  // Each span once; a span naming two actors lists both and takes the first one's colour.
  const spans = new Map();
  for (const sa of s.actors) {
    for (const m of sa.mentions) {
      const k = m.char_start + ":" + m.char_end;
      if (!spans.has(k)) spans.set(k, { start: m.char_start, end: m.char_end, actors: [] });
      spans.get(k).actors.push(sa);
    }
  }
  const sorted = [...spans.values()].sort((x, y) => x.start - y.start || y.end - x.end);
  const body = el("span", { class: "body" });
  let at = s.char_start;
  for (const sp of sorted) {
    if (sp.start < at) continue; // inside an earlier mention
    body.append(chars.slice(at - s.char_start, sp.start - s.char_start).join(""));
    const lead = sp.actors[0];
    const words = chars.slice(sp.start - s.char_start, sp.end - s.char_start).join("");
    const label = sp.actors.map((x) => x.actor + ": " + x.label + ", " + probs(x)).join("; ");
    const mark = el("mark", {
      class: "mention " + lead.label, tabindex: "0", "aria-label": words + " — " + label,
      "data-actor": lead.actor, "data-label": lead.label, "data-start": String(sp.start), "data-end": String(sp.end),
    }, words, tip(sp.actors.map((x) => x.actor + ": " + x.label + " (" + fmt(x.score) + ") — " + probs(x))));
    mark.style.setProperty("--a", (0.15 + 0.6 * confidence(lead)).toFixed(2));
    body.append(mark);
    at = sp.end;
  }
  body.append(chars.slice(at - s.char_start).join(""));
  return body;
}

function confidence(p) {
  return Math.max(p.negative, p.neutral, p.positive);
}

function render(result, sent) {
  const text = $("text");
  text.replaceChildren();
  for (const s of result.sentences) {
    const chip = el("span", { class: "chip " + s.sentiment.label }, s.sentiment.label + " " + fmt(s.sentiment.score));
    chip.style.setProperty("--a", (0.35 + 0.65 * confidence(s.sentiment)).toFixed(2));
    const side = el("span", { class: "sentiment " + s.sentiment.label, title: "sentence sentiment: " + probs(s.sentiment), "data-label": s.sentiment.label }, chip);
    text.append(el("li", { class: "sentence " + s.kind, id: "s-" + s.index, tabindex: "-1", "data-index": String(s.index) }, sentenceBody(s), side));
  }
  const cards = $("cards");
  cards.replaceChildren();
  if (!result.actors.length) cards.append(el("p", { class: "hint" }, "No actor is mentioned (sentiment only)."));
  for (const a of result.actors) {
    const n = a.negative + a.neutral + a.positive || 1;
    const bar = el("div", { class: "bar", role: "img", "aria-label": a.negative + " negative, " + a.neutral + " neutral, " + a.positive + " positive sentences" });
    for (const l of ["negative", "neutral", "positive"]) {
      const seg = el("span", { class: l });
      seg.style.width = (100 * a[l] / n) + "%";
      bar.append(seg);
    }
    const mentioning = result.sentences.filter((s) => s.actors.some((x) => x.actor === a.actor));
    const links = mentioning.map((s) => {
      const x = s.actors.find((y) => y.actor === a.actor);
      const link = el("a", { href: "#s-" + s.index, class: x.label, title: x.label + " " + fmt(x.score) }, String(s.index + 1));
      link.addEventListener("click", jump(s.index));
      return link;
    });
    const ev = (what, i) => {
      const link = el("a", { href: "#s-" + i, "data-evidence": what }, what + " (sentence " + (i + 1) + ")");
      link.addEventListener("click", jump(i));
      return link;
    };
    cards.append(el("article", { class: "card " + a.label, "data-actor": a.actor, "aria-label": a.actor + ": " + a.label + " " + fmt(a.score) },
      el("h3", {}, a.actor, el("span", { class: "score", "data-score": String(a.score) }, fmt(a.score) + " " + a.label)),
      bar,
      el("p", { class: "counts", "data-counts": a.negative + "/" + a.neutral + "/" + a.positive },
        a.negative + " negative · " + a.neutral + " neutral · " + a.positive + " positive; " + a.mentions + " mentions in " + a.sentences + " sentences"),
      el("p", { class: "evidence" }, ev("most negative", a.evidence.most_negative), ev("most positive", a.evidence.most_positive)),
      el("p", { class: "evidence" }, "Sentences: ", ...links)));
  }
  const title = sent.meta && sent.meta.title ? "“" + sent.meta.title + "”: " : (result.id ? result.id + ": " : "");
  $("overall").textContent = title + "overall sentiment " + result.sentiment.label + " (" + fmt(result.sentiment.score) + "), " +
    result.actors.length + " actors, " + result.sentences.length + " sentences; model " + result.model.name + " " + result.model.version + ".";
  $("results").hidden = false;
}

/// A link to a sentence moves the focus there (and so the reader's place), without a reload.
function jump(i) {
  return (ev) => {
    ev.preventDefault();
    const s = $("s-" + i);
    history.replaceState(null, "", "#s-" + i);
    s.focus();
    s.scrollIntoView({ block: "center" });
    s.classList.add("flash");
    setTimeout(() => s.classList.remove("flash"), 1500);
  };
}

function drop(ev) {
  ev.preventDefault();
  $("article").classList.remove("dropping");
  const f = ev.dataTransfer.files[0];
  if (f) f.text().then((t) => { $("article").value = t; });
  else $("article").value = ev.dataTransfer.getData("text");
}

document.addEventListener("DOMContentLoaded", () => {
  $("key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("form").addEventListener("submit", score);
  $("form").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("form").requestSubmit();
  });
  const area = $("article");
  area.addEventListener("dragover", (ev) => { ev.preventDefault(); area.classList.add("dropping"); });
  area.addEventListener("dragleave", () => area.classList.remove("dropping"));
  area.addEventListener("drop", drop);
  fetch("/v1/info", { headers: headers() }).then((r) => r.ok ? r.json() : null).then((i) => {
    if (i) $("model").textContent = "Model " + i.name + " " + i.version + " (" + i.precision + ")";
  }).catch(() => {});
});
