import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { profileCosts } from '../../services/cost/profile.js';
import type { Batch, Batch__Output } from '../../services/runtime/generated/vmmsim/v1/Batch.js';
import type { Topology } from '../../services/runtime/generated/vmmsim/v1/Topology.js';
import { protos } from '../../services/runtime/proto.js';
import { testProfile } from './tree.js';

/**
 * Clients that talk to a role the way a hostile or broken peer could: a Link stream with any
 * metadata and any Batch, raw bytes in place of a Batch, and the role's resident memory from /proc.
 */
export type LinkStub = grpc.Client & { Open(metadata?: grpc.Metadata): grpc.ClientDuplexStream<Batch, Batch__Output> };

/** A Link client on its own connection (no shared subchannel), with no send limit of its own. */
export function linkStub(address: string): LinkStub {
  const Link = protos().link.vmmsim.v1.Link;
  return new Link(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_send_message_length': -1 }) as unknown as LinkStub;
}

type RawStub = grpc.Client & { Open(metadata?: grpc.Metadata): grpc.ClientDuplexStream<Buffer, Buffer> };

/** A client of the Link method that sends whatever bytes it is given as the message. */
export function rawLinkStub(address: string): RawStub {
  const same = (b: Buffer): Buffer => b;
  const Raw = grpc.makeGenericClientConstructor(
    { Open: { path: '/vmmsim.v1.Link/Open', requestStream: true, responseStream: true, requestSerialize: same, requestDeserialize: same, responseSerialize: same, responseDeserialize: same } },
    'Link',
  );
  return new Raw(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_send_message_length': -1 }) as unknown as RawStub;
}

/** How a stream ended, or 'data' when something came back first (or `ms` passed with neither). */
export function outcome(call: NodeJS.EventEmitter, ms = 10_000): Promise<{ data?: unknown; error?: grpc.ServiceError; ended?: boolean; timeout?: boolean }> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ timeout: true }), ms);
    const done = (r: { data?: unknown; error?: grpc.ServiceError; ended?: boolean }): void => {
      clearTimeout(timer);
      resolve(r);
    };
    call.on('data', (data: unknown) => done({ data }));
    call.on('error', (error: grpc.ServiceError) => done({ error }));
    call.on('end', () => done({ ended: true }));
  });
}

/** `n` empty envelopes as the encoded bytes of one Batch (field 1, length 0 each): 2 bytes apiece. */
export function emptyEnvelopes(n: number): Buffer {
  const b = Buffer.alloc(2 * n);
  for (let i = 0; i < n; i++) b[2 * i] = 0x0a;
  return b;
}

/** Resident memory of a process in MB, from /proc. */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** A valid topology for standalone roles (a VM's guest, VMM and KVM are named, not running). */
export function standaloneTopology(ramDir: string, eps: readonly { name: string; address: string; pid: number }[], model = 'nested-smmuv3'): Topology {
  const role = (name: string): string => name.replace(/-\d+$/, '');
  const index = (name: string): number => Number(/-(\d+)$/.exec(name)?.[1] ?? 0);
  const all = [...eps];
  for (const name of ['guest-0', 'qemu-0', 'kvm', 'vfio', 'psmmu-0']) if (!all.some((e) => e.name === name)) all.push({ name, address: 'unix:///nonexistent.sock', pid: 0 });
  return {
    runId: 'standalone', model, dma: 'strict', seed: 1, costsNs: profileCosts(testProfile), vmids: [1], deadlineMs: 3000, ramDir, vsmmu: 'single', dispatch: 'broadcast', vmidPolicy: 'per-s2-parent',
    endpoints: all.map((e, i) => ({ id: i + 1, role: role(e.name), index: index(e.name), name: e.name, address: e.address, pid: e.pid, host: 'localhost' })),
    devices: [{ vm: 0, psmmu: 0, vsid: 8, psid: 0x100 }],
    workload: { kind: 'dma-map-benchmark', threads: 1, granulePages: 1, ops: 10 },
    device: { dmaRate: 0, ringBuffers: 4, iotlbEntries: 256 },
  };
}
