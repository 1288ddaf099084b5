import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CMD_SIZE, SyncCs, cmdSync, encodeCommand, tlbiNhAsid, type SmmuCommand } from '../../services/formats/smmu/commands.js';
import * as Q from '../../services/formats/smmu/queue.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { Cmdqv } from '../../worker-pool/cmdqv.js';
import { controlBytes } from '../../worker-pool/control.js';
import { ConfigInvalidations } from '../../worker-pool/config-invalidations.js';
import { consumerQueue, drain, type ConsumerEnv, type ConsumerQueue } from '../../worker-pool/engine.js';
import { CONFIG_EN, HEADER_BYTES, R_CONFIG, R_CONS, R_PROD, RingProducer, createRing, ringBytes, slotByte } from '../../worker-pool/ring.js';

function encode(cmds: SmmuCommand[]): Buffer {
  const b = Buffer.alloc(cmds.length * CMD_SIZE);
  cmds.forEach((c, i) => encodeCommand(c, b, i * CMD_SIZE));
  return b;
}

/** A ring with its producer and a consumer run synchronously in this thread (no worker). */
function rig(log2: number): { producer: RingProducer; consume: () => number } {
  const cmdqv = new Cmdqv({ vintfs: 2, vcmdqs: 2 });
  cmdqv.assignVintf(1, 7);
  const view = createRing(log2, { queue: 0, vintf: 1, lidx: 0 });
  view.i32[R_CONFIG] = CONFIG_EN;
  const vintfTable = new Int32Array(cmdqv.vintfTable);
  const env: ConsumerEnv = { iotlb: Iotlb.create(64), config: ConfigInvalidations.create(), ctl: new Int32Array(new SharedArrayBuffer(controlBytes(1))) };
  const q: ConsumerQueue = consumerQueue(view.buffer, 0, 1, vintfTable, cmdqv.vintfBase(1), false);
  return { producer: new RingProducer(view), consume: () => drain(q, env) };
}

/** CMD_SYNCs numbered by MSIDATA, so the MSI records show the order they were consumed in. */
function numbered(from: number, n: number): Buffer {
  return encode(Array.from({ length: n }, (_, i) => cmdSync({ cs: SyncCs.IRQ, msidata: from + i, msiaddr: 0x1000n })));
}

describe('VCMDQ ring layout', () => {
  it('puts 2^log2 16-byte slots after the register page', () => {
    expect(ringBytes(1)).toBe(HEADER_BYTES + 32);
    const view = createRing(3, { queue: 5, vintf: 2, lidx: 1 });
    expect(view.buffer.byteLength).toBe(HEADER_BYTES + 8 * 16);
    expect(slotByte(view, 0)).toBe(HEADER_BYTES);
    expect(slotByte(view, 7)).toBe(HEADER_BYTES + 7 * 16);
    expect(slotByte(view, 8)).toBe(HEADER_BYTES); // index 0 with the wrap bit set
    expect(slotByte(view, Q.withConsErr(9, Q.CERROR.ILL))).toBe(HEADER_BYTES + 16); // CONS.ERR is not part of the index
  });
});

describe('RingProducer and consumer arithmetic', () => {
  it('empty: all slots free; full after 2^log2 writes: nothing more fits', () => {
    const { producer, consume } = rig(2);
    expect(producer.space()).toBe(4);
    expect(producer.write(numbered(0, 6), 0, 6)).toBe(4);
    expect(producer.space()).toBe(0);
    expect(producer.write(numbered(4, 1), 0, 1)).toBe(0);
    const prod = Atomics.load(producer.view.i32, R_PROD);
    const cons = Atomics.load(producer.view.i32, R_CONS);
    expect(Q.isFull(prod, cons, 2)).toBe(true);
    expect(Q.index(prod, 2)).toBe(Q.index(cons, 2));
    expect(Q.wrap(prod, 2)).not.toBe(Q.wrap(cons, 2));
    expect(consume()).toBe(4);
    expect(Q.isEmpty(Atomics.load(producer.view.i32, R_PROD), Atomics.load(producer.view.i32, R_CONS), 2)).toBe(true);
    expect(producer.consumedTotal()).toBe(4);
    expect(consume()).toBe(0);
  });

  it('wraps at the end of the ring: a batch crossing the boundary is split and both halves run in order', () => {
    const { producer, consume } = rig(2);
    expect(producer.write(numbered(0, 3), 0, 3)).toBe(3);
    expect(consume()).toBe(3);
    // PROD = CONS = 3: the next three go to slots 3, 0, 1 and PROD's wrap bit toggles.
    expect(producer.write(numbered(3, 3), 0, 3)).toBe(3);
    const v = producer.view;
    expect(Atomics.load(v.i32, R_PROD)).toBe(0b110);
    expect(v.u8[slotByte(v, 3) + 4]).toBe(3); // MSIDATA (w0[63:32]) of the first of the batch
    expect(v.u8[slotByte(v, 4) + 4]).toBe(4);
    expect(v.u8[slotByte(v, 5) + 4]).toBe(5);
    expect(consume()).toBe(3);
    expect(Atomics.load(v.i32, R_CONS)).toBe(0b110);
    expect(producer.takeMsiWrites().writes.map((w) => w.data)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('property: any interleaving of writes and drains consumes every command once, in order', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constant(0)), { minLength: 1, maxLength: 60 }),
        (log2, steps) => {
          const { producer, consume } = rig(log2);
          let next = 0;
          const seen: number[] = [];
          for (const k of steps) {
            if (k === 0) {
              consume();
              seen.push(...producer.takeMsiWrites().writes.map((w) => w.data));
              continue;
            }
            const room = producer.space();
            const wrote = producer.write(numbered(next, k), 0, k);
            expect(wrote).toBe(Math.min(k, room));
            next += wrote;
            expect(producer.consumedTotal() + Q.used(producer.prodReg, producer.cons(), log2)).toBe(producer.total);
          }
          consume();
          seen.push(...producer.takeMsiWrites().writes.map((w) => w.data));
          expect(seen).toEqual(Array.from({ length: next }, (_, i) => i));
          expect(producer.consumedTotal()).toBe(next);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('reports MSI records it could not keep instead of inventing them', () => {
    const { producer, consume } = rig(7);
    producer.write(numbered(0, 100), 0, 100);
    consume();
    const { writes, lost } = producer.takeMsiWrites();
    expect(lost).toBe(36); // the record ring keeps the last 64
    expect(writes.map((w) => w.data)).toEqual(Array.from({ length: 64 }, (_, i) => 36 + i));
    expect(writes[0]?.addr).toBe(0x1000);
  });

  it('a disabled queue is not consumed', () => {
    const { producer, consume } = rig(2);
    producer.view.i32[R_CONFIG] = 0;
    producer.write(encode([tlbiNhAsid({ vmid: 0, asid: 1 })]), 0, 1);
    expect(consume()).toBe(0);
    expect(producer.consumedTotal()).toBe(0);
  });
});
