/**
 * The report page: one self-contained HTML file (inline CSS, inline SVG drawn at generation time,
 * no script) that opens offline from disk. Its Content-Security-Policy forbids every fetch and every
 * script, so nothing in it can reach the network whatever a results document holds.
 */
import { breakdownFigure, hopFigures, latencyFigures, saturationFigures, scalingFigures, studyFigure, tornadoFigures, transitionsFigure, writeFigure, type Figure } from './charts.js';
import { collect, esc, type Out } from './html.js';
import { verdictWords } from './sensitivity.js';
import type { ReportData, ReportKind } from './data.js';
import { reportTables } from './tables.js';
import { writeMeasuredTables } from './measured-tables.js';
import { isMeasuredNote } from './measured.js';

const CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }
h3 { font-size: 15px; margin: 0 0 4px; } figcaption p { margin: 0 0 6px; color: #555; }
.status { display: inline-block; padding: 1px 8px; border-radius: 3px; font-size: 13px; color: #fff; background: #2a7d2a; }
.status.failed, .status.interrupted, .status.unknown { background: #b3261e; }
.error { border-left: 4px solid #b3261e; background: #fdecea; padding: 8px 12px; margin: 12px 0; }
.notes { border-left: 4px solid #c98a00; background: #fff6e0; padding: 8px 12px; margin: 12px 0; }
.notes ul { margin: 4px 0; padding-left: 20px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; font-family: ui-monospace, monospace; font-size: 13px; }
nav a { margin-right: 12px; }
figure.chart { margin: 16px 0 24px; } figure.chart svg { max-width: 100%; height: auto; }
svg text { fill: #333; } svg .mark:hover { opacity: 0.7; }
.scroll { overflow-x: auto; margin: 4px 0 16px; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ddd; padding: 2px 6px; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; } td.num { text-align: right; font-family: ui-monospace, monospace; }
.missing { color: #777; font-style: italic; }
#section-measured { border-left: 4px solid #888; padding-left: 12px; } .measured-about { color: #444; }
details > summary { cursor: pointer; font-weight: 600; margin: 8px 0; }
`;

const KIND_TITLE: Record<ReportKind, string> = {
  run: 'results',
  compare: 'comparison',
  sweep: 'sweep',
  saturate: 'saturation search',
  'sweep-saturate': 'sweep of saturation searches',
};

/**
 * The page's title and heading: what ran. The command (or the study), the scenario, the workload
 * and the DMA mode: `vmmsim sweep: grace-5psmmu, workload packet-stream, dma strict`; every distinct
 * value when the runs differ (`dma strict/lazy`).
 */
export function pageTitle(data: Pick<ReportData, 'study' | 'kind' | 'scenarioName' | 'workloads' | 'dmaModes'>): string {
  const head = data.study ? `vmmsim study ${data.study.name}: ${data.scenarioName}` : `vmmsim ${KIND_TITLE[data.kind]}: ${data.scenarioName}`;
  const what = [
    ...(data.workloads.length > 0 ? [`workload ${data.workloads.join('/')}`] : []),
    ...(data.dmaModes.length > 0 ? [`dma ${data.dmaModes.join('/')}`] : []),
  ];
  return what.length > 0 ? `${head}, ${what.join(', ')}` : head;
}

/** Figures folded away when there are many, so the page opens on a screenful. */
const FOLD_OVER = 12;

function figures(list: readonly Figure[], empty: string, summary: string, out: Out): void {
  if (list.length === 0) return out(`<p class="missing">${esc(empty)}</p>`);
  const folded = list.length > FOLD_OVER;
  if (folded) out(`<details><summary>${esc(summary)} (${list.length} charts)</summary>`);
  for (const f of list) writeFigure(f, out);
  if (folded) out('</details>');
}

/** A section of the page: its title in the navigation, its body written when its turn comes. */
interface Section {
  id: string;
  title: string;
  body: (out: Out) => void;
}

/**
 * Writes the report of one results document, a complete HTML page, piece by piece to `out`: the
 * page of a large sweep is several times its results.json, so no section's charts outlive their
 * section and no table is ever one string.
 */
export function writeReportHtml(data: ReportData, out: Out): void {
  const title = pageTitle(data);
  out(
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">' +
      `<meta http-equiv="Content-Security-Policy" content="${CSP}">` +
      '<meta name="viewport" content="width=device-width, initial-scale=1">' +
      // An empty icon: without it a browser asks for /favicon.ico.
      '<link rel="icon" href="data:,">' +
      `<title>${esc(title)}</title><style>${CSS}</style></head><body data-kind="${data.kind}">`,
  );
  out(`<header><h1>${esc(title)} <span class="status ${esc(data.status)}" data-status="${esc(data.status)}">${esc(data.status)}</span></h1>`);
  out(`\n<dl class="facts">${data.facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}<dt>runs</dt><dd data-runs="${data.runs.length}">${data.runs.length}</dd></dl></header>`);
  if (data.error) out(`\n<div class="error" data-error-code="${esc(data.error.code)}"><strong>${esc(data.error.code)}</strong>: ${esc(data.error.message)}</div>`);
  if (data.notes.length > 0) out(`\n<div class="notes" id="notes"><strong>Missing or partial</strong><ul>${data.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul></div>`);
  const upstream = runNotes(data);
  if (upstream.length > 0) {
    out(`\n<div class="notes" id="run-notes"><strong>Not upstream</strong><ul>${upstream.map((n) => `<li data-note="${esc(n.code)}"><code>${esc(n.code)}</code> (${esc(n.models.join(', '))}): ${esc(n.text)}</li>`).join('')}</ul></div>`);
  }

  const sections: Section[] = [];
  const study = data.study;
  if (study) {
    // A study's page answers its question first: the figures, then answer.txt as it was written.
    sections.push({
      id: 'section-answer',
      title: 'Answer',
      body: (o) => {
        o(`<p class="question" data-study="${esc(study.name)}">${esc(study.question)}</p>`);
        const f = studyFigure(data);
        if (f) writeFigure(f, o);
        o(`<pre class="answer">${esc(study.answer)}</pre>`);
      },
    });
  }
  sections.push({
    id: 'section-transitions',
    title: 'Transitions',
    body: (o) => {
      const transitions = transitionsFigure(data);
      if (transitions) writeFigure(transitions, o);
      else o('<p class="missing">No operations in these results: no transitions to chart.</p>');
    },
  });
  sections.push({
    id: 'section-breakdown',
    title: 'Where the time goes',
    body: (o) => {
      const breakdown = breakdownFigure(data);
      if (breakdown) writeFigure(breakdown, o);
      else o('<p class="missing">No operation in these results carries a breakdown of its modeled time.</p>');
    },
  });
  sections.push({ id: 'section-latency', title: 'Modeled latency', body: (o) => figures(latencyFigures(data, ['modeled']), 'No operation ran (none has a count above 0): no latency to chart.', 'Latency percentile curves', o) });
  if (data.kind === 'sweep' || data.kind === 'saturate' || data.kind === 'sweep-saturate') {
    const what = data.kind === 'sweep' ? 'Sweep scaling' : 'Search steps';
    sections.push({ id: 'section-scaling', title: what, body: (o) => figures(scalingFigures(data), 'No run carries a point: no curve against a swept key.', what, o) });
  }
  if (data.saturation.length > 0 || data.kind === 'saturate' || data.kind === 'sweep-saturate') {
    sections.push({ id: 'section-saturation', title: 'Saturation', body: (o) => figures(saturationFigures(data), 'No saturation search finished.', 'Saturation charts', o) });
  }
  const sens = data.sensitivity;
  if (sens) {
    sections.push({
      id: 'section-sensitivity',
      title: 'Sensitivity to the cost ranges',
      body: (o) => {
        o(`<p>Each design ran once; its recorded operations were re-priced with every step of profile ${esc(sens.profile)} alone at its range's lo and hi, and in ${esc(String(sens.samples))} Latin-hypercube samples of the ${esc(String(sens.varied))} steps with a range, each through the queueing replay. A comparison is robust when the order of the two at the profile's costs holds in at least 95% of the samples.</p>`);
        o(`<ul class="verdicts">${sens.comparisons.map((c) => `<li data-comparison="${c.index}" data-verdict="${esc(c.verdict)}"><strong>${esc(`${c.b} / ${c.a}`)}</strong> ${esc(c.metric)}: ${esc(verdictWords(c, sens.samples))}</li>`).join('')}</ul>`);
        if (sens.approximate.length > 0) o(`<div class="notes" id="sensitivity-approximate"><strong>Approximate</strong><ul>${sens.approximate.map((r) => `<li data-approximate="${esc(r.code)}"><code>${esc(r.code)}</code> (${esc(r.model)}): ${esc(r.text)}</li>`).join('')}</ul></div>`);
        figures(tornadoFigures(sens), 'No comparison: fewer than two designs ran.', 'Tornado charts', o);
      },
    });
  }
  // The measured clock last of the figures (after the modeled sensitivity), in its own section: never beside a modeled figure.
  sections.push({
    id: 'section-measured',
    title: "Measured: this host's IPC",
    body: (o) => {
      writeMeasuredTables(data.runs, o);
      o('<h3>Operation latency, measured</h3>');
      figures(latencyFigures(data, ['measured']), 'No operation ran (none has a count above 0): no latency to chart.', 'Measured latency percentile curves', o);
      o('<h3>Hop latency, measured</h3>');
      figures(hopFigures(data), 'No hop crossings in these results (no run crossed a link between processes).', 'Hop latency curves', o);
    },
  });
  sections.push({
    id: 'section-numbers',
    title: 'Every number',
    body: (o) => {
      const tables = reportTables(data);
      if (tables.length === 0) return o('<p class="missing">No numbers in these results.</p>');
      for (const t of tables) {
        if (t.folded) {
          o(`<details><summary>${esc(t.title)}</summary>`);
          t.write(o);
          o('</details>');
        } else {
          o(`<h3>${esc(t.title)}</h3>`);
          t.write(o);
        }
      }
    },
  });
  out(`\n<nav>${sections.map((s) => `<a href="#${s.id}">${esc(s.title)}</a>`).join('')}</nav>`);
  for (const s of sections) {
    out(`\n<section id="${s.id}"><h2>${esc(s.title)}</h2>`);
    s.body(out);
    out('</section>');
  }
  out('</body></html>\n');
}

/**
 * The runs' notes about their modeled figures (runs[].notes but the measured clock's, which the
 * measured section shows), each once with the models whose runs carry it.
 */
function runNotes(data: ReportData): { code: string; text: string; models: string[] }[] {
  const by = new Map<string, { code: string; text: string; models: string[] }>();
  for (const r of data.runs) {
    for (const n of r.notes) {
      if (isMeasuredNote(n.code)) continue;
      const key = `${n.code}\0${n.text}`;
      const e = by.get(key) ?? { ...n, models: [] };
      if (!e.models.includes(r.model)) e.models.push(r.model);
      by.set(key, e);
    }
  }
  return [...by.values()];
}

/** The report of one results document, as a complete HTML page in one string. */
export function reportHtml(data: ReportData): string {
  return collect((out) => writeReportHtml(data, out));
}
