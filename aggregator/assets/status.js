// The aggregator's live view: renders /api/status every second (plot.js draws the plots). Every
// value goes in with textContent: a roster name cannot become markup.
"use strict";

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function counts(map) {
  const parts = Object.entries(map || {}).map(([k, v]) => `${k} ×${v}`);
  return parts.length ? parts.join(", ") : "–";
}

function part(p) {
  if (!p) return ["–", ""];
  switch (p.state) {
    case "declined": return [`declined (${p.reason})`, "declined"];
    case "refused": return [`refused (${p.reason})`, "refused"];
    default: return [p.state, p.state];
  }
}

function render(s) {
  const now = s.now_unix_ms;
  setText("federation", s.federation);
  setText("updated", `updated ${new Date(now).toLocaleTimeString()}`);
  setText("round", `${s.round} of ${s.rounds}`);
  setText("phase", s.phase);
  if (s.phase === "collecting" && s.deadline_unix_ms) {
    const left = Math.round((s.deadline_unix_ms - now) / 1000);
    setText("deadline", left >= 0 ? `in ${left} s` : `passed ${-left} s ago`);
  } else {
    setText("deadline", "–");
  }
  const tally = { answered: 0, declined: 0, late: 0 };
  for (const m of s.roster) if (m.round && m.round.state in tally) tally[m.round.state]++;
  setText("tally", `${tally.answered} / ${tally.declined} / ${tally.late}`);
  setText("joined", `${s.roster.filter((m) => m.joined).length} of ${s.roster.length}`);
  const last = s.history.length ? s.history[s.history.length - 1] : null;
  setText("accuracy", last && last.accuracy !== null ? `${(last.accuracy * 100).toFixed(1)} %` : s.validation ? "–" : "no holdout");

  const roster = document.getElementById("roster");
  roster.replaceChildren();
  for (const m of s.roster) {
    const tr = document.createElement("tr");
    cell(tr, m.name);
    cell(tr, m.peer);
    cell(tr, m.withdrawn ? `withdrawn (${m.withdrawn})` : m.joined ? "yes" : "no");
    const [text, cls] = part(m.round);
    cell(tr, text, cls);
    cell(tr, ago(m.last_contact_unix_ms, now));
    cell(tr, String(m.answers));
    cell(tr, counts(m.declined));
    cell(tr, counts(m.refused));
    roster.appendChild(tr);
  }

  const history = document.getElementById("history");
  history.replaceChildren();
  for (const h of s.history.slice().reverse()) {
    const tr = document.createElement("tr");
    cell(tr, String(h.round));
    cell(tr, String(h.participants));
    cell(tr, h.accuracy === null ? "–" : `${(h.accuracy * 100).toFixed(1)} %`);
    cell(tr, `${(h.agreement * 100).toFixed(1)} %`);
    cell(tr, bytes(h.bytes_in));
    cell(tr, bytes(h.bytes_out));
    cell(tr, h.seconds.toFixed(1));
    history.appendChild(tr);
  }

  const scores = [];
  if (s.validation) {
    scores.push({ name: "accuracy", points: s.history.filter((h) => h.accuracy !== null).map((h) => [h.round, h.accuracy]) });
  }
  scores.push({ name: "agreement", points: s.history.map((h) => [h.round, h.agreement]) });
  plot(document.getElementById("accuracy-plot"), scores, {
    min: 0, max: 1, xMax: s.rounds, format: (v) => `${Math.round(v * 100)} %`,
  });
  plot(document.getElementById("bytes-plot"), [
    { name: "bytes in", points: s.history.map((h) => [h.round, h.bytes_in]) },
    { name: "bytes out", points: s.history.map((h) => [h.round, h.bytes_out]) },
  ], { min: 0, xMax: s.rounds, format: bytes });
}

poll(render, 1000);
