import { GUEST_RAM_SIZE, GUEST_TABLE_BASE, HOST_TABLE_BASE, cdIpa, steAddr, vmRamBase } from '../../services/machine/board.js';
import { CostTable, COST_STEPS } from '../../services/cost/steps.js';
import { FrameAllocator, PhysMemory, type Memory } from '../../services/machine/memory.js';
import { PageTable } from '../../services/machine/pagetable.js';
import { STE_CONFIG, encodeCd, encodeSte } from '../../services/formats/smmu/structures.js';
import { PhysicalCmdq } from '../../services/psmmu/cmdq.js';
import { EventQueue } from '../../services/psmmu/events.js';
import { Iotlb } from '../../worker-pool/iotlb.js';
import { Translator } from '../../services/psmmu/translate.js';

/** Guest RAM seen at guest-physical addresses, backed by host memory at the VM's place. */
export class GuestView implements Memory {
  constructor(
    private readonly host: Memory,
    private readonly base: number,
  ) {}
  view(a: number, n: number): Buffer {
    return this.host.view(this.base + a, n);
  }
  read32(a: number): number {
    return this.host.read32(this.base + a);
  }
  write32(a: number, v: number): void {
    this.host.write32(this.base + a, v);
  }
  write(a: number, d: Buffer): void {
    this.host.write(this.base + a, d);
  }
  read(a: number, n: number): Buffer {
    return this.host.read(this.base + a, n);
  }
}

export const VMID = 5;
export const SID = 0x108;
export const ASID = 3;

/** A whole nested setup in one process: host tables, a VM's stage 1 and CD, an SMMU's translator. */
export function nestedFixture(iotlbEntries = 256, costs: Record<string, number> = {}): {
  host: PhysMemory;
  guest: GuestView;
  stage1: PageTable;
  iotlb: Iotlb;
  events: EventQueue;
  translator: Translator;
  cmdq: PhysicalCmdq;
} {
  const host = new PhysMemory();
  const hostFrames = new FrameAllocator(HOST_TABLE_BASE);
  const s2 = new PageTable(host, hostFrames);
  s2.mapBlocks(0, vmRamBase(0), GUEST_RAM_SIZE, 1);
  host.write(steAddr(0, SID), encodeSte({ valid: true, config: STE_CONFIG.NESTED, s1ContextPtr: cdIpa(0), vmid: VMID, s2ttb: s2.root }));
  const guest = new GuestView(host, vmRamBase(0));
  const stage1 = new PageTable(guest, new FrameAllocator(GUEST_TABLE_BASE));
  guest.write(cdIpa(0), encodeCd({ valid: true, asid: ASID, ttb0: stage1.root }));
  const iotlb = Iotlb.create(iotlbEntries);
  const events = new EventQueue();
  const all = Object.fromEntries(Object.keys(COST_STEPS).map((k) => [k, costs[k] ?? 1]));
  const translator = new Translator(0, host, iotlb, events, new CostTable(all));
  const cmdq = new PhysicalCmdq(8, iotlb, translator);
  return { host, guest, stage1, iotlb, events, translator, cmdq };
}
