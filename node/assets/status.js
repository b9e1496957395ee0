// The node's live view: renders /api/status every second (plot.js draws the plot). Every value
// goes in with textContent.
"use strict";

function counts(map) {
  const parts = Object.entries(map || {}).map(([k, v]) => `${k} ×${v}`);
  return parts.length ? parts.join(", ") : "none";
}

function render(s) {
  const now = s.now_unix_ms;
  setText("federation", s.federation);
  setText("aggregator", s.aggregator);
  setText("updated", `updated ${new Date(now).toLocaleTimeString()}`);
  setText("joined", s.finished ? "finished" : s.joined ? "joined" : "not joined");
  setText("round", String(s.round));
  setText("answered", String(s.answered.length));
  setText("epsilon", s.privacy ? `${s.privacy.spent.toFixed(2)} of ${s.privacy.epsilon}` : "no DP budget");
  setText("sent", bytes(s.sent_bytes));
  setText("received", bytes(s.received_bytes));
  const r = s.last_refusal;
  setText("last-refusal", r
    ? `round ${r.round}: ${r.by === "node" ? "this node declined" : "the aggregator refused"} (${r.reason})${r.detail ? `: ${r.detail}` : ""}, ${ago(r.unix_ms, now)}`
    : "none");
  setText("refused", counts(s.refused));
  setText("declined", counts(s.declined));
  setText("consensus", String(s.consensus));
  plot(document.getElementById("egress-plot"), [
    { name: "bytes sent in all", points: s.answered.map((a) => [a.round, a.sent_bytes]) },
  ], { min: 0, format: bytes });
}

poll(render, 1000);
