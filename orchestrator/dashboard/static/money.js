// orch's one money format, shared by every page (index.html, burndown.html load it first).
"use strict";

// Money as the CLI shows it (orchestrator/humanize.py money: three significant figures and a unit,
// "$5.35M", "$65.8K", "$2.00"); the browser test compares the two on the same values.
function threeFigures(x) {
  x = Number(x.toPrecision(3));
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  if (x >= 1) return x.toFixed(2);
  let decimals = 2;
  while (x < 10 ** -(decimals - 2) && decimals < 12) decimals += 1;
  return x.toFixed(decimals);
}

function money(usd) {
  if (usd == null) return "-";
  const sign = usd < 0 ? "-" : "";
  let value = Math.abs(usd), unit = "";
  if (value === 0) return "$0.00";
  for (const [name, size] of [["B", 1e9], ["M", 1e6], ["K", 1e3]]) {
    if (Number(value.toPrecision(3)) >= size) { unit = name; value /= size; break; }
  }
  return sign + "$" + threeFigures(value) + unit;
}
