import { describe, expect, it } from 'vitest';
import { ATC_INV_SIZE_ALL, atcInvRange, encodeCommand } from '../../services/formats/smmu/commands.js';
import { Atc } from '../../services/machine/device-dma.js';
import { executeCommand, HOST_OWNER, NO_CONFIG_CACHE, type TlbInvalidator } from '../../services/machine/smmu-executor.js';
import { CommandScope } from '../../services/formats/smmu/semantics.js';
import { AtcInvalidations } from '../../worker-pool/atc-invalidations.js';

const NO_TLB: TlbInvalidator = {
  invalidateVaPages: () => 0, invalidateAsid: () => 0, invalidateStage1: () => 0, invalidateVmid: () => 0, invalidateIpaPages: () => 0, invalidateAll: () => 0,
};

describe('ATC_INV as arm_smmu_atc_inv_to_cmd builds it', () => {
  it('covers the range with the smallest aligned power-of-two span of pages', () => {
    expect(atcInvRange(8, 0x5000, 1).fields).toMatchObject({ sid: 8, size: 0, addr: 0x5000n, ssv: 0 });
    expect(atcInvRange(8, 0x5000, 2).fields).toMatchObject({ size: 2, addr: 0x4000n });
    expect(atcInvRange(8, 0x4000, 2).fields).toMatchObject({ size: 1, addr: 0x4000n });
    expect(atcInvRange(8, 0, 0).fields).toMatchObject({ size: ATC_INV_SIZE_ALL, addr: 0n });
    expect(atcInvRange(8, 0x5000, 1, 1).fields).toMatchObject({ ssid: 1, ssv: 1 });
  });
});

describe('a device ATC and the log ATC_INVs reach it by', () => {
  it('keeps the most recently used entries and drops a page range', () => {
    const atc = new Atc(2);
    atc.insert(1, { leafDescAddr: 10, outPage: 100 });
    atc.insert(2, { leafDescAddr: 20, outPage: 200 });
    atc.lookup(1);
    atc.insert(3, { leafDescAddr: 30, outPage: 300 });
    expect(atc.lookup(2)).toBeUndefined();
    expect(atc.invalidate(0, 2)).toBe(1);
    expect(atc.size).toBe(1);
  });

  it('an executed ATC_INV is applied by the reader, oldest first, and a reader far behind drops everything', () => {
    const log = AtcInvalidations.create();
    const writer = AtcInvalidations.attach(log.buffer);
    const b = Buffer.alloc(16);
    encodeCommand(atcInvRange(0x20, 0x7000, 1), b, 0);
    executeCommand(b.readInt32LE(0), b.readInt32LE(4), b.readInt32LE(8), b.readInt32LE(12), HOST_OWNER, NO_TLB, NO_CONFIG_CACHE, new CommandScope(), writer);
    const got: number[][] = [];
    expect(log.applyTo((sid, first, pages) => got.push([sid, first, pages]))).toBe(1);
    expect(got).toEqual([[0x20, 7, 1]]);
    expect(log.pending).toBe(false);
    for (let i = 0; i < 70; i++) writer.invalidateAtc(1, i, 1);
    const all: number[][] = [];
    log.applyTo((sid, first, pages) => all.push([sid, first, pages]));
    expect(all).toEqual([[-1, 0, 2 ** 52]]);
  });
});
