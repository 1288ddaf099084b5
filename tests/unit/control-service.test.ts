import { describe, expect, it } from 'vitest';
import type * as grpc from '@grpc/grpc-js';
import { controlServiceDefinition } from '../../services/runtime/control-service.js';
import { controlProto } from '../../services/runtime/proto.js';

// A role serves Control with protobufjs/light from the build's reflection (control-service.ts);
// the controller calls it through proto-loader (proto.ts). Both must read and write the same bytes
// and objects.

const topology = {
  runId: 'r1',
  model: 'nested-smmuv3',
  dma: 'strict',
  seed: 7,
  endpoints: [
    { id: 1, role: 'guest', index: 0, name: 'guest-0', address: 'unix:///tmp/x/guest-0.sock', pid: 0, host: '' },
    { id: 2, role: 'kvm', index: 0, name: 'kvm', address: 'unix:///tmp/x/kvm.sock', pid: 12, host: 'h' },
  ],
  devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 16 }],
  costsNs: { 'exit.to_user': 1500, 'vmm.vsmmu_cmd': 250.5 },
  vmids: [1, 2, 3],
  deadlineMs: 10000,
  ramDir: '/dev/shm/x',
  floorPeer: 'kvm',
  warmupOps: 5,
  workload: { kind: 'dma-map-benchmark', threads: 4, granulePages: 1, ops: 100, durationSec: 0.5, rate: 0, dwellUs: 0, gapUs: 0, trace: '', timeScale: 1 },
};

const startReply = {
  ops: [{ op: 'unmap', count: 3, failed: 0 }],
  elapsedSec: 1.25,
  modeledElapsedNs: 12345.5,
  guestCommands: 6,
  workloadCounters: { iterations: 3 },
  timeline: [
    { op: 0, thread: 1, startNs: 10, ns: 20, measuredNs: 30000, arrival: false, holdResource: [0, 1], holdAtNs: [1, 2], holdNs: [3, 4], steps: 2, holdSteps: [0, 1, 2, 3], branched: true, warmup: true },
    { op: 1, thread: 0, startNs: 0, ns: 0, measuredNs: 0 },
  ],
  resourceNames: ['vm0.bql', 'psmmu0.cmdq'],
  threadEndNs: [100, 200.5],
  stepNames: ['a', 'b'],
  stepVectors: [1, 0, 2, 0],
  floorUs: { count: 10, mean: 1.5, stddev: 0.1, min: 1, p50: 1.4, p90: 2, p99: 3, p999: 3, max: 4 },
};

const samples: Record<string, [object, object]> = {
  Configure: [topology, { name: 'guest-0' }],
  Start: [{}, startReply],
  Stats: [{}, { name: 'kvm', counters: { exits: 5 }, pid: 3, host: 'h' }],
  Stop: [{}, {}],
};

describe('the Control service a role serves', () => {
  const ours = controlServiceDefinition();
  const loader = controlProto().vmmsim.v1.Control.service as unknown as grpc.ServiceDefinition;

  it('has proto-loader\'s methods, paths and names', () => {
    expect(Object.keys(ours).sort()).toEqual(Object.keys(loader).sort());
    for (const [name, m] of Object.entries(loader)) {
      const o = ours[name] as grpc.MethodDefinition<object, object>;
      expect({ path: o.path, requestStream: o.requestStream, responseStream: o.responseStream, originalName: o.originalName }).toEqual({
        path: m.path, requestStream: m.requestStream, responseStream: m.responseStream, originalName: m.originalName,
      });
    }
  });

  it('writes and reads the same bytes and objects as proto-loader', () => {
    for (const [name, [request, reply]] of Object.entries(samples)) {
      const o = ours[name] as grpc.MethodDefinition<object, object>;
      const m = loader[name] as grpc.MethodDefinition<object, object>;
      const reqBytes = m.requestSerialize(request);
      expect(Buffer.from(o.requestSerialize(request))).toEqual(Buffer.from(reqBytes));
      expect(o.requestDeserialize(reqBytes)).toEqual(m.requestDeserialize(reqBytes));
      const resBytes = m.responseSerialize(reply);
      expect(Buffer.from(o.responseSerialize(reply))).toEqual(Buffer.from(resBytes));
      expect(o.responseDeserialize(resBytes)).toEqual(m.responseDeserialize(resBytes));
    }
  });
});
