// Downloads: PNG of the current plot, CSV of the shown matrix, JSON of the whole response.
// File names are built from the model name and numbers only, never from the user's text.

/** Keep [A-Za-z0-9._-]; anything else becomes '_'. */
export function safeName(text) {
  return String(text).replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 60) || "headmap";
}

export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** One CSV field: quoted, quotes doubled, and a leading = + - @ neutralised (spreadsheet formulas). */
export function csvField(value) {
  let s = String(value);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return `"${s.replace(/"/g, '""')}"`;
}

/** CSV: header row "query \ key", key labels; then one row per query label with its weights. */
export function matrixCsv(matrix, n, labels) {
  const lines = [[csvField("query \\ key"), ...labels.map(csvField)].join(",")];
  for (let q = 0; q < n; q++) {
    const row = [csvField(labels[q])];
    for (let k = 0; k < n; k++) row.push(matrix[q * n + k].toFixed(6));
    lines.push(row.join(","));
  }
  return `${lines.join("\r\n")}\r\n`;
}

/** CSV of rows of values (each field quoted by csvField). */
export function rowsCsv(rows) {
  return `${rows.map((r) => r.map(csvField).join(",")).join("\r\n")}\r\n`;
}

function downloadText(csv, filename) {
  // The BOM makes spreadsheet programs read the file as UTF-8 (CJK and emoji tokens).
  download(new Blob(["\ufeff", csv], { type: "text/csv;charset=utf-8" }), filename);
}

export function downloadCsv(matrix, n, labels, filename) {
  downloadText(matrixCsv(matrix, n, labels), filename);
}

export function downloadRows(rows, filename) {
  downloadText(rowsCsv(rows), filename);
}

export function downloadJson(response, filename) {
  download(new Blob([JSON.stringify(response)], { type: "application/json" }), filename);
}

export function downloadCanvas(canvas, filename) {
  return new Promise((resolve) =>
    canvas.toBlob((blob) => {
      if (blob) download(blob, filename);
      resolve();
    }, "image/png"),
  );
}
