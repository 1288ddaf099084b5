/**
 * `vmmsim explain`'s view of one operation: the tree of what every process did for it, built from
 * the events the processes recorded (runtime/op-trace.ts), and printed the way ftrace's
 * function_graph tracer prints a call: a line per leaf with its duration, a line per call opening
 * `{` and its closing `}` with the call's own time and its total. Each leaf is a cost step and names
 * the functions it models (cost/steps.ts) with the profile's confidence in its cost; each call names
 * the transition it pays (exit, user, ioctl, hw, direct).
 */
import type { Confidence, CostProfile } from '../cost/profile.js';
import { COST_STEPS, PINNED } from '../cost/steps.js';
import type { ExplainedOp__Output } from '../runtime/generated/vmmsim/v1/ExplainedOp.js';
import { traceTree, type TraceNode } from '../runtime/op-trace.js';
import { isRole, transitionOf, type Role, type TransitionKind } from '../runtime/topology.js';
import { designOf } from '../designs/registry.js';
import { isModelName } from '../designs/names.js';

/** One line of the call graph: the operation, a call to a peer, a hold of a resource, or a step. */
export interface ExplainNode {
  what: 'op' | 'call' | 'hold' | 'step';
  /** The process it ran in (a call: the caller; its children run in the callee). */
  process: string;
  /** op: its name; call: the request's kind; hold: the resource; step: the cost step. */
  name: string;
  /** call: the peer it went to and the transition it paid (none: a call inside the host kernel). */
  peer?: string;
  crossing?: TransitionKind | 'call';
  /** call: the reply's status (0 or -errno, or a PAPR return code). */
  status?: number;
  /** call: what the request does in the caller's words (the register a trapped access touches), when it said. */
  label?: string;
  /** step: how many times it was charged, and its cost each. */
  times?: number;
  eachNs?: number;
  confidence?: Confidence | '?';
  functions?: string[];
  /** Modeled ns of the operation when the line began and ended. */
  atNs: number;
  endNs: number;
  /** end - at: the line's time, with everything below it. */
  totalNs: number;
  /** The steps charged directly on this line (a step: itself), not below calls and holds. */
  selfNs: number;
  /** Not on the critical path (a parallel branch another outlasted): its time is not in the total. */
  offPath: boolean;
  children: ExplainNode[];
}

export interface Explanation {
  model: string;
  op: string;
  dma: string;
  workload: string;
  profile: string;
  pinned: typeof PINNED;
  process: string;
  thread: number;
  /** The operation's modeled time uncontended (its runs[].ops[] sample before queueing). */
  modeledNs: number;
  /** Its modeled latency in this run, after the queueing replay. */
  latencyNs: number;
  /** What it waited for each contended resource in the queueing replay. */
  waits: { resource: string; ns: number }[];
  /** Open loop: what it waited for its vCPU's earlier operations. */
  backlogNs: number;
  /** Of modeledNs, the ns whose cost is an assumption (confidence U). */
  assumedNs: number;
  tree: ExplainNode;
}

/** The role of a process name (kvm, vfio, qemu-0, psmmu-3...). */
function roleOf(process: string): Role | undefined {
  const role = process.replace(/-\d+$/, '');
  return isRole(role) ? role : undefined;
}

function stepInfo(step: string): { functions: string[] } {
  const info = (COST_STEPS as Record<string, { functions: readonly string[] } | undefined>)[step];
  return { functions: info ? [...info.functions] : [] };
}

function nodesOf(events: readonly TraceNode[], process: string, profile: CostProfile | undefined, offPath: boolean, guestIsHost: boolean): ExplainNode[] {
  return events.map((e): ExplainNode => {
    const off = offPath || e.offPath;
    const base = { process, atNs: e.atNs, endNs: e.endNs, totalNs: e.endNs - e.atNs, offPath: off };
    if (e.what === 'charge') {
      const step = profile?.steps[e.name];
      return { what: 'step', name: e.name, times: e.times, eachNs: e.times > 0 ? (e.endNs - e.atNs) / e.times : 0, confidence: step?.confidence ?? '?', ...stepInfo(e.name), ...base, selfNs: base.totalNs, children: [] };
    }
    if (e.what === 'call') {
      const from = roleOf(process);
      const to = roleOf(e.name);
      const crossing = from && to ? (transitionOf(from, to, guestIsHost) ?? 'call') : 'call';
      const children = nodesOf(e.below, e.name, profile, off, guestIsHost);
      return { what: 'call', name: e.kind, peer: e.name, crossing, status: e.status, ...(e.label ? { label: e.label } : {}), ...base, selfNs: 0, children };
    }
    const children = nodesOf(e.below, process, profile, off, guestIsHost);
    return { what: 'hold', name: e.name, ...base, selfNs: ownNs(children), children };
  });
}

/** The steps charged directly among `children` (not below calls or holds), on the critical path. */
function ownNs(children: readonly ExplainNode[]): number {
  return children.reduce((s, c) => s + (c.what === 'step' && !c.offPath ? c.totalNs : 0), 0);
}

/** The on-path steps anywhere below a node (a step: itself). */
export function leafNs(n: ExplainNode, pick: (step: ExplainNode) => boolean = () => true): number {
  if (n.offPath) return 0;
  if (n.what === 'step') return pick(n) ? n.totalNs : 0;
  return n.children.reduce((s, c) => s + leafNs(c, pick), 0);
}

/** The explanation of a traced operation, from what guest `process` recorded. */
export function explanation(x: ExplainedOp__Output, o: { model: string; dma: string; workload: string; profile?: CostProfile; process: string; latencyNs: number; waits: { resource: string; ns: number }[]; backlogNs: number }): Explanation {
  // On bare metal the guest process is the host kernel: its accesses to the pSMMU are `hw`.
  const guestIsHost = isModelName(o.model) && designOf(o.model).traits.hostTables === 'bare-metal';
  const children = nodesOf(traceTree(x.events), o.process, o.profile, false, guestIsHost);
  const tree: ExplainNode = { what: 'op', process: o.process, name: x.op, atNs: 0, endNs: x.ns, totalNs: x.ns, selfNs: ownNs(children), offPath: false, children };
  return {
    model: o.model,
    op: x.op,
    dma: o.dma,
    workload: o.workload,
    profile: o.profile?.name ?? '?',
    pinned: PINNED,
    process: o.process,
    thread: x.thread,
    modeledNs: x.ns,
    latencyNs: o.latencyNs,
    waits: o.waits,
    backlogNs: o.backlogNs,
    assumedNs: leafNs(tree, (s) => s.confidence === 'U'),
    tree,
  };
}

/**
 * Consecutive charges of one step on one line (a loop over pages or entries charges each): the
 * text shows them once with their count; the JSON keeps every charge.
 */
function collapsed(children: readonly ExplainNode[]): (ExplainNode & { charges?: number })[] {
  const out: (ExplainNode & { charges?: number })[] = [];
  for (const c of children) {
    const last = out[out.length - 1];
    if (last && c.what === 'step' && last.what === 'step' && last.name === c.name && last.offPath === c.offPath && last.process === c.process) {
      last.times = (last.times ?? 1) + (c.times ?? 1);
      last.selfNs += c.selfNs;
      last.totalNs += c.totalNs;
      last.endNs = c.endNs;
      last.charges = (last.charges ?? 1) + 1;
    } else out.push({ ...c });
  }
  return out;
}

function us(ns: number): string {
  return (ns / 1000).toFixed(3);
}

const HEAD = ['PROCESS', 'CROSSING', 'SELF us', 'TOTAL us', 'CONF'] as const;

/** One row: process, crossing, self, total, confidence, then the graph text. */
type Row = [string, string, string, string, string, string];

function rows(n: ExplainNode & { charges?: number }, depth: number, out: Row[]): void {
  const pad = '  '.repeat(depth);
  const off = n.offPath ? '  /* parallel branch, off the critical path */' : '';
  if (n.what === 'step') {
    const times = (n.times ?? 1) > 1 ? ` x${n.times}` : '';
    const charges = (n.charges ?? 1) > 1 ? ` (${n.charges} charges in a row)` : '';
    const fns = n.functions && n.functions.length > 0 ? `  /* ${n.functions.join(' | ')} */` : '';
    out.push([n.process, '', us(n.selfNs), us(n.totalNs), n.confidence ?? '?', `${pad}${n.name}()${times};${charges}${fns}${off}`]);
    return;
  }
  const label = n.what === 'call' && n.label ? `  /* ${n.label} */` : '';
  const open = n.what === 'op' ? `${n.name}() {` : n.what === 'call' ? `${n.name} -> ${n.peer} {${label}` : `hold ${n.name} {`;
  out.push([n.process, n.what === 'call' ? (n.crossing ?? '') : '', '', '', '', `${pad}${open}${off}`]);
  for (const c of collapsed(n.children)) rows(c, depth + 1, out);
  const status = n.what === 'call' && n.status !== 0 ? `, status ${n.status}` : '';
  const what = n.what === 'call' ? `${n.name} in ${n.peer}${status}` : n.what === 'hold' ? `released ${n.name}` : n.name;
  // A call's own time is its callee's own steps: the time of the process it crossed into.
  const self = n.what === 'call' ? ownNs(n.children) : n.selfNs;
  out.push([n.what === 'call' ? (n.peer ?? n.process) : n.process, '', us(self), us(n.totalNs), '', `${pad}} /* ${what} */`]);
}

/** The explanation as text: a header, the call graph, and what the total is made of. */
export function renderExplanation(e: Explanation): string {
  const body: Row[] = [];
  rows(e.tree, 0, body);
  const table: string[][] = [[...HEAD, 'FUNCTION GRAPH'], ...body];
  const widths = HEAD.map((_, i) => Math.max(...table.map((r) => (r[i] ?? '').length)));
  const right = [false, false, true, true, false];
  const line = (r: readonly string[]): string =>
    [...HEAD.map((_, i) => (right[i] ? (r[i] ?? '').padStart(widths[i] ?? 0) : (r[i] ?? '').padEnd(widths[i] ?? 0))), `| ${r[5] ?? ''}`].join('  ').trimEnd();
  const waited = e.waits.filter((w) => w.ns > 0);
  const waits = waited.length > 0 ? waited.map((w) => `${w.resource} ${us(w.ns)} us`).join(', ') : 'nothing';
  const pct = e.modeledNs > 0 ? Math.round((e.assumedNs / e.modeledNs) * 100) : 0;
  return [
    `vmmsim explain: ${e.model}, one ${e.op} (${e.dma}, ${e.workload}) on ${e.process} thread ${e.thread}, profile ${e.profile}`,
    `Modeled time in us. A line per cost step charged, with the functions it models in Linux ${e.pinned.linux} and QEMU ${e.pinned.qemu};`,
    'a call opens `{` with the transition it pays (exit: guest to KVM, user: KVM to the VMM, ioctl: VMM to the host kernel,',
    'hw: host kernel to the SMMU, direct: guest to the hardware, call: within the host kernel) and closes `}` with the time',
    'the process it entered charged itself (SELF) and everything below it (TOTAL). CONF: C read in the source, S partly known,',
    'U an assumption.',
    '',
    ...table.map(line),
    '',
    `total ${us(e.modeledNs)} us: the operation's modeled time uncontended; ${us(e.assumedNs)} us of it (${pct}%) rests on assumed costs (U).`,
    `queueing in this run: waited for ${waits}${e.backlogNs > 0 ? `, and ${us(e.backlogNs)} us for its vCPU` : ''}; latency after queueing ${us(e.latencyNs)} us.`,
  ].join('\n');
}
