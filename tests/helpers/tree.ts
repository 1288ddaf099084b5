import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { loadProfile, profileCosts } from '../../services/cost/profile.js';
import type { Topology } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { createLogger } from '../../services/runtime/logger.js';
import type { ModelName, Scenario } from '../../services/scenario/schema.js';
import { createRunFolder } from '../../services/machine/run-folder.js';
import { INSECURE, withToken, type Security } from '../../services/runtime/transport/credentials.js';
import { Control } from '../../services/controller/control-client.js';
import { ProcessTree } from '../../services/controller/launcher.js';
import { Session, devices, processSpecs } from '../../services/controller/session.js';
import { waitForNoProcesses } from './processes.js';

export const testLog = createLogger({ role: 'test' }, 'warn');
export const testProfile = loadProfile('arm64-kunpeng920');

export interface TreeFixture {
  tree: ProcessTree;
  ramDir: string;
  marker: string;
  /** What a test that plays a process itself (a guest, the controller) proves its name with: the tree's token. */
  security: Security;
}

/**
 * Starts the scenario's real process tree before the file's tests and stops it after them,
 * checking with the OS that no process is left. Processes carry a fresh marker (see processes.ts).
 * `startTimeoutMs` bounds each process's start (the hooks get twice that, at least 60 s): a big
 * tree on a busy 2-core machine needs more than the default.
 */
export function useProcessTree(scenario: Scenario, opts: { startTimeoutMs?: number } = {}): TreeFixture {
  const startTimeoutMs = opts.startTimeoutMs ?? 20_000;
  const hookTimeoutMs = Math.max(60_000, 2 * startTimeoutMs);
  const fx = { marker: randomUUID() } as TreeFixture;
  let socketDir = '';
  beforeAll(async () => {
    process.env['VMMSIM_TEST_MARKER'] = fx.marker;
    socketDir = mkdtempSync(join(tmpdir(), 'vmmsim-it-'));
    fx.ramDir = createRunFolder(tmpdir(), 'vmmsim-it-ram-');
    fx.tree = new ProcessTree({ socketDir, transport: 'unix', logLevel: 'warn', startTimeoutMs, log: testLog });
    fx.security = withToken(INSECURE, fx.tree.token);
    await fx.tree.start(processSpecs(scenario));
  }, hookTimeoutMs);
  afterAll(async () => {
    await fx.tree?.stop();
    rmSync(socketDir, { recursive: true, force: true });
    rmSync(fx.ramDir, { recursive: true, force: true });
    expect(await waitForNoProcesses(fx.marker, 5000)).toEqual([]);
    delete process.env['VMMSIM_TEST_MARKER'];
  }, hookTimeoutMs);
  return fx;
}

/** Runs `fn` with a controller session over the fixture's processes, closing it afterwards. */
export async function withSession(fx: TreeFixture, fn: (session: Session) => Promise<void>): Promise<void> {
  const session = new Session(fx.tree, testLog, fx.ramDir);
  try {
    await fn(session);
  } finally {
    session.close();
  }
}

/** The endpoint id the test takes when it plays guest-0 itself. */
export const HAND_GUEST_ID = 100;

/**
 * Configures every role but the guest for `model`, with the test process standing in as guest-0,
 * so a test can drive the guest side of the links by hand. Returns the endpoints by name.
 */
export async function configureWithoutGuest(fx: TreeFixture, scenario: Scenario, model: ModelName): Promise<Map<string, { id: number; address: string }>> {
  const host = 'localhost';
  const eps = fx.tree.processes.map((p, i) => ({ id: i + 1, role: p.role, index: p.index, name: p.name, address: p.address, pid: p.pid, host }));
  const endpoints = [...eps.filter((e) => e.role !== 'guest'), { id: HAND_GUEST_ID, role: 'guest', index: 0, name: 'guest-0', address: 'unix:///nonexistent', pid: process.pid, host }];
  const topology: Topology = {
    runId: 'by-hand', model, dma: scenario.dma, seed: scenario.seed, endpoints, devices: devices(scenario), costsNs: profileCosts(testProfile),
    workload: { ...scenario.workload }, vmids: Array.from({ length: scenario.topology.vms }, (_, v) => v + 1), deadlineMs: 5000, vsmmu: scenario.topology.vsmmu, ramDir: fx.ramDir,
    vcmdqsPerVsmmu: scenario.topology.vcmdqsPerVsmmu, vmm: { hwptInvalidate: scenario.vmm.hwptInvalidate }, dispatch: scenario.topology.dispatch, vmidPolicy: scenario.topology.vmid,
  };
  for (const role of ['psmmu', 'vfio', 'qemu', 'kvm']) {
    for (const e of eps.filter((x) => x.role === role)) {
      const c = new Control(e.name, e.address, fx.security);
      await c.configure(topology);
      c.close();
    }
  }
  return new Map(endpoints.map((e) => [e.name, { id: e.id, address: e.address }]));
}
