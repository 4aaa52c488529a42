// The "Corpus" tab (issue 17): upload a file or paste texts (one per line), follow the job's progress
// from the server-sent events, then draw the layers x heads map of a head statistic's corpus mean and
// the head-to-head Jensen-Shannon distances (the same maps as the corpus report).

import { $ } from "./dom.js";
import { t } from "./i18n.js";
import { FONT, TEXT_COLOR, TITLE_COLOR } from "./plotly-theme.js";

const FORMATS = { txt: "txt", text: "txt", jsonl: "jsonl", ndjson: "jsonl", csv: "csv", parquet: "parquet" };

async function errorText(response) {
  const body = await response.json().catch(() => null);
  return body && body.detail ? `${body.error}: ${body.detail}` : `HTTP ${response.status}`;
}

export class CorpusView {
  constructor(root = "") {
    this.root = root;
    this.form = $("corpus-form");
    this.texts = $("corpus-texts");
    this.file = $("corpus-file");
    this.progress = $("corpus-progress");
    this.status = $("corpus-status");
    this.measure = $("corpus-measure");
    this.map = $("corpus-map");
    this.sim = $("corpus-sim");
    this.summary = null;
    this.model = null;
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.start();
    });
    this.measure.addEventListener("change", () => this.draw());
  }

  show(run, state) {
    this.model = state.model || (run && run.request && run.request.model) || null;
  }

  hide() {}

  say(text, error = false) {
    this.status.textContent = text;
    this.status.hidden = !text;
    this.status.classList.toggle("error", error);
  }

  async start() {
    const file = this.file.files && this.file.files[0];
    const model = this.model ? `model=${encodeURIComponent(this.model)}` : "";
    let response;
    this.summary = null;
    this.progress.value = 0;
    this.say(t("corpus.starting"));
    if (file) {
      const ext = file.name.split(".").pop().toLowerCase();
      const format = FORMATS[ext] || "txt";
      response = await fetch(`${this.root}/api/corpus/upload?format=${format}&${model}`, { method: "POST", body: file });
    } else {
      const texts = this.texts.value.split("\n").filter((line) => line.trim());
      if (!texts.length) {
        this.say(t("corpus.empty"), true);
        return;
      }
      const body = { texts };
      if (this.model) body.model = this.model;
      response = await fetch(`${this.root}/api/corpus`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    }
    if (!response.ok) {
      this.say(await errorText(response), true);
      return;
    }
    this.follow(await response.json());
  }

  follow(job) {
    const events = new EventSource(`${this.root}/api/corpus/${job.id}/events`);
    const update = (ev) => {
      const data = JSON.parse(ev.data);
      this.progress.max = data.total || 1;
      this.progress.value = data.done || 0;
      this.say(t("corpus.progress", { done: data.done ?? 0, total: data.total ?? 0 }));
    };
    events.addEventListener("progress", update);
    events.addEventListener("done", async (ev) => {
      events.close();
      update(ev);
      const r = await fetch(`${this.root}/api/corpus/${job.id}`);
      if (r.status !== 200) {
        this.say(await errorText(r), true);
        return;
      }
      this.summary = await r.json();
      this.say(t("corpus.done", { texts: this.summary.texts, tokens: this.summary.tokens.total }));
      this.fillMeasures();
      this.draw();
    });
    events.onerror = () => {
      events.close();
      if (!this.summary) this.say(t("corpus.lost"), true);
    };
  }

  fillMeasures() {
    const names = Object.keys(this.summary.measures).filter((name) => this.summary.measures[name]);
    const chosen = names.includes(this.measure.value) ? this.measure.value : names[0];
    this.measure.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
    this.measure.disabled = false;
  }

  async draw() {
    const s = this.summary;
    if (!s || !window.Plotly) return;
    const m = s.measures[this.measure.value];
    if (!m) return;
    const font = { family: FONT, color: TEXT_COLOR };
    const text = m.mean.map((row, l) => row.map((v, h) => `L${l} H${h}: ${v == null ? "–" : v.toFixed(3)} ± ${m.std[l][h] == null ? "–" : m.std[l][h].toFixed(3)}`));
    await window.Plotly.react(
      this.map,
      [{ type: "heatmap", z: m.mean, text, hoverinfo: "text", colorscale: "Viridis", xgap: 1, ygap: 1 }],
      {
        title: { text: t("corpus.map_title", { measure: this.measure.value }), font: { ...font, color: TITLE_COLOR } },
        xaxis: { title: { text: t("corpus.heads") }, dtick: 1 },
        yaxis: { title: { text: t("corpus.layers") }, dtick: 1, autorange: "reversed" },
        margin: { t: 40, l: 50, r: 10, b: 40 },
        font,
      },
      { displaylogo: false },
    );
    this.sim.hidden = !s.similarity;
    if (s.similarity) {
      const labels = s.similarity.heads;
      await window.Plotly.react(
        this.sim,
        [{ type: "heatmap", z: s.similarity.js_distance, x: labels, y: labels, colorscale: "Viridis" }],
        {
          title: { text: t("corpus.sim_title", { texts: s.similarity.texts }), font: { ...font, color: TITLE_COLOR } },
          yaxis: { autorange: "reversed" },
          margin: { t: 40, l: 60, r: 10, b: 60 },
          font,
        },
        { displaylogo: false },
      );
    }
  }
}
